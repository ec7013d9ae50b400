"""API.md § Presence."""

from contract import is_canonical_uuid, is_timestamp, unique


def presence_channel(server, **config):
    channel = unique("presence")
    server.channel_config({channel: {"notify_presence": True, **config}})
    return channel


def presence(user, channel, action, state, users=(), catchup=False):
    """The exact presence envelope, minus the server-made uuid and timestamp."""
    return {
        "type": "presence",
        "user": user,
        "channel": channel,
        "catchup": catchup,
        "message": {"action": action},
        "state": state,
        "users": list(users),
    }


def without_stamp(envelope):
    assert is_canonical_uuid(envelope["uuid"])
    assert is_timestamp(envelope["timestamp"])
    stripped = {key: value for key, value in envelope.items() if key not in ("uuid", "timestamp")}
    if isinstance(stripped.get("users"), list):
        stripped["users"] = sorted(stripped["users"], key=lambda entry: entry["user"])
    return stripped


def presences(envelopes):
    return [without_stamp(e) for e in envelopes if e["type"] == "presence"]


def test_presence_joined_sent_to_members_on_connect(server, join):
    channel = presence_channel(server)
    _, observer = join(server, unique("observer"), [channel])
    joiner = unique("joiner")
    server.connect(joiner, [channel], user_state={"pub": 1, "priv": 2}, state_public_keys=["pub"])
    assert without_stamp(observer.next()) == presence(joiner, channel, "joined", {"pub": 1})


def test_presence_joined_sent_to_members_on_subscribe(server, join):
    channel = presence_channel(server)
    _, observer = join(server, unique("observer"), [channel])
    joiner = unique("joiner")
    conn_id = server.connect(joiner)["conn_id"]
    server.subscribe(conn_id, [channel])
    assert without_stamp(observer.next()) == presence(joiner, channel, "joined", {})


def test_presence_not_sent_to_joiner(server, join):
    channel = presence_channel(server)
    join(server, unique("observer"), [channel])
    reply, joiner = join(server, unique("joiner"))
    server.subscribe(reply["conn_id"], [channel])
    assert joiner.until_uuid(server.sentinel(channel)) == []


def test_presence_further_connection_of_present_user_is_silent(server, join):
    channel = presence_channel(server)
    _, observer = join(server, unique("observer"), [channel])
    joiner = unique("joiner")
    server.connect(joiner, [channel])
    server.connect(joiner, [channel])
    conn_id = server.connect(joiner)["conn_id"]
    server.subscribe(conn_id, [channel])
    got = presences(observer.until_uuid(server.sentinel(channel)))
    assert got == [presence(joiner, channel, "joined", {})]


def test_presence_parted_on_unsubscribe(server, join):
    channel = presence_channel(server)
    _, observer = join(server, unique("observer"), [channel])
    leaver = unique("leaver")
    conn_id = server.connect(leaver, [channel], user_state={"pub": 1}, state_public_keys=["pub"])["conn_id"]
    server.unsubscribe(conn_id, [channel])
    got = presences(observer.until_uuid(server.sentinel(channel)))
    assert got == [
        presence(leaver, channel, "joined", {"pub": 1}),
        presence(leaver, channel, "parted", None),
    ]


def test_presence_parted_only_when_last_connection_leaves(server, join):
    channel = presence_channel(server)
    _, observer = join(server, unique("observer"), [channel])
    leaver = unique("leaver")
    first = server.connect(leaver, [channel])["conn_id"]
    second = server.connect(leaver, [channel])["conn_id"]
    server.unsubscribe(first, [channel])
    got = presences(observer.until_uuid(server.sentinel(channel)))
    assert got == [presence(leaver, channel, "joined", {})]
    server.unsubscribe(second, [channel])
    got = presences(observer.until_uuid(server.sentinel(channel)))
    assert got == [presence(leaver, channel, "parted", None)]


def test_presence_parted_on_disconnect(server, join):
    channel = presence_channel(server)
    _, observer = join(server, unique("observer"), [channel])
    leaver = unique("leaver")
    conn_id = server.connect(leaver, [channel])["conn_id"]
    assert without_stamp(observer.next())["message"] == {"action": "joined"}
    assert server.get("/disconnect", params={"conn_id": conn_id}, sign=False).json() is True
    assert without_stamp(observer.next()) == presence(leaver, channel, "parted", None)


def test_presence_parted_on_websocket_close(server, join):
    channel = presence_channel(server)
    _, observer = join(server, unique("observer"), [channel])
    leaver = unique("leaver")
    _, leaving = join(server, leaver, [channel])
    assert without_stamp(observer.next())["message"] == {"action": "joined"}
    leaving.close()
    assert without_stamp(observer.next(timeout=4)) == presence(leaver, channel, "parted", None)


def test_presence_not_sent_without_notify_presence(server, join):
    channel = unique("quiet")
    server.channel_config({channel: {}})
    _, observer = join(server, unique("observer"), [channel])
    conn_id = server.connect(unique("joiner"), [channel])["conn_id"]
    server.unsubscribe(conn_id, [channel])
    assert observer.until_uuid(server.sentinel(channel)) == []


def test_presence_carries_user_lists_when_broadcast_presence_with_user_lists(server, join):
    channel = presence_channel(server, broadcast_presence_with_user_lists=True)
    observer_name, joiner = unique("observer"), unique("joiner")
    _, observer = join(server, observer_name, [channel], user_state={"o": 1, "hidden": 0}, state_public_keys=["o"])
    conn_id = server.connect(joiner, [channel], user_state={"j": 2}, state_public_keys=["j"])["conn_id"]
    joined_users = sorted(
        [{"user": observer_name, "state": {"o": 1}}, {"user": joiner, "state": {"j": 2}}],
        key=lambda entry: entry["user"],
    )
    assert without_stamp(observer.next()) == presence(joiner, channel, "joined", {"j": 2}, joined_users)
    server.unsubscribe(conn_id, [channel])
    parted_users = [{"user": observer_name, "state": {"o": 1}}]
    assert without_stamp(observer.next()) == presence(joiner, channel, "parted", None, parted_users)


def test_presence_not_stored_in_history(server, join):
    channel = presence_channel(server, store_history=True)
    _, observer = join(server, unique("observer"), [channel])
    server.connect(unique("joiner"), [channel])
    assert observer.next()["type"] == "presence"
    assert server.channel_info(channel)["history"] == []


def test_presence_kept_for_catchup(server, open_ws, witness):
    channel = presence_channel(server)
    reply = server.connect(unique("late"), [channel])
    seen = witness(server, reply)
    joiner = unique("joiner")
    server.connect(joiner, [channel])
    seen.until(lambda envelope: envelope["type"] == "presence")
    client = open_ws(reply)
    got = presences(client.until_uuid(server.sentinel(channel)))
    assert got == [presence(joiner, channel, "joined", {}, catchup=True)]

"""API.md § POST /message."""

import uuid

from contract import delivered, is_canonical_uuid, is_timestamp, unique
from harness import received_before_sentinel

NORMALISED_KEYS = {
    "pm_users", "exclude_users", "channel", "no_history", "uuid", "timestamp", "user", "message", "edited",
}  # fmt: skip


def test_message_reply_is_normalised_items(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    reply = server.message({"user": "alice", "channel": channel, "message": {"text": "hi"}})
    assert len(reply) == 1
    (item,) = reply
    assert set(item) == NORMALISED_KEYS
    assert item["pm_users"] == [] and item["exclude_users"] == []
    assert item["channel"] == channel
    assert item["no_history"] is False
    assert is_canonical_uuid(item["uuid"])
    assert is_timestamp(item["timestamp"])
    assert item["user"] == "alice"
    assert item["message"] == {"text": "hi"}
    assert item["edited"] is None


def test_message_direct_item_has_null_channel(server):
    username = unique("u")
    server.connect(username)
    (item,) = server.message({"user": "backend", "pm_users": [username], "message": {"x": 1}})
    assert item["channel"] is None
    assert item["pm_users"] == [username]


def test_message_items_without_channel_or_pm_users_are_dropped(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    reply = server.message(
        {"user": "a", "message": {"n": 1}},
        {"user": "b", "channel": channel, "message": {"n": 2}},
        {"user": "c", "pm_users": [], "message": {"n": 3}},
    )
    assert [item["user"] for item in reply] == ["b"]


def test_message_keeps_client_uuid_and_timestamp(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    message_uuid, timestamp = str(uuid.uuid4()), "2021-03-04T05:06:07.891011"
    (item,) = server.message({"user": "a", "channel": channel, "uuid": message_uuid, "timestamp": timestamp})
    assert item["uuid"] == message_uuid
    assert item["timestamp"] == timestamp
    envelope = client.next()
    assert envelope["uuid"] == message_uuid
    assert envelope["timestamp"] == timestamp


def test_message_uuid_is_made_canonical(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    message_uuid = uuid.uuid4()
    (upper,) = server.message({"user": "a", "channel": channel, "uuid": str(message_uuid).upper()})
    assert upper["uuid"] == str(message_uuid)
    (compact,) = server.message({"user": "a", "channel": channel, "uuid": message_uuid.hex})
    assert compact["uuid"] == str(message_uuid)


def test_message_timestamp_round_trips_as_channelstream_writes_it(server, join):
    """Channelstream 0.7.1 answers (and keeps in history) a client-given time re-serialised by
    isoformat(): no fraction when it is zero, the zone kept; it delivers UTC as "Z"."""
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True, "history_size": 100}})
    _, client = join(server, unique("u"), [channel])
    cases = {   # sent: (answered and kept, delivered)
        "2021-03-04T05:06:07": ("2021-03-04T05:06:07", "2021-03-04T05:06:07"),
        "2021-03-04T05:06:07.000000": ("2021-03-04T05:06:07", "2021-03-04T05:06:07"),
        "2021-03-04T05:06:07.5": ("2021-03-04T05:06:07.500000", "2021-03-04T05:06:07.500000"),
        "2021-03-04T05:06:07.123456": ("2021-03-04T05:06:07.123456",
                                       "2021-03-04T05:06:07.123456"),
        "2021-03-04 05:06:07": ("2021-03-04T05:06:07", "2021-03-04T05:06:07"),
        "2021-03-04T05:06:07Z": ("2021-03-04T05:06:07+00:00", "2021-03-04T05:06:07Z"),
        "2021-03-04T05:06:07+00:00": ("2021-03-04T05:06:07+00:00", "2021-03-04T05:06:07Z"),
        "2021-03-04T05:06:07.000001+02:00": ("2021-03-04T05:06:07.000001+02:00",
                                             "2021-03-04T05:06:07.000001+02:00"),
    }
    answered = [server.message({"user": "a", "channel": channel, "timestamp": sent})[0]
                for sent in cases]
    assert [item["timestamp"] for item in answered] == [kept for kept, _ in cases.values()]
    assert [e["timestamp"] for e in client.take(len(cases))] == [out for _, out in cases.values()]
    assert [e["timestamp"] for e in server.history(channel)] == [kept for kept, _ in cases.values()]


def test_message_invalid_uuid_or_timestamp_is_422(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    response = server.post("/message", [{"user": "a", "channel": channel, "uuid": "nope"}])
    assert response.status_code == 422
    assert set(response.json()["0"]) == {"uuid"}
    response = server.post("/message", [{"user": "a", "channel": channel, "timestamp": "yesterday"}])
    assert response.status_code == 422
    assert set(response.json()["0"]) == {"timestamp"}


def test_message_delivered_envelope_is_exact(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    item = server.say(channel, "exact", user="alice", pm_users=[], exclude_users=[unique("nobody")])
    assert client.next() == delivered(item)


def test_message_without_message_field_is_delivered_without_it(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    (item,) = server.message({"user": "alice", "channel": channel})
    assert "message" not in item
    envelope = client.next()
    assert envelope == delivered(item)
    assert "message" not in envelope


def test_message_to_unknown_channel_is_discarded_not_created(server):
    channel = unique("never-created")
    response = server.post("/message", [{"user": "a", "channel": channel, "message": {}}])
    assert response.status_code == 200
    assert server.info(channels=[channel])["channels"] == {}


def test_message_reaches_every_connection_of_the_channel(server, join):
    channel = unique("ch")
    username = unique("u")
    _, first = join(server, username, [channel])
    _, second = join(server, username, [channel])
    _, third = join(server, unique("other"), [channel])
    item = server.say(channel)
    for client in (first, second, third):
        assert client.next() == delivered(item)


def test_message_sender_own_connections_are_not_excluded(server, join):
    channel, username = unique("ch"), unique("u")
    _, client = join(server, username, [channel])
    item = server.say(channel, "from me", user=username)
    assert client.next() == delivered(item)


def test_message_pm_users_limit_channel_recipients(server, crowd):
    channel, members = crowd(server)
    (a, _), (b, _), (c, _) = members
    item = server.say(channel, "private", pm_users=[a, c])
    got = received_before_sentinel(server, channel, members)
    assert got == {a: [delivered(item)], b: [], c: [delivered(item)]}


def test_message_exclude_users_skip_channel_recipients(server, crowd):
    channel, members = crowd(server)
    (a, _), (b, _), (c, _) = members
    item = server.say(channel, "not for b", exclude_users=[b])
    got = received_before_sentinel(server, channel, members)
    assert got == {a: [delivered(item)], b: [], c: [delivered(item)]}


def test_message_exclude_users_win_over_pm_users(server, crowd):
    channel, members = crowd(server)
    (a, _), (b, _), (c, _) = members
    item = server.say(channel, "a only", pm_users=[a, b], exclude_users=[b])
    got = received_before_sentinel(server, channel, members)
    assert got == {a: [delivered(item)], b: [], c: []}


def test_direct_message_reaches_every_connection_of_the_user(server, open_ws):
    username = unique("dm")
    clients = [
        open_ws(server.connect(username)),
        open_ws(server.connect(username, [unique("ch")])),
        open_ws(server.connect(username, [unique("ch"), unique("ch")])),
    ]
    (item,) = server.message({"user": "backend", "pm_users": [username], "message": {"secret": 1}})
    for client in clients:
        assert client.next() == delivered(item)


def test_direct_message_reaches_each_listed_user(server, open_ws):
    first, second, bystander = unique("dm"), unique("dm"), unique("dm")
    clients = {name: open_ws(server.connect(name)) for name in (first, second, bystander)}
    (item,) = server.message({"user": "backend", "pm_users": [first, second], "message": {}})
    assert clients[first].next() == delivered(item)
    assert clients[second].next() == delivered(item)
    marker = server.sentinel(pm_users=[bystander])
    assert clients[bystander].until_uuid(marker) == []


def test_direct_message_to_user_listed_twice_arrives_once(server, open_ws):
    username = unique("dm")
    client = open_ws(server.connect(username))
    (item,) = server.message({"user": "b", "pm_users": [username, username], "message": {}})
    marker = server.sentinel(pm_users=[username])
    assert client.until_uuid(marker) == [delivered(item)]


def test_direct_message_ignores_exclude_users(server, open_ws):
    username = unique("dm")
    client = open_ws(server.connect(username))
    (item,) = server.message({"user": "b", "pm_users": [username], "exclude_users": [username], "message": {}})
    assert client.next() == delivered(item)


def test_direct_message_to_unknown_user_does_not_create_it(server):
    ghost = unique("ghost")
    response = server.post("/message", [{"user": "b", "pm_users": [ghost], "message": {}}])
    assert response.status_code == 200
    response = server.post("/user_state", {"user": ghost, "user_state": {"a": 1}})
    assert response.status_code == 422
    assert response.json() == {"user": ["Unknown user"]}


def test_message_delivery_follows_list_order_per_channel(server, join):
    first, second = unique("one"), unique("two")
    _, client = join(server, unique("u"), [first, second])
    items = [{"user": "b", "channel": (first, second)[n % 2], "message": {"n": n}} for n in range(40)]
    server.message(*items)
    received = client.take(40)
    for channel in (first, second):
        numbers = [e["message"]["n"] for e in received if e["channel"] == channel]
        assert numbers == [n for n in range(40) if items[n]["channel"] == channel]


def test_subscribers_of_a_channel_each_get_exactly_their_own_frames(server, join):
    """A channel's frames, queued once for its subscribers, interleaved with another channel's,
    with direct messages and with frames that exclude one of them: each gets all it is owed,
    each stream in order, and nothing else."""
    shared, other = unique("shared"), unique("other")
    names = {role: unique(role) for role in ("plain", "both", "direct")}
    clients = {"plain": join(server, names["plain"], [shared])[1],
               "both": join(server, names["both"], [shared, other])[1],
               "direct": join(server, names["direct"], [shared])[1]}
    items, owed = [], {role: [] for role in clients}
    for n in range(30):
        skip = [names["plain"]] if n % 7 == 3 else []
        items.append({"user": "p", "channel": shared, "exclude_users": skip, "message": {"n": n}})
        for role in clients:
            if not (skip and role == "plain"):
                owed[role].append((shared, n))
        if n % 3 == 0:
            items.append({"user": "p", "channel": other, "message": {"n": n}})
            owed["both"].append((other, n))
        if n % 5 == 0:
            items.append({"user": "p", "pm_users": [names["direct"]], "message": {"n": n}})
            owed["direct"].append((None, n))
    server.message(*items)
    for role, client in clients.items():
        got = [(e["channel"], e["message"]["n"]) for e in client.take(len(owed[role]))]
        for stream in {channel for channel, _ in owed[role]}:
            assert [n for c, n in got if c == stream] == [n for c, n in owed[role] if c == stream]
        client.expect_quiet()


def test_message_delivery_follows_request_order(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    posted = [server.say(channel, str(n))["uuid"] for n in range(15)]
    assert [e["uuid"] for e in client.take(15)] == posted


def test_message_history_keeps_last_history_size_entries(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True, "history_size": 3}})
    posted = [server.say(channel, str(n))["uuid"] for n in range(5)]
    assert [entry["uuid"] for entry in server.history(channel)] == posted[2:]


def test_message_history_entries_carry_routing_fields(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    item = server.say(channel, "kept", user="alice", pm_users=["alice", "bob"], exclude_users=["bob"])
    (entry,) = server.history(channel)
    assert entry["uuid"] == item["uuid"]
    assert entry["user"] == "alice"
    assert entry["message"] == {"text": "kept"}
    assert entry["timestamp"] == item["timestamp"]
    assert entry["pm_users"] == ["alice", "bob"]
    assert entry["exclude_users"] == ["bob"]
    assert entry["no_history"] is False


def test_message_no_history_is_not_stored(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    kept = server.say(channel, "kept")
    server.say(channel, "not kept", no_history=True)
    assert [entry["uuid"] for entry in server.history(channel)] == [kept["uuid"]]


def test_message_history_size_zero_keeps_nothing(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True, "history_size": 0}})
    server.say(channel, "gone")
    assert server.history(channel) == []


def test_message_history_off_by_default(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    server.say(channel, "gone")
    assert server.history(channel) == []


def test_message_no_history_is_still_delivered(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel], channel_configs={channel: {"store_history": True}})
    item = server.say(channel, "live only", no_history=True)
    assert client.next() == delivered(item)


def test_message_object_body_is_422(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    response = server.post("/message", {"user": "a", "channel": channel})
    assert response.status_code == 422
    assert "_schema" in response.json()

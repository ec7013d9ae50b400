"""Cross-shard behaviour (API.md read with DESIGN.md): the contract holds whichever shards own
the channel, the user and each connection, and the server survives losing a shard process."""

import collections
import os
import signal
import time
import uuid
from urllib.parse import urlsplit

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from contract import delivered, unique, wait_until
from harness import Server
from processes import descendant_pids, pids_listening_on
from wsclient import open_websocket

MAX_CONNECT_ATTEMPTS = 80
FAN_OUT_TIMEOUT = 15.0
RECOVERY_TIMEOUT = 20.0


def port_of(reply):
    return urlsplit(reply["ws_url"]).port


def spread(server, usernames, channels=(), per_shard=2, at_least=0, **body):
    """Connect the users in turn until every shard owns ``per_shard`` connections and there are
    ``at_least`` in all; returns every /connect reply made. Each conn_id is drawn here: the
    server would put a user's generated ones all on the user's shard."""
    replies, per_port = [], collections.Counter()
    for attempt in range(MAX_CONNECT_ATTEMPTS):
        if len(replies) >= at_least and all(per_port[port] >= per_shard for port in server.ws_ports):
            return replies
        reply = server.connect(usernames[attempt % len(usernames)], list(channels),
                               conn_id=str(uuid.uuid4()), **body)
        replies.append(reply)
        per_port[port_of(reply)] += 1
    raise AssertionError(f"connections did not spread over every shard: {dict(per_port)}")


def collect_until_markers(client, markers, timeout=FAN_OUT_TIMEOUT):
    """Envelopes per channel until every channel's end marker (a uuid) has arrived."""
    deadline = time.monotonic() + timeout
    seen, outstanding = collections.defaultdict(list), set(markers)
    while outstanding:
        envelope = client.next(max(deadline - time.monotonic(), 0.001))
        if envelope.get("uuid") in outstanding:
            outstanding.discard(envelope["uuid"])
        else:
            seen[envelope["channel"]].append(envelope)
    return seen


def test_channel_messages_reach_every_subscriber_once_in_order(server3, open_ws):
    server = server3
    channels = [unique("fan") for _ in range(4)]
    users = [unique("user") for _ in range(4)]
    replies = spread(server, users, channels, per_shard=3, at_least=12)
    clients = [open_ws(reply) for reply in replies]

    expected = collections.defaultdict(list)
    for round_ in range(10):  # one request carrying a message for every channel
        posted = server.message(*[{"user": "b", "channel": c, "message": {"r": round_}} for c in channels])
        for item in posted:
            expected[item["channel"]].append(delivered(item))
    for n in range(40):  # then one request per message
        item = server.say(channels[n % 4], f"single {n}", user=users[n % 4])
        expected[item["channel"]].append(delivered(item))
    markers = [server.sentinel(channel) for channel in channels]

    for client in clients:
        received = collect_until_markers(client, markers)
        assert set(received) == set(channels)
        for channel in channels:
            assert len(received[channel]) == 20
            assert received[channel] == expected[channel]
    for client in clients:
        client.expect_quiet(0.2)


def test_pm_and_exclude_filter_on_every_shard(server3, open_ws):
    server = server3
    channel = unique("filter")
    users = [unique("user") for _ in range(4)]
    replies = spread(server, users, [channel], per_shard=2, at_least=12)
    clients = [(reply["username"], open_ws(reply)) for reply in replies]
    keep, dropped = users[0], users[1]
    item = server.say(channel, "filtered", pm_users=[keep, dropped], exclude_users=[dropped])
    marker = server.sentinel(channel)
    for username, client in clients:
        got = client.until_uuid(marker)
        assert got == ([delivered(item)] if username == keep else []), username


def test_direct_message_reaches_every_connection_on_every_shard(server3, open_ws):
    server = server3
    target, other = unique("dm"), unique("dm")
    target_clients = [open_ws(reply) for reply in spread(server, [target], per_shard=2)]
    other_clients = [open_ws(reply) for reply in spread(server, [other], per_shard=1)]
    (item,) = server.message({"user": "b", "pm_users": [target, other], "message": {"dm": 1}})
    for client in target_clients + other_clients:
        assert client.next() == delivered(item)
    target_marker = server.sentinel(pm_users=[target])
    other_marker = server.sentinel(pm_users=[other])
    for client in target_clients:
        assert client.until_uuid(target_marker) == []
    for client in other_clients:
        assert client.until_uuid(other_marker) == []


def test_presence_reaches_members_on_every_shard_once(server3, open_ws):
    server = server3
    channel = unique("presence")
    server.channel_config({channel: {"notify_presence": True, "broadcast_presence_with_user_lists": True}})
    watchers = [unique("watcher") for _ in range(3)]
    replies = spread(server, watchers, [channel], per_shard=1, at_least=3)
    clients = [open_ws(reply) for reply in replies]
    for client in clients:  # watchers joining after a client attached are announced to it
        client.until_uuid(server.sentinel(channel))
    joiner = unique("joiner")
    conn_ids = [r["conn_id"] for r in spread(server, [joiner], [channel], per_shard=1)]
    members = sorted({r["username"] for r in replies} | {joiner})
    marker = server.sentinel(channel)
    for client in clients:
        got = [e for e in client.until_uuid(marker) if e["type"] == "presence"]
        assert len(got) == 1
        assert (got[0]["user"], got[0]["message"]) == (joiner, {"action": "joined"})
        assert sorted(entry["user"] for entry in got[0]["users"]) == members
    for conn_id in conn_ids:
        server.unsubscribe(conn_id, [channel])
    marker = server.sentinel(channel)
    for client in clients:
        got = [e for e in client.until_uuid(marker) if e["type"] == "presence"]
        assert len(got) == 1
        assert (got[0]["user"], got[0]["message"]) == (joiner, {"action": "parted"})
        assert joiner not in [entry["user"] for entry in got[0]["users"]]


def test_info_counts_members_on_every_shard(server3):
    server = server3
    channel = unique("counted")
    users = [unique("user") for _ in range(3)]
    replies = spread(server, users, [channel], per_shard=2, at_least=7)
    info = server.info(channels=[channel])
    channel_info = info["channels"][channel]
    assert channel_info["total_connections"] == len(replies)
    assert channel_info["users"] == sorted(users)
    assert channel_info["total_users"] == 3
    assert sorted(entry["user"] for entry in info["users"]) == sorted(users)


def test_user_state_change_reaches_members_on_every_shard(server3, open_ws):
    server = server3
    channel = unique("state")
    server.channel_config({channel: {"notify_state": True}})
    subject = unique("subject")
    replies = spread(server, [subject, unique("peer"), unique("peer")], [channel], per_shard=1, at_least=6)
    clients = [open_ws(reply) for reply in replies]
    server.ok("POST", "/user_state", {"user": subject, "user_state": {"mood": "ok"}, "state_public_keys": ["mood"]})
    for client in clients:
        envelope = client.next()
        assert envelope["type"] == "user_state_change"
        assert envelope["user"] == subject
        assert envelope["message"] == {"state": {"mood": "ok"}, "changed": [{"key": "mood", "value": "ok"}]}
    marker = server.sentinel(channel)
    for client in clients:
        assert client.until_uuid(marker) == []


def test_catchup_reaches_connections_on_every_shard(server3, open_ws, witness):
    server = server3
    channel = unique("catchup")
    replies = spread(server, [unique("user"), unique("user")], [channel], per_shard=1)
    witnesses = [witness(server, reply) for reply in replies]
    posted = [server.say(channel, str(n)) for n in range(3)]
    for seen in witnesses:
        seen.until_uuid(posted[-1]["uuid"])
    for reply in replies:
        client = open_ws(reply)
        assert client.take(3) == [delivered(item, catchup=True) for item in posted]


def test_subscribe_and_unsubscribe_on_every_shard(server3, open_ws):
    server = server3
    channel, other = unique("ch"), unique("other")
    replies = spread(server, [unique("user")], [other], per_shard=1)
    clients = [open_ws(reply) for reply in replies]
    for reply in replies:
        assert server.subscribe(reply["conn_id"], [channel])["subscribed_to"] == [channel]
    item = server.say(channel, "to all")
    for client in clients:
        assert client.next() == delivered(item)
    for reply in replies:
        assert server.unsubscribe(reply["conn_id"], [channel])["unsubscribed_from"] == [channel]
    server.say(channel, "to nobody")
    marker = server.sentinel(other)
    for client in clients:
        assert [e for e in client.until_uuid(marker) if e.get("channel") == channel] == []


def test_websocket_on_a_non_owning_shard_gets_no_session(server3, open_ws):
    server = server3
    reply = server.connect(unique("user"), [unique("ch")])
    query = urlsplit(reply["ws_url"]).query
    for port in server.ws_ports:
        if port == port_of(reply):
            continue
        try:
            client = open_websocket(f"ws://127.0.0.1:{port}/ws?{query}")
        except (InvalidHandshake, OSError):
            continue
        with client:
            with pytest.raises(ConnectionClosed) as closed:
                client.connection.recv(timeout=3)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1000
    client = open_ws(reply)
    item = server.say(reply["channels"][0], "owner works")
    assert client.next() == delivered(item)


# ----------------------------------------------------------------------------- losing a shard


@pytest.fixture
def fresh_server():
    server = Server(3).start()
    yield server
    server.stop()


def shard_pid(server, port):
    holders = pids_listening_on(port, descendant_pids(server.process.pid))
    assert len(holders) == 1, f"expected one shard process listening on {port}, found {holders}"
    return holders[0]


def serves_on_every_shard(server):
    """A fresh connection on every shard attaches and receives channel and direct messages."""
    channels = [unique("after") for _ in range(12)]
    replies = spread(server, [unique("user") for _ in range(3)], channels, per_shard=1)
    clients = [open_websocket(reply["ws_url"]) for reply in replies]
    try:
        posted = server.message(*[{"user": "b", "channel": c, "message": {}} for c in channels])
        usernames = sorted({reply["username"] for reply in replies})
        (direct,) = server.message({"user": "b", "pm_users": usernames, "message": {}})
        for client in clients:
            got = client.take(len(posted) + 1, timeout=5)
            assert sorted(e["uuid"] for e in got) == sorted([i["uuid"] for i in posted] + [direct["uuid"]])
    finally:
        for client in clients:
            client.close()
    return True


def test_killed_shard_is_restarted_and_serves_again(fresh_server):
    server = fresh_server
    victim_port = server.ws_ports[1]
    victim = shard_pid(server, victim_port)
    assert serves_on_every_shard(server)

    os.kill(victim, signal.SIGKILL)
    server.http_timeout = 5  # requests routed to the dead shard must not eat the recovery time

    def recovered():
        try:
            return serves_on_every_shard(server)
        except (AssertionError, requests.RequestException, InvalidHandshake, OSError, ConnectionClosed):
            return False

    wait_until(recovered, RECOVERY_TIMEOUT, interval=0.3)
    assert shard_pid(server, victim_port) != victim
    assert server.process.poll() is None

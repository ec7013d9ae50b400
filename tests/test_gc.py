"""API.md § Activity, heartbeats, garbage collection.

Idle collection runs on ``gc_server`` (gc_conns_after = 2 s, heartbeat every 1 s) and on
``silent_gc_server`` (the same without heartbeats, so an attached client is idle unless it
talks); the websocket-close rule runs on the contract server, whose gc_conns_after (30 s) is far longer
than the test, so only the close itself can explain the removal.
"""

import json
import time
import uuid

from websockets.exceptions import ConnectionClosed

from contract import unique, wait_until
from harness import GC_CONNS_AFTER
from shardcast.routing import owner

SWEEP_PERIOD = 1.0
SLACK = 2.5
# Idle for more than gc_conns_after, then the next sweep: removal happens by this time.
REMOVED_BY = GC_CONNS_AFTER + SWEEP_PERIOD + SLACK
CLOSE_REMOVAL_TIMEOUT = 3.5  # "within ~2 s"
# Long enough that an unprotected connection would certainly have been collected.
OUTLIVE = GC_CONNS_AFTER * 2 + SWEEP_PERIOD


def wait_removed(server, conn_id, started, deadline):
    wait_until(lambda: not server.is_connected(conn_id), deadline - (time.monotonic() - started), 0.2)
    return time.monotonic() - started


def test_gc_removes_connection_that_never_attaches(gc_server):
    server = gc_server
    channel = unique("ch")
    started = time.monotonic()
    conn_id = server.connect(unique("u"), [channel])["conn_id"]
    time.sleep(GC_CONNS_AFTER / 2)
    assert server.channel_info(channel)["total_connections"] == 1, "collected too early"
    wait_removed(server, conn_id, started, REMOVED_BY)
    assert server.post("/subscribe", {"conn_id": conn_id, "channels": [channel]}).status_code == 422
    assert server.listen(conn_id).status_code == 401
    assert server.post("/disconnect", {"conn_id": conn_id}, sign=False).json() is False


def test_gc_removes_idle_connection_in_no_channel(gc_server):
    server = gc_server
    started = time.monotonic()
    conn_id = server.connect(unique("u"))["conn_id"]
    assert server.is_connected(conn_id)
    wait_removed(server, conn_id, started, REMOVED_BY)
    assert server.get("/disconnect", params={"conn_id": conn_id}, sign=False).json() is False


def watched_idle_connection(server, open_ws) -> tuple:
    """An observer's websocket on a presence channel, then a connection that joins it and stays
    idle: (observer, the idle user, the /connect answer, when it connected)."""
    channel = unique("presence")
    server.channel_config({channel: {"notify_presence": True}})
    observer = open_ws(server.connect(unique("observer"), [channel]))
    idle = unique("idle")
    started = time.monotonic()
    return observer, idle, server.connect(idle, [channel]), started


def test_gc_of_idle_connection_emits_parted(gc_server, open_ws):
    observer, idle, _, started = watched_idle_connection(gc_server, open_ws)
    joined = observer.next()
    assert (joined["type"], joined["user"], joined["message"]) == ("presence", idle, {"action": "joined"})
    parted = observer.next(timeout=REMOVED_BY)
    assert (parted["type"], parted["user"], parted["message"]) == ("presence", idle, {"action": "parted"})
    assert time.monotonic() - started > GC_CONNS_AFTER * 0.9


def test_gc_keeps_connection_with_attached_websocket(gc_server, open_ws):
    server = gc_server
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    client = open_ws(reply)
    deadline = time.monotonic() + OUTLIVE
    while time.monotonic() < deadline:
        client.recv_frame(timeout=GC_CONNS_AFTER + SLACK)  # heartbeats: activity
    assert server.is_connected(reply["conn_id"])
    item = server.say(channel, "still here")
    assert client.next()["uuid"] == item["uuid"]


def test_gc_keeps_long_polling_connection(gc_server):
    server = gc_server
    conn_id = server.connect(unique("u"))["conn_id"]
    deadline = time.monotonic() + OUTLIVE
    while time.monotonic() < deadline:
        assert server.listen(conn_id).status_code == 200
    assert server.is_connected(conn_id)


def talk(client):
    client.connection.send(json.dumps({"type": "heartbeat"}))


def wait_closed_by_server(client, timeout, keep_alive):
    """Wait until the server closes ``client``; ``keep_alive`` clients talk meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for other in keep_alive:
            talk(other)
        try:
            client.connection.recv(timeout=0.5)
        except TimeoutError:
            continue
        except ConnectionClosed:
            return
    raise AssertionError(f"websocket still open after {timeout} s")


def test_gc_closes_websocket_of_idle_connection(silent_gc_server, open_ws):
    server = silent_gc_server
    observer, idle, reply, started = watched_idle_connection(server, open_ws)
    wait_closed_by_server(open_ws(reply), REMOVED_BY, keep_alive=[observer])
    assert time.monotonic() - started > GC_CONNS_AFTER * 0.9
    assert not server.is_connected(reply["conn_id"])
    presences = [observer.next(), observer.next()]
    assert [(e["user"], e["message"]["action"]) for e in presences] == [(idle, "joined"), (idle, "parted")]


def test_gc_keeps_connection_whose_client_sends_frames(silent_gc_server, open_ws):
    server = silent_gc_server
    reply = server.connect(unique("u"), [unique("ch")])
    client = open_ws(reply)
    deadline = time.monotonic() + OUTLIVE
    while time.monotonic() < deadline:
        talk(client)
        time.sleep(0.5)
    assert server.is_connected(reply["conn_id"])


def test_websocket_close_removes_connection_within_2s(server, open_ws):
    channel = unique("presence")
    server.channel_config({channel: {"notify_presence": True}})
    observer_name, leaver = unique("observer"), unique("leaver")
    observer = open_ws(server.connect(observer_name, [channel]))
    reply = server.connect(leaver, [channel])
    client = open_ws(reply)
    assert observer.next()["message"] == {"action": "joined"}
    started = time.monotonic()
    client.close()
    parted = observer.next(timeout=CLOSE_REMOVAL_TIMEOUT)
    assert (parted["type"], parted["user"], parted["message"]) == ("presence", leaver, {"action": "parted"})
    wait_removed(server, reply["conn_id"], started, CLOSE_REMOVAL_TIMEOUT)
    assert server.channel_info(channel)["users"] == [observer_name]


CHURNED = 200           # channels used once and left
CHANNEL_GC_AFTER = 1    # gc_channels_after of channel_gc_server
CHANNEL_FORGOTTEN_BY = CHANNEL_GC_AFTER + SWEEP_PERIOD + SLACK


def test_channels_used_once_and_left_are_forgotten(channel_gc_server):
    server = channel_gc_server
    tag = unique("churn")
    churned = [f"{tag}-{n}" for n in range(CHURNED)]
    for start in range(0, CHURNED, 50):
        conn_id = server.connect(unique("u"), churned[start:start + 50])["conn_id"]
        server.post("/disconnect", {"conn_id": conn_id}, sign=False)
    configured = unique("defaults")
    server.channel_config({configured: {"notify_presence": False}})     # the defaults, spelt out
    with_history, with_settings, with_member = unique("history"), unique("settings"), unique("member")
    server.channel_config({with_history: {"store_history": True},
                           with_settings: {"notify_presence": True}})
    server.say(with_history)
    member = server.connect(unique("u"), [with_member],
                            conn_id=conn_id_elsewhere(with_member, server.workers))
    forgettable = {*churned, configured}
    started = time.monotonic()
    wait_until(lambda: not forgettable & set(server.info(include_users=False,
                                                         include_history=False)["channels"]),
               CHANNEL_FORGOTTEN_BY, 0.2)
    assert time.monotonic() - started >= CHANNEL_GC_AFTER / 2, "forgotten too early"
    kept = server.info(channels=[with_history, with_settings, with_member])["channels"]
    assert set(kept) == {with_history, with_settings, with_member}
    assert kept[with_member]["users"] == [member["username"]]
    assert len(kept[with_history]["history"]) == 1


def conn_id_elsewhere(channel: str, shards: int) -> str:
    """A connection id owned by another shard than ``channel``: members anywhere count."""
    while True:
        conn_id = str(uuid.uuid4())
        if owner(conn_id, shards) != owner(channel, shards):
            return conn_id

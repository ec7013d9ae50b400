"""API.md § Positions and resume: offsets on request, and a client coming back with the
positions it had gets what it missed, in order, once, or is told it cannot."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time

import pytest

from contract import delivered, unique
import harness
from harness import Server
from positions import Reader, positioned, with_query
from wsclient import open_websocket

HISTORY = {"store_history": True, "history_size": 1000}
DROPS = 20


def test_offsets_on_request_count_each_channels_messages(server, open_ws):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel], channel_configs={channel: HISTORY})
    client = open_ws(with_query(reply["ws_url"], offsets="1"))
    posted = [server.say(channel, str(n)) for n in range(3)]
    got = client.take(3)
    epoch = got[0]["epoch"]
    assert isinstance(epoch, str) and epoch
    assert got == [positioned(item, epoch, n + 1) for n, item in enumerate(posted)]


def test_without_offsets_envelopes_are_exactly_channelstreams(server, open_ws):
    channel = unique("ch")
    client = open_ws(server.connect(unique("u"), [channel], channel_configs={channel: HISTORY}))
    item = server.say(channel)
    assert client.next() == delivered(item)


def test_listen_with_offsets(server, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    seen = witness(server, reply)
    item = server.say(channel)
    seen.next()         # the message reached the connection's shard before the poll
    (envelope,) = server.listen(reply["conn_id"], offsets=1).json()
    assert envelope == positioned(item, envelope["epoch"], 1, catchup=True)


def resume(server: Server, username: str, channel: str, since: dict):
    """A new connection of ``username`` to ``channel``, its websocket opened with ``since``."""
    reply = server.connect(username, [channel])
    return open_websocket(with_query(reply["ws_url"], since={channel: since}))


def test_a_client_back_with_its_position_gets_what_it_missed_then_live(server, open_ws):
    channel, username = unique("ch"), unique("u")
    first = open_ws(with_query(server.connect(username, [channel],
                                              channel_configs={channel: HISTORY})["ws_url"],
                               offsets="1"))
    seen = server.say(channel, "seen")
    epoch = first.next()["epoch"]
    first.close()
    missed = [server.say(channel, f"missed {n}") for n in range(3)]
    with resume(server, username, channel, {"epoch": epoch, "offset": 1}) as client:
        (recovery,) = client.recv_frame()
        assert recovery == {"type": "recovery", "channels": {channel: {
            "recovered": True, "epoch": epoch, "offset": 4}}}
        live = server.say(channel, "live")
        assert client.take(4) == ([positioned(item, epoch, n + 2, catchup=True)
                                   for n, item in enumerate(missed)]
                                  + [positioned(live, epoch, 5)])
    assert seen["uuid"] not in {item["uuid"] for item in missed}


def test_missed_edits_and_deletes_arrive_as_the_messages_now_stand(server):
    channel, username = unique("ch"), unique("u")
    keeper = server.connect(unique("keeper"), [channel],
                            channel_configs={channel: HISTORY})["conn_id"]
    kept, gone = server.say(channel, "v1"), server.say(channel, "deleted")
    server.ok("PATCH", "/message", [{"uuid": kept["uuid"], "channel": channel,
                                     "message": {"text": "v2"}}])
    server.ok("DELETE", "/message", [{"uuid": gone["uuid"], "channel": channel}])
    epoch = server.listen(keeper, offsets=1).json()[0]["epoch"]
    with resume(server, username, channel, {"epoch": epoch, "offset": 0}) as client:
        (recovery,) = client.recv_frame()
        assert recovery["channels"][channel]["recovered"] is True
        (envelope,) = client.recv_frame()
        assert envelope["uuid"] == kept["uuid"] and envelope["message"] == {"text": "v2"}
        assert envelope["edited"] is not None and envelope["offset"] == 1


def _epoch(server: Server, channel: str) -> str:
    """The channel's current epoch, as a client learns it: from a positioned message."""
    conn_id = server.connect(unique("probe"), [channel])["conn_id"]
    server.say(channel, "probe")
    return server.listen(conn_id, offsets=1).json()[0]["epoch"]


@pytest.mark.parametrize("since, why", [
    ({"epoch": "not-this-one", "offset": 1}, "the epoch changed"),
    ({"epoch": None, "offset": 0}, "history does not reach back"),
])
def test_recovered_is_false_when_history_cannot_serve(server, since, why):
    channel, username = unique("ch"), unique("u")
    server.connect(unique("keeper"), [channel],
                   channel_configs={channel: {"store_history": True, "history_size": 2}})
    epoch = _epoch(server, channel)
    for n in range(5):
        server.say(channel, str(n))
    since = {"epoch": since["epoch"] or epoch, "offset": since["offset"]}
    with resume(server, username, channel, since) as client:
        (recovery,) = client.recv_frame()
        status = recovery["channels"][channel]
        assert status == {"recovered": False, "epoch": epoch, "offset": 6}, why


def test_listen_resumes_too(server):
    channel, username = unique("ch"), unique("u")
    server.connect(unique("keeper"), [channel], channel_configs={channel: HISTORY})
    epoch = _epoch(server, channel)
    missed = server.say(channel, "missed")
    conn_id = server.connect(username, [channel])["conn_id"]
    since = json.dumps({channel: {"epoch": epoch, "offset": 1}})
    recovery, envelope = server.listen(conn_id, since=since).json()
    assert recovery["type"] == "recovery" and recovery["channels"][channel]["recovered"]
    assert envelope == positioned(missed, epoch, 2, catchup=True)


@pytest.mark.parametrize("since", ["not json", '{"ch": {"epoch": "e"}}',
                                   '{"ch": {"epoch": "e", "offset": -1}}', "[1, 2]"])
def test_bad_positions_are_refused_naming_since(server, since):
    conn_id = server.connect(unique("u"))["conn_id"]
    response = server.listen(conn_id, since=since)
    assert response.status_code == 422 and "since" in response.json()


def test_twenty_abrupt_drops_during_steady_publishing_lose_and_repeat_nothing(server):
    channel, username = unique("ch"), unique("u")
    server.channel_config({channel: HISTORY})
    posted: list[dict] = []
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            posted.append(server.say(channel, str(len(posted))))
            time.sleep(0.01)

    got: list[dict] = []
    position = None
    publisher = threading.Thread(target=publish)
    reply = server.connect(username, [channel])
    client = open_websocket(with_query(reply["ws_url"], offsets="1"))
    publisher.start()           # after the first connection: it is to miss nothing
    try:
        for drop in range(DROPS):
            if drop:
                reply = server.connect(username, [channel])
                client = open_websocket(with_query(reply["ws_url"], since={channel: position}))
            deadline, limit = time.monotonic() + 0.15, time.monotonic() + 10
            while time.monotonic() < deadline or (position is None and time.monotonic() < limit):
                try:
                    frame = client.recv_frame(timeout=0.05)
                except AssertionError:
                    continue
                for envelope in frame:
                    if envelope["type"] == "recovery":
                        assert envelope["channels"][channel]["recovered"], envelope
                    elif envelope["type"] == "message":
                        got.append(envelope)
                        position = {"epoch": envelope["epoch"], "offset": envelope["offset"]}
            client.connection.socket.shutdown(socket.SHUT_RDWR)    # dropped: no close frame
            client.connection.socket.close()
    finally:
        stop.set()
        publisher.join()
    reply = server.connect(username, [channel])
    with open_websocket(with_query(reply["ws_url"], since={channel: position})) as client:
        marker = server.sentinel(channel)
        got += [e for e in client.until_uuid(marker) if e["type"] == "message"]
    assert [e["uuid"] for e in got] == [item["uuid"] for item in posted]
    assert [e["offset"] for e in got] == list(range(1, len(posted) + 1))


def test_after_its_shard_is_killed_a_client_recovers_what_the_living_owner_kept():
    shards, victim = 3, 2
    server = Server(shards).start()
    try:
        kept = harness.owned_by(0, shards, "kept")           # its owner survives
        lost = harness.owned_by(victim, shards, "lost")      # its owner dies with the client's
        server.channel_config({kept: HISTORY, lost: HISTORY})
        reader = Reader(server, unique("u"), [kept, lost])
        client = reader.connect(server, conn_id=harness.conn_id_on(victim, shards))
        reader.read(client, until=server.say(lost, "a position here too")["uuid"])
        posted: list[dict] = []
        stop = threading.Event()
        publisher = threading.Thread(target=lambda: [
            posted.append(server.say(kept, str(len(posted)))) or time.sleep(0.005)
            for _ in iter(lambda: stop.is_set(), True)])
        publisher.start()
        time.sleep(0.3)
        pid = server.ok("GET", "/admin/admin.json")["shards"][victim]["pid"]
        os.kill(pid, signal.SIGKILL)
        reader.read(client)                                   # until it is dropped
        time.sleep(0.3)
        client = reader.connect(server, conn_id=harness.conn_id_on(0, shards))
        stop.set()
        publisher.join()
        marker = server.sentinel(kept)
        reader.read(client, until=marker)
        client.close()
    finally:
        server.stop()
    (status,) = reader.statuses
    assert status[kept]["recovered"] is True
    assert status[lost]["recovered"] is False           # its history died with its owner
    got = [e["uuid"] for e in reader.got[kept]]
    assert got == [item["uuid"] for item in posted] + [marker]

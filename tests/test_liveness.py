"""Dead-peer detection: the shard pings every websocket each ws_ping_interval and drops a peer
that has not answered since the previous round; a peer that answers stays."""
from __future__ import annotations

import time

import pytest

from contract import unique, wait_until
from harness import Server
from wsclient import raw_handshake

PING_INTERVAL = 0.5


@pytest.fixture(scope="module")
def pinging_server():
    server = Server(2, {"SHARDCAST_WS_PING_INTERVAL": str(PING_INTERVAL),
                        "SHARDCAST_GC_CONNS_AFTER": "30"}).start()
    yield server
    server.stop()


def test_peer_that_never_answers_pings_is_dropped(pinging_server):
    server = pinging_server
    reply = server.connect(unique("mute"), [unique("ch")])
    with raw_handshake(reply["ws_url"]):      # completes the handshake, then stays silent
        started = time.monotonic()
        wait_until(lambda: not server.is_connected(reply["conn_id"]), 5 * PING_INTERVAL + 2)
        assert time.monotonic() - started >= PING_INTERVAL


def test_peer_that_answers_pings_stays(pinging_server):
    server = pinging_server
    reply = server.connect(unique("alive"), [unique("ch")])
    with server.ws(reply["ws_url"]):           # the websockets client answers pings itself
        time.sleep(6 * PING_INTERVAL)
        assert server.is_connected(reply["conn_id"])

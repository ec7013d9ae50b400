"""Lines that anyone can cause are rate-limited: garbage sent to a websocket port by clients
with no connection cannot flood the log."""
from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid

import pytest

from harness import Server
from shardcast.logs import RateLimit

GARBAGE = b"\xff" * 40          # not a websocket frame: opcode 0xf
CLIENTS = 20


def upgrade_request(port: int) -> bytes:
    """A websocket upgrade for a connection id that nobody was given."""
    return (f"GET /ws?conn_id={uuid.uuid4()} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "\r\n").encode()


@pytest.fixture(scope="module")
def quiet_server():
    server = Server(2).start()
    yield server
    server.stop()


def test_garbage_on_websocket_ports_logs_at_most_a_line_per_shard(quiet_server):
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=2))
                   for port in quiet_server.ws_ports for _ in range(CLIENTS)]
        for sock in sockets:
            port = sock.getpeername()[1]
            sock.sendall(upgrade_request(port) + GARBAGE)   # before the server closes it
        for sock in sockets:
            with contextlib.suppress(OSError):
                while sock.recv(4096):      # until the server closes (or resets) it
                    pass
    time.sleep(0.2)
    lines = [line for line in quiet_server.output().splitlines() if "parser error" in line]
    assert 1 <= len(lines) <= len(quiet_server.ws_ports), "\n".join(lines)


def record(message: str, at: float, *args: object) -> logging.LogRecord:
    entry = logging.LogRecord("picows.server", logging.ERROR, __file__, 1, message, args, None)
    entry.created = at
    return entry


def test_rate_limit_passes_one_line_per_interval_and_counts_the_rest():
    limit = RateLimit(10.0)
    assert limit.filter(record("parser error: %s", 100.0, "a"))
    assert not limit.filter(record("parser error: %s", 101.0, "b"))
    assert not limit.filter(record("parser error: %s", 109.0, "c"))
    assert limit.filter(record("other kind", 109.5))
    later = record("parser error: %s", 110.5, "d")
    assert limit.filter(later)
    assert later.getMessage() == "parser error: d (2 more like this since the last one, not logged)"

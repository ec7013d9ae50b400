"""Lines that anyone can cause are rate-limited: garbage sent to a websocket port cannot flood
the log."""
from __future__ import annotations

import contextlib
import logging
import socket
import time
import uuid
from urllib.parse import urlsplit

import pytest

from contract import unique
from harness import Server
from shardcast.logs import RateLimit

GARBAGE = b"\xff" * 40          # not a websocket frame: opcode 0xf
CLIENTS = 20


def upgrade_request(port: int, conn_id: str) -> bytes:
    return (f"GET /ws?conn_id={conn_id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "\r\n").encode()


@pytest.fixture(scope="module")
def quiet_server():
    server = Server(2).start()
    yield server
    server.stop()


def send_garbage(server: Server, conn_ids: list[str | None]) -> list[str]:
    """Upgrade a socket per id (None: an id nobody was given) and send garbage right after;
    the protocol lines the server logged meanwhile."""
    logged = len(server.output().splitlines())
    with contextlib.ExitStack() as stack:
        sockets = []
        for index, conn_id in enumerate(conn_ids):
            port = server.ws_ports[index % len(server.ws_ports)]
            if conn_id is not None:     # the port of the shard holding it
                port = urlsplit(server.connect(unique("u"), conn_id=conn_id)["ws_url"]).port
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=2))
            sock.sendall(upgrade_request(port, conn_id or str(uuid.uuid4())) + GARBAGE)
            sockets.append(sock)
        for sock in sockets:
            with contextlib.suppress(OSError):
                while sock.recv(4096):      # until the server closes (or resets) it
                    pass
    time.sleep(0.2)
    return [line for line in server.output().splitlines()[logged:]
            if "broke the websocket protocol" in line]


def test_garbage_from_clients_with_no_connection_is_not_even_read(quiet_server):
    assert send_garbage(quiet_server, [None] * CLIENTS) == []


def test_garbage_from_connected_clients_logs_at_most_a_line_per_shard(quiet_server):
    lines = send_garbage(quiet_server, [str(uuid.uuid4()) for _ in range(CLIENTS)])
    assert 1 <= len(lines) <= len(quiet_server.ws_ports), "\n".join(lines)


def record(message: str, at: float, *args: object) -> logging.LogRecord:
    entry = logging.LogRecord("shardcast.websocket", logging.WARNING, __file__, 1, message, args,
                              None)
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

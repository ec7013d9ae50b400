"""Timeouts on the API port: a client gets a bounded time to send its headers and its body,
an idle keep-alive connection and a client that does not read its answers are dropped; a held
long poll is not. A websocket port gives an upgrade request HANDSHAKE_TIMEOUT, whole."""

from __future__ import annotations

import selectors
import time

import pytest

from harness import Server
from rawhttp import (SMALL_BUFFER, error_of, open_socket, read_response, read_until_closed,
                     request)
from shardcast.worker import HANDSHAKE_TIMEOUT

TIMEOUT = 1.0           # every HTTP timeout of this module's server
WAKE = 2.0              # its long polls wait longer than TIMEOUT
MARGIN = 2.5            # how late a close may come on a busy machine
SLOWLORIS = 200
BUNDLE = "/static/swagger-ui/swagger-ui-bundle.js"


@pytest.fixture(scope="module")
def impatient():
    server = Server(1, env={
        "SHARDCAST_HTTP_HEADER_TIMEOUT": str(TIMEOUT),
        "SHARDCAST_HTTP_BODY_TIMEOUT": str(TIMEOUT),
        "SHARDCAST_HTTP_KEEP_ALIVE_TIMEOUT": str(TIMEOUT),
        "SHARDCAST_HTTP_SEND_TIMEOUT": str(TIMEOUT),
        "SHARDCAST_WAKE_CONNECTIONS_AFTER": str(WAKE),
    }).start()
    yield server
    server.stop()


def assert_closed_in_time(sock, started: float) -> None:
    _, after = read_until_closed(sock, TIMEOUT + MARGIN)
    assert after is not None, "the server kept the connection open"
    assert time.monotonic() - started >= TIMEOUT * 0.9


def test_half_sent_request_line_is_closed(impatient):
    with open_socket(impatient.api_port) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /inf")
        assert "http_header_timeout" in error_of(sock, 408)
        assert_closed_in_time(sock, started)


def test_silent_new_connection_is_closed(impatient):
    with open_socket(impatient.api_port) as sock:
        assert_closed_in_time(sock, time.monotonic())


def test_idle_keep_alive_connection_is_closed(impatient):
    with open_socket(impatient.api_port) as sock:
        sock.sendall(request("GET", "/no-such-page"))
        assert read_response(sock)[0] == 404
        assert_closed_in_time(sock, time.monotonic())


def test_body_not_sent_in_time_is_408(impatient):
    with open_socket(impatient.api_port) as sock:
        started = time.monotonic()
        sock.sendall(request("POST", "/disconnect", {"Content-Length": "1000"}) + b"{")
        assert "http_body_timeout" in error_of(sock, 408)
        assert_closed_in_time(sock, started)


def test_slowloris_connections_are_all_closed_while_others_are_served(impatient):
    """Each sends a header byte every 0.2 s, never finishing: all are gone in time."""
    selector = selectors.DefaultSelector()
    started = time.monotonic()
    for _ in range(SLOWLORIS):
        sock = open_socket(impatient.api_port)
        sock.sendall(b"GET /health HTTP/1.1\r\nx-slow: ")
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    try:
        assert impatient.get("/info").status_code == 200
        while selector.get_map() and time.monotonic() - started < TIMEOUT + MARGIN + 1:
            for key, _ in selector.select(0.2):
                try:
                    if key.fileobj.recv(65536):
                        continue
                except ConnectionResetError:
                    pass
                selector.unregister(key.fileobj)
                key.fileobj.close()
            for key in list(selector.get_map().values()):
                try:
                    key.fileobj.send(b"v")
                except OSError:
                    pass
        assert not selector.get_map(), f"{len(selector.get_map())} slow clients still open"
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()
        selector.close()


def test_client_that_does_not_read_its_answers_is_dropped(impatient):
    count = 20
    with open_socket(impatient.api_port, receive_buffer=SMALL_BUFFER) as sock:
        sock.sendall(b"".join(request("GET", BUNDLE) for _ in range(count)))
        time.sleep(TIMEOUT + 1)
        received, after = read_until_closed(sock, MARGIN)
    assert after is not None and received < count * 1_000_000


def test_held_long_poll_outlives_the_idle_timeout(impatient):
    conn_id = impatient.connect("poller")["conn_id"]
    started = time.monotonic()
    response = impatient.listen(conn_id)
    assert response.status_code == 200 and response.json() == []
    assert time.monotonic() - started >= WAKE * 0.9


def test_request_pipelined_behind_a_long_poll_is_not_timed_out_meanwhile(impatient):
    """Reading pauses while the poll is held: the half-sent request behind it cannot come in,
    so its header timeout starts only once the poll is answered."""
    conn_id = impatient.connect("poller")["conn_id"]
    with open_socket(impatient.api_port) as sock:
        sock.sendall(request("GET", f"/listen?conn_id={conn_id}") + b"GET /next HTTP/1.1\r\n")
        status, _, body = read_response(sock)
        assert status == 200 and body == b"[]"
        assert "http_header_timeout" in error_of(sock, 408)


def test_an_upgrade_never_finished_is_dropped_after_the_handshake_timeout(impatient):
    """One socket sends nothing, one trickles a header byte every 0.2 s: each is dropped
    HANDSHAKE_TIMEOUT after it connected, however it trickles."""
    port = impatient.ws_ports[0]
    silent, trickling = open_socket(port), open_socket(port)
    started = time.monotonic()
    trickling.sendall(b"GET /ws?conn_id=x HTTP/1.1\r\nx-slow: ")
    trickling.setblocking(False)
    gone: dict[str, float] = {}
    with silent, trickling:
        while len(gone) < 2 and time.monotonic() - started < HANDSHAKE_TIMEOUT + MARGIN:
            for name, sock in (("silent", silent), ("trickling", trickling)):
                if name not in gone and _closed(sock):
                    gone[name] = time.monotonic() - started
            if "trickling" not in gone:
                try:
                    trickling.send(b"v")
                except OSError:
                    gone["trickling"] = time.monotonic() - started
            time.sleep(0.2)
    assert set(gone) == {"silent", "trickling"}, f"left open: {gone}"
    assert all(HANDSHAKE_TIMEOUT * 0.9 <= after for after in gone.values()), gone


def _closed(sock) -> bool:
    """Whether the server closed or reset ``sock`` (it sends nothing before)."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True

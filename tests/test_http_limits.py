"""What one client of the API port can make the server hold is bounded: the request line and
headers (414, 431), answers it does not read, requests it pipelines, connections per address;
and what a closed connection held is freed at once, without waiting for the cyclic GC."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import time
import weakref

import pytest

from contract import wait_until
from harness import Server
from processes import rss_bytes
from rawhttp import (SMALL_BUFFER, error_of, open_socket, read_response, request,
                     send_ignoring_close)
from shardcast.config import Config
from shardcast.http_limits import HttpLimits
from shardcast.http_server import LINGER_TIME, HttpProtocol
from shardcast.http_messages import Response

URL_LIMIT = 2048
HEADER_LIMIT = 8192
HEADER_COUNT = 20
PER_ADDRESS = 4
CLIENT = "127.0.0.2"     # an address of its own: the harness' connections come from 127.0.0.1
BUNDLE = "/static/swagger-ui/swagger-ui-bundle.js"    # a 1.5 MB answer to a 60-byte request
RSS_BOUND = 40 * 2**20
MANY_HEADERS = {f"x-h{n}": "v" for n in range(10_000)}
BIG_HEADER = {"x-big": "v" * 50_000}


@pytest.fixture(scope="module")
def limited(server_pool):
    return server_pool.get(1, SHARDCAST_MAX_URL_SIZE=URL_LIMIT,
                           SHARDCAST_MAX_HEADER_SIZE=HEADER_LIMIT,
                           SHARDCAST_MAX_HEADERS=HEADER_COUNT)


@pytest.fixture(scope="module")
def capped():
    server = Server(1, env={"SHARDCAST_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS)}).start()
    yield server
    server.stop()


def supervisor_rss(server) -> int:
    return rss_bytes([server.process.pid])


# -- request line and headers ---------------------------------------------------------------

def test_url_over_max_url_size_is_414_naming_the_limit(limited):
    with open_socket(limited.api_port) as sock:
        sock.sendall(request("GET", "/" + "a" * 100_000))
        message = error_of(sock, 414)
        assert str(URL_LIMIT) in message and "max_url_size" in message
        assert sock.recv(1) == b""


@pytest.mark.parametrize("refused, status", [
    (request("GET", "/" + "a" * 100_000), 414),
    (request("GET", "/health", MANY_HEADERS), 431),
    (request("GET", "/health", BIG_HEADER), 431),
], ids=["long-url", "many-headers", "big-header"])
def test_a_refused_request_still_being_sent_ends_in_a_clean_close(limited, refused, status):
    """Refused before the client has sent it all, the request is read and dropped after the
    answer, so the connection ends with a FIN, never a reset that can destroy the answer
    (a plain close reset about one in six of these)."""
    for _ in range(20):
        with open_socket(limited.api_port) as sock:
            sock.sendall(refused)
            assert error_of(sock, status)
            assert sock.recv(1) == b""


def test_a_client_that_does_not_close_after_a_refusal_is_let_go(capped):
    """The server reads what a refused client sends for LINGER_TIME at most: clients that
    keep their sockets open after the answer do not keep their places."""
    held = []
    try:
        for _ in range(PER_ADDRESS):
            sock = open_socket(capped.api_port, source=CLIENT)
            held.append(sock)
            sock.sendall(b"GET /health HTTP/1.1\r\n\x00\r\n\r\n")
            error_of(sock, 400)
        held.append(wait_until(lambda: served(capped.api_port), timeout=LINGER_TIME + 3))
    finally:
        for sock in held:
            sock.close()


def test_endless_url_is_refused_after_the_limit(limited):
    with open_socket(limited.api_port) as sock:
        send_ignoring_close(sock, b"GET /" + b"a" * (8 << 20))
        assert "max_url_size" in error_of(sock, 414)


def test_too_many_headers_is_431_naming_the_limit(limited):
    with open_socket(limited.api_port) as sock:
        send_ignoring_close(sock, request("GET", "/health", MANY_HEADERS))
        message = error_of(sock, 431)
        assert str(HEADER_COUNT) in message and "max_headers" in message


def test_header_over_max_header_size_is_431_naming_the_limit(limited):
    with open_socket(limited.api_port) as sock:
        send_ignoring_close(sock, request("GET", "/health", BIG_HEADER))
        message = error_of(sock, 431)
        assert str(HEADER_LIMIT) in message and "max_header_size" in message


def test_endless_header_is_refused_after_the_limit(limited):
    with open_socket(limited.api_port) as sock:
        send_ignoring_close(sock, b"GET /health HTTP/1.1\r\nx-endless: " + b"v" * (8 << 20))
        assert "max_header_size" in error_of(sock, 431)


def test_requests_within_the_limits_are_served(limited):
    headers = {f"x-h{n}": "v" * 100 for n in range(HEADER_COUNT - 2)}
    with open_socket(limited.api_port) as sock:
        sock.sendall(request("GET", "/openapi.json?" + "q" * (URL_LIMIT - 20), headers))
        assert read_response(sock)[0] == 200


def test_header_floods_leave_no_memory_behind(limited):
    """Three clients each send 24 MB of small headers and leave: nothing of it stays."""
    baseline = supervisor_rss(limited)
    flood = b"GET /health HTTP/1.1\r\n" + b"".join(b"x-%d: v\r\n" % n for n in range(2_000_000))
    for _ in range(3):
        with open_socket(limited.api_port) as sock:
            send_ignoring_close(sock, flood)
    assert supervisor_rss(limited) - baseline < RSS_BOUND
    assert limited.get("/info").status_code == 200


# -- answers the client does not read -------------------------------------------------------

def test_unread_answers_stay_bounded_and_all_arrive_in_order(limited):
    """50 pipelined requests for a 1.5 MB file, unread: the server stops reading instead of
    queueing 75 MB of answers; once the client reads, every answer arrives, in order."""
    count = 50
    baseline = supervisor_rss(limited)
    with open_socket(limited.api_port, receive_buffer=SMALL_BUFFER) as sock:
        sock.sendall(b"".join(request("GET", f"{BUNDLE}?n={n}") for n in range(count)))
        peak = baseline
        for _ in range(10):     # the client reads nothing for a second
            peak = max(peak, supervisor_rss(limited))
            time.sleep(0.1)
        assert peak - baseline < RSS_BOUND
        sizes = set()
        for _ in range(count):
            status, _, body = read_response(sock)
            assert status == 200
            sizes.add(len(body))
    assert len(sizes) == 1 and sizes.pop() > 1_000_000


KERNEL_SEND_BUFFER = 131072      # kernel_send_buffer's default, which Linux doubles


def unsent(server_port: int, client_port: int) -> int:
    """The bytes the kernel holds unsent on the server's end of a loopback connection (its
    Send-Q, as ``ss`` reads it from the kernel)."""
    shown = subprocess.run(
        ["ss", "-tnH", "state", "established",
         f"( sport = :{server_port} and dport = :{client_port} )"],
        capture_output=True, text=True, check=True, timeout=10).stdout.split()
    return int(shown[1])


def test_unread_answers_leave_little_in_the_kernel(limited):
    """The kernel's send buffer of an API connection is kernel_send_buffer too: with Linux's
    own sizing it held 2.8 MB of this client's unread answers."""
    with open_socket(limited.api_port, receive_buffer=SMALL_BUFFER) as sock:
        sock.sendall(b"".join(request("GET", f"{BUNDLE}?n={n}") for n in range(10)))
        time.sleep(1)           # the client reads nothing: the server's end fills
        held = unsent(limited.api_port, sock.getsockname()[1])
    assert 0 < held <= 2 * KERNEL_SEND_BUFFER


# -- connections per address --------------------------------------------------------------

def served(port: int):
    """A connection from CLIENT that got its answer, or None if it was refused."""
    sock = open_socket(port, source=CLIENT)
    sock.sendall(request("GET", "/openapi.json"))
    if read_response(sock)[0] == 200:
        return sock
    sock.close()
    return None


def test_connections_over_max_connections_per_address_are_refused(capped):
    held = [served(capped.api_port) for _ in range(PER_ADDRESS)]
    assert all(held)
    try:
        with open_socket(capped.api_port, source=CLIENT) as extra:
            message = error_of(extra, 429)
            assert f"{CLIENT} holds {PER_ADDRESS}" in message
            assert "max_connections_per_address" in message
        held.pop().close()      # makes room once the server sees it closed
        held.append(wait_until(lambda: served(capped.api_port), timeout=5))
    finally:
        for sock in held:
            sock.close()


# -- what a closed connection held ----------------------------------------------------------

class Transport:
    """Enough of an asyncio transport for one protocol instance."""

    def __init__(self) -> None:
        self.sent = b""
        self.closed = False

    def get_extra_info(self, name: str, default=None):
        return ("127.0.0.1", 40000) if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.sent += data

    def writelines(self, parts) -> None:
        self.sent += b"".join(parts)

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high=None, low=None) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    abort = close


def test_closed_connection_is_freed_without_the_cyclic_gc():
    """The protocol and its parser reference each other; a closed connection breaks that, so
    what a client sent is freed as it leaves (the tuned cyclic GC runs rarely)."""
    async def scenario() -> weakref.ref:
        protocol = HttpProtocol(lambda request: Response(200), HttpLimits(Config()),
                                lambda *_: None)
        protocol.connection_made(Transport())
        protocol.data_received(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /he")
        protocol.connection_lost(None)
        return weakref.ref(protocol)

    gc.disable()
    try:
        assert asyncio.run(scenario())() is None
    finally:
        gc.enable()

"""A websocket client that reads the server's frames as a stream of envelopes."""

from __future__ import annotations

import collections
import socket
import time
from json import loads as json_loads
from typing import Any, Callable
from urllib.parse import urlsplit

from websockets.sync.client import ClientConnection, connect as ws_connect

RECEIVE_TIMEOUT = 4.0


class WsClient:
    """A websocket client that turns server frames (JSON arrays) into a stream of envelopes."""

    def __init__(self, connection: ClientConnection):
        self.connection = connection
        self.pending: collections.deque[dict] = collections.deque()

    def __enter__(self) -> "WsClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    def recv_frame(self, timeout: float = RECEIVE_TIMEOUT) -> list:
        """The next raw server frame, decoded (heartbeats ``[]`` included)."""
        try:
            raw = self.connection.recv(timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"no websocket frame within {timeout} s") from None
        frame = json_loads(raw)
        assert isinstance(frame, list), f"server frame is not a JSON array: {raw!r}"
        return frame

    def next(self, timeout: float = RECEIVE_TIMEOUT) -> dict:
        """The next envelope; heartbeats are skipped, coalesced frames flattened."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no envelope within {timeout} s")
            self.pending.extend(self.recv_frame(remaining))
        return self.pending.popleft()

    def take(self, count: int, timeout: float = RECEIVE_TIMEOUT) -> list[dict]:
        deadline = time.monotonic() + timeout
        return [self.next(max(deadline - time.monotonic(), 0.001)) for _ in range(count)]

    def until(self, predicate: Callable[[dict], bool], timeout: float = RECEIVE_TIMEOUT) -> tuple[list[dict], dict]:
        """Read until an envelope matches: (envelopes before it, the match)."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            envelope = self.next(max(deadline - time.monotonic(), 0.001))
            if predicate(envelope):
                return before, envelope
            before.append(envelope)

    def until_uuid(self, message_uuid: str, timeout: float = RECEIVE_TIMEOUT) -> list[dict]:
        """Envelopes received before the one carrying ``message_uuid`` (a sentinel)."""
        before, _ = self.until(lambda envelope: envelope.get("uuid") == message_uuid, timeout)
        return before

    def expect_quiet(self, wait: float = 0.3) -> None:
        """Nothing but heartbeats arrives within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                raw = self.connection.recv(timeout=remaining)
            except TimeoutError:
                return
            self.pending.extend(json_loads(raw))
        raise AssertionError(f"unexpected envelopes: {list(self.pending)}")


def open_websocket(url: str) -> WsClient:
    connection = ws_connect(
        url,
        open_timeout=5,
        close_timeout=1,
        ping_interval=None,
        proxy=None,
        compression=None,
        max_size=None,
        legacy=True,  # a plain connection object; WsClient closes it
    )
    return WsClient(connection)


def raw_handshake(url: str) -> socket.socket:
    """A bare socket that completed the websocket handshake, and does nothing by itself."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
    sock.sendall((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                  "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock

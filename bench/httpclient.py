"""A lean keep-alive HTTP/1.1 client (asyncio + httptools) for the server API.

One ``HttpConnection`` carries requests in order and reconnects after the server closed it:
``request`` awaits one answer, ``submit`` pipelines requests and hands each answer to a callback
(the open-loop publisher, which must not wait for answers to keep its schedule). ``ApiClient``
signs requests and hands out connections from a pool.

After each request the socket is put in TCP quick-ACK mode. A server that writes a response's
headers and body in two segments without TCP_NODELAY (gevent's pywsgi, under Channelstream,
does) otherwise holds the body until the client's delayed ACK, 40 ms later, on every
keep-alive request; curl and requests see the same stall. Quick ACKs make the bench measure
the server's work instead of that timer; they change nothing for a server that answers in one
write.
"""
from __future__ import annotations

import asyncio
import os
from collections import deque
import socket
import time
from typing import Any, Callable
from urllib.parse import urlsplit

import httptools
import orjson

from shardcast.signing import sign_compat

REQUEST_TIMEOUT = 30.0
SIGNATURE_HEADER = "x-channelstream-secret"
NO_ANSWER = 0     # the status an answer callback gets when the request failed (body: why)

Answer = Callable[[int, bytes], None]   # (status, body) of one request


class HttpError(Exception):
    """A request failed: no answer, a broken connection, or an unexpected status."""


class Signer:
    """Channelstream-style signatures, made once per second rather than per request."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.second = -1
        self.value = ""

    def header(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.second, self.value = now, sign_compat(self.secret, now=now)
        return self.value


class HttpConnection(asyncio.Protocol):
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.socket: socket.socket | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.pending: deque[Answer] = deque()   # one per request sent and not yet answered
        self.body: list[bytes] = []

    async def connect(self) -> None:
        """Connect unless connected (a closed connection is opened again)."""
        if self.transport is not None and not self.transport.is_closing():
            return
        # Kept: Python 3.11's get_running_loop() makes a getpid syscall each time.
        self.loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.body = []
        try:
            await self.loop.create_connection(lambda: self, self.host, self.port)
        except OSError as error:
            raise HttpError(f"cannot connect to {self.host}:{self.port}: {error}") from None

    def submit(self, data: bytes, answers: list[Answer]) -> None:
        """Send raw requests (``answers`` has one callback for each) without waiting for the
        answers of earlier ones; the connection must be connected."""
        self.pending.extend(answers)
        self.transport.write(data)
        self._quick_ack()

    async def request(self, data: bytes, timeout: float = REQUEST_TIMEOUT) -> tuple[int, bytes]:
        """Send one raw request; return (status, body)."""
        await self.connect()
        waiter = self.loop.create_future()
        self.submit(data, [lambda status, body: waiter.done() or waiter.set_result((status, body))])
        timer = self.loop.call_later(timeout, self._fail, "no answer within %.0f s" % timeout)
        try:
            status, body = await waiter
        finally:
            timer.cancel()
        if status == NO_ANSWER:
            raise HttpError(body.decode())
        return status, body

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _quick_ack(self) -> None:
        if self.socket is not None:
            try:
                self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            except OSError:
                self.socket.close()
                self.socket = None

    def _fail(self, reason: str) -> None:
        """Every request not answered yet gets NO_ANSWER; the connection closes."""
        pending, self.pending = self.pending, deque()
        for answer in pending:
            answer(NO_ANSWER, reason.encode())
        self.close()

    # asyncio.Protocol and httptools callbacks --------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.socket = None
        if hasattr(socket, "TCP_QUICKACK"):
            # A duplicate of the descriptor as a plain socket: uvloop's own socket object
            # builds and drops a socket per setsockopt (measured: 9% of a publisher's CPU).
            self.socket = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None
        self.transport = None
        self._fail("connection closed by the server")

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(f"bad HTTP response: {error}")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body, self.body = b"".join(self.body), []
        if self.pending:
            self.pending.popleft()(self.parser.get_status_code(), body)
        if not self.parser.should_keep_alive():
            self.close()


class ApiClient:
    """Signed JSON calls to one server over a pool of keep-alive connections (unsigned with an
    empty secret: Nchan's endpoints take none)."""

    def __init__(self, api_url: str, secret: str, connections: int = 1) -> None:
        parts = urlsplit(api_url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = parts.netloc
        self.signer = Signer(secret) if secret else None
        self.idle: asyncio.Queue[HttpConnection] = asyncio.Queue()
        self.connections = [HttpConnection(self.host, self.port) for _ in range(connections)]
        for connection in self.connections:
            self.idle.put_nowait(connection)

    def encode(self, method: str, path: str, body: bytes = b"") -> bytes:
        signature = f"{SIGNATURE_HEADER}: {self.signer.header()}\r\n" if self.signer else ""
        head = (f"{method} {path} HTTP/1.1\r\nHost: {self.host_header}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"{signature}\r\n")
        return head.encode("latin-1") + body

    async def call(self, method: str, path: str, payload: Any = None) -> Any:
        """A JSON call that must answer 200; its decoded body."""
        body = b"" if payload is None else orjson.dumps(payload)
        connection = await self.idle.get()
        try:
            status, answer = await connection.request(self.encode(method, path, body))
        finally:
            self.idle.put_nowait(connection)
        if status != 200:
            raise HttpError(f"{method} {path} -> {status}: {answer[:300]!r}")
        return orjson.loads(answer) if answer else None

    def close(self) -> None:
        for connection in self.connections:
            connection.close()

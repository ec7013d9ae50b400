"""A lean HTTP/1.1 server protocol on httptools: parse, dispatch, answer in order."""
from __future__ import annotations

import asyncio
import functools
import logging
from http import HTTPStatus
from typing import Awaitable, Callable, Union
from urllib.parse import parse_qs

import httptools
import orjson

log = logging.getLogger("shardcast.http")
PHRASES = {status.value: status.phrase for status in HTTPStatus}
# Header names as clients usually spell them, lowered once instead of on every request.
KNOWN_NAMES = {spelling.encode(): spelling.lower() for name in (
    "Host", "Content-Type", "Content-Length", "Connection", "User-Agent", "Accept",
    "Accept-Encoding", "Origin", "Cookie", "X-Channelstream-Secret", "X-Shardcast-Signature",
) for spelling in (name, name.lower())}
DISCARD_FACTOR = 8   # read at most this many times the body limit of a refused request


class Request:
    __slots__ = ("method", "target", "path", "query", "headers", "body", "client", "keep_alive")

    def __init__(self, method: str, url: bytes, headers: dict[str, str], body: bytes,
                 client: str, keep_alive: bool = True) -> None:
        self.method = method
        self.target = url.decode("latin-1")   # path and query exactly as sent (signed requests)
        path, _, query = self.target.partition("?")
        self.path = path
        self.query = ({k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
                      if query else {})
        self.headers = headers
        self.body = body
        self.client = client
        self.keep_alive = keep_alive


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes = b"", content_type: str = "application/json",
                 headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}


def json_response(value: object, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value))


@functools.lru_cache(maxsize=None)   # a handful of statuses; PHRASES bounds it
def _status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {PHRASES[status]}\r\n"


Handler = Callable[[Request], Union[Response, Awaitable[Response]]]


class HttpProtocol(asyncio.Protocol):
    """One client connection: keep-alive, pipelining in order, bounded bodies."""

    def __init__(self, app: Handler, max_body: int, decorate: Callable[[Request, Response], None]):
        self.app = app
        self.max_body = max_body
        self.decorate = decorate
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.queue: list[Request] = []
        self.busy = False
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.refused = False

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(HTTPStatus.BAD_REQUEST, "Upgrades are served on the shard websocket ports")
        except httptools.HttpParserError:
            self._fail(HTTPStatus.BAD_REQUEST, "Malformed HTTP request")

    # -- httptools callbacks ----------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = KNOWN_NAMES.get(name) or name.decode("latin-1").lower()
        self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        length = self.headers.get("content-length", "0")
        if length.isdigit() and int(length) > self.max_body:
            self._too_large()

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.refused:
            if self.size > DISCARD_FACTOR * self.max_body:
                self._close()
        elif self.size > self.max_body:
            self._too_large()
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        if self.refused:
            self._close()
            return
        request = Request(self.parser.get_method().decode(), self.url, self.headers,
                          b"".join(self.body), self.client, self.parser.should_keep_alive())
        self._reset()
        self.queue.append(request)
        if not self.busy:
            self._next()

    def _too_large(self) -> None:
        """Answer 413 at once, then read and drop the rest of the body before closing, so
        the client gets to read the answer (closing early would reset the connection)."""
        self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                   f"Request body is over the {self.max_body} byte limit", close=False)
        self.refused = True
        self.body = []

    # -- dispatch -----------------------------------------------------------------

    def _next(self) -> None:
        while self.queue and self.transport is not None:
            request = self.queue.pop(0)
            try:
                result = self.app(request)
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                result = json_response({"_server": ["Internal error"]}, 500)
            if isinstance(result, Response):
                self._send(request, result)
                continue
            self.busy = True
            self.transport.pause_reading()
            asyncio.ensure_future(self._finish(request, result))
            return

    async def _finish(self, request: Request, pending: Awaitable[Response]) -> None:
        try:
            response = await pending
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = json_response({"_server": ["Internal error"]}, 500)
        self.busy = False
        if self.transport is None:
            return
        self._send(request, response)
        if self.transport is not None:      # None: the client asked to close after this
            self.transport.resume_reading()
            self._next()

    def _send(self, request: Request, response: Response) -> None:
        self.decorate(request, response)
        head = (f"{_status_line(response.status)}content-type: {response.content_type}\r\n"
                f"content-length: {len(response.body)}\r\n")
        for name, value in response.headers.items():
            head += f"{name}: {value}\r\n"
        if not request.keep_alive:
            head += "connection: close\r\n"
        if self.transport is not None:
            self.transport.write(f"{head}\r\n".encode("latin-1") + response.body)
            if not request.keep_alive:
                self._close()

    def _fail(self, status: HTTPStatus, message: str, close: bool = True) -> None:
        """Answer a request we cannot parse or accept; the connection closes after it."""
        if self.transport is None:
            return
        body = orjson.dumps({"request": [message]})
        self.transport.write(
            f"HTTP/1.1 {status.value} {status.phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\naccess-control-allow-origin: *\r\n"
            f"connection: close\r\n\r\n".encode() + body)
        if close:
            self._close()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

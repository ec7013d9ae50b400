"""A lean HTTP/1.1 server protocol on httptools: parse, dispatch, answer in order, and hold
no more of a client than its limits allow (sizes and timeouts: ``http_limits``)."""
from __future__ import annotations

import asyncio
import collections
import logging
from http import HTTPStatus
from typing import Awaitable, Callable

import httptools
import orjson

from .http_limits import BODY, FRESH, HEAD, IDLE, HttpLimits
from .http_messages import Handler, Request, Response, date_line, json_response, status_line

log = logging.getLogger("shardcast.http")
# Header names as clients usually spell them, lowered once instead of on every request.
KNOWN_NAMES = {spelling.encode(): spelling.lower() for name in (
    "Host", "Content-Type", "Content-Length", "Connection", "User-Agent", "Accept",
    "Accept-Encoding", "Origin", "Cookie", "Expect", "X-Channelstream-Secret",
    "X-Shardcast-Signature",
) for spelling in (name, name.lower())}
DISCARD_FACTOR = 8   # read at most this many times the body limit of a refused request
# The parser takes this much at a time, and no more while an answer is awaited or the client
# does not read: what waits parsed is a slice's worth of requests (the rest of a read waits
# unparsed), and an unfinished head is measured within a slice.
PARSE_SLICE = 4096
COPY_LIMIT = 16384   # a larger body leaves beside its head, uncopied (static files are shared)
# A closing connection reads and drops what its client still sends for this long, and this
# much, at most (see HttpProtocol._close).
LINGER_TIME = 2.0
LINGER_BYTES = 1 << 20
# The interim answer to "Expect: 100-continue": clients that send it (libcurl for large bodies,
# among others) wait for it before the body, a second by default when it does not come.
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class StopParsing(Exception):
    """Raised in a parser callback once the connection is answered for good."""


class HttpProtocol(asyncio.Protocol):
    """One client connection: keep-alive, pipelining in order, bounded sizes and times.

    Reading pauses while a handler's answer is awaited or the client does not read its answers
    (pause_writing): a connection then holds one slice of parsed requests, the rest of one read
    unparsed and what the transport buffers past its high-water mark. An answer that waits
    (``Response.after``) holds the later ones back, while their requests go on being handled.
    One timer enforces the timeout of what the client owes: its headers, its body, its next
    request, or reading ours; none runs while the client waits for us.
    """

    def __init__(self, app: Handler, limits: HttpLimits,
                 decorate: Callable[[Request, Response], None]) -> None:
        self.app = app
        self.limits = limits
        self.decorate = decorate
        self.loop = asyncio.get_running_loop()
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.admitted = False
        self.queue: collections.deque[Request] = collections.deque()
        self.busy = False               # a handler's answer is awaited
        # Answers that wait, in order: (Response.after, bytes, keep-alive)
        self.held: collections.deque[tuple[asyncio.Future | None, tuple[bytes, ...], bool]] = (
            collections.deque())
        self.writing_paused = False     # the client does not take our answers as fast
        self.closing = False
        self.unparsed: bytes | memoryview | None = None   # read while parsing was held
        self.reading = FRESH            # what the client is sending
        self.timed = FRESH              # what the client's time runs for (None: a new part)
        self.since = 0.0                # since when
        self.head_bytes = 0             # of an unfinished head, counted a slice at a time
        self.send_since = 0.0           # when it last took our answers, while they wait
        self.dropped = 0                # bytes read and dropped while closing
        self.expecting = False          # the client waits for CONTINUE before its body
        self.timer: asyncio.TimerHandle | None = None
        self._reset()

    def _reset(self) -> None:
        self.url: list[bytes] = []
        self.url_size = 0
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []
        self.size = 0
        self.refused = False

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = peer[0] if peer else ""
        refusal = self.limits.admit(self.client)
        if refusal is not None:
            self._fail(HTTPStatus.TOO_MANY_REQUESTS, refusal)
            return
        self.admitted = True
        self._await_client()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admitted:
            self.limits.release(self.client)
            self.admitted = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # The parser holds this protocol's callbacks: dropping it breaks that cycle, so what
        # the client sent is freed now, not at the next (rare, tuned) cyclic GC pass.
        self.transport = self.parser = self.unparsed = None
        self.closing = True
        self.queue.clear()
        self.held.clear()
        self._reset()

    def pause_writing(self) -> None:
        self.writing_paused = True
        self.transport.pause_reading()
        self._await_send()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.closing:    # it reads on: the send timeout starts again for the rest
            self._await_send()
        else:
            self.loop.call_soon(self._resume)   # not inside a write from a parser callback

    # -- parsing ----------------------------------------------------------------

    def data_received(self, data: bytes | memoryview) -> None:
        """Feed the parser a slice at a time while requests can be answered; keep the rest."""
        if self.closing:
            self._drop(len(data))
            return
        if self.unparsed is not None:   # read before the pause took effect (TLS buffers)
            self.unparsed = bytes(self.unparsed) + data
            return
        if len(data) > PARSE_SLICE:
            data = memoryview(data)     # its slices copy nothing
        for start in range(0, len(data), PARSE_SLICE):
            if self.busy or self.writing_paused or self.closing:
                if not self.closing:
                    self.unparsed = data[start:]
                    self.transport.pause_reading()
                return
            piece = data[start:start + PARSE_SLICE]
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:
                self._fail(HTTPStatus.BAD_REQUEST,
                           "Upgrades are served on the shard websocket ports")
            except httptools.HttpParserError:   # StopParsing arrives wrapped in one
                self._fail(HTTPStatus.BAD_REQUEST, "Malformed HTTP request")
            else:
                if self.expecting:              # its head ended this slice, and no body came
                    self._continue()
                if self.reading != self.timed:  # a part began in this slice: its time too
                    self.timed = self.reading
                    self.since = self.loop.time()
                elif self.reading == HEAD:
                    self._measure_head(len(piece))

    def _measure_head(self, size: int) -> None:
        """Check a head that spans this whole slice: its size (the parser gathers a header's
        pieces itself before on_header; the slice where it began is not counted) and its
        headers (a head within one slice is checked once complete)."""
        limits = self.limits
        if len(self.headers) > limits.max_headers:
            self._fail(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, limits.too_many_headers)
        else:
            self.head_bytes += size
            if self.head_bytes > limits.max_head:
                self._fail(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, limits.head_too_large)

    # -- httptools callbacks ----------------------------------------------------

    def on_message_begin(self) -> None:
        if self.closing:        # pipelined after a request that closes the connection
            raise StopParsing
        self.reading = HEAD
        self.timed = None
        self.head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url.append(url)
        self.url_size += len(url)
        if self.url_size > self.limits.max_url:
            self._refuse(HTTPStatus.REQUEST_URI_TOO_LONG, self.limits.url_too_long)

    def on_header(self, name: bytes, value: bytes) -> None:
        key = KNOWN_NAMES.get(name) or name.decode("latin-1").lower()
        self.headers[key] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self.reading = BODY
        if len(self.headers) > self.limits.max_headers:
            self._refuse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, self.limits.too_many_headers)
        length = self.headers.get("content-length", "0")
        if length.isdigit() and int(length) > self.limits.max_body:
            self._too_large()
        self.expecting = (self.headers.get("expect", "").lower() == "100-continue"
                          and not self.refused and self.parser.get_http_version() == "1.1")

    def on_body(self, body: bytes) -> None:
        self.expecting = False          # it sent its body without waiting
        self.size += len(body)
        if self.refused:
            if self.size > DISCARD_FACTOR * self.limits.max_body:
                self._close()
                raise StopParsing
        elif self.size > self.limits.max_body:
            self._too_large()
        else:
            self.body.append(body)

    def on_message_complete(self) -> None:
        self.reading = IDLE
        self.timed = None
        self.expecting = False          # no body (or all of it) came with the head
        if self.refused:
            self._close()
            raise StopParsing
        parser = self.parser
        request = Request(parser.get_method().decode(), b"".join(self.url), self.headers,
                          b"".join(self.body), self.client, parser.should_keep_alive(),
                          parser.get_http_version() == "1.0")
        self._reset()
        self.queue.append(request)
        self._next()

    def _continue(self) -> None:
        """Ask for the body (an interim answer, in its place after those held before it)."""
        self.expecting = False
        self._queue((CONTINUE,), True)

    def _too_large(self) -> None:
        """Answer 413 at once, then read and drop the rest of the body before closing, so
        the client gets to read the answer (closing early would reset the connection)."""
        self._fail(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, self.limits.body_too_large, close=False)
        self.refused = True
        self.body = []

    def _refuse(self, status: HTTPStatus, message: str) -> None:
        self._fail(status, message)
        raise StopParsing

    # -- dispatch -----------------------------------------------------------------

    def _next(self) -> None:
        """Answer queued requests in order; an awaited answer holds the rest back."""
        while self.queue:
            if self.busy or self.writing_paused or self.closing:
                return
            request = self.queue.popleft()
            try:
                result = self.app(request)
            except Exception:
                log.exception("handler failed for %s %s", request.method, request.path)
                result = json_response({"_server": ["Internal error"]}, 500)
            if isinstance(result, Response):
                self._send(request, result)
                continue
            self.busy = True            # no timeout meanwhile: a long poll is held on purpose
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
        if self.closing:
            return
        self._send(request, response)
        self._resume()

    def _resume(self) -> None:
        """Our side is free again: answer what waits, parse what was held back, read on."""
        if self.closing or self.busy or self.writing_paused:
            return
        self._next()
        if self.busy or self.writing_paused or self.closing:
            return
        self._await_client()
        held, self.unparsed = self.unparsed, None
        if held is not None:
            self.data_received(held)
        if not (self.closing or self.busy or self.writing_paused or self.unparsed is not None):
            self.transport.resume_reading()

    def _send(self, request: Request, response: Response) -> None:
        self.decorate(request, response)
        head = (f"{status_line(response.status)}{date_line()}"
                f"content-type: {response.content_type}\r\n"
                f"content-length: {len(response.body)}\r\n")
        for name, value in response.headers.items():
            head += f"{name}: {value}\r\n"
        if not request.keep_alive:
            head += "connection: close\r\n"
        elif request.http10:
            head += "connection: keep-alive\r\n"
        encoded = f"{head}\r\n".encode("latin-1")
        if request.method == "HEAD":    # the length GET would send, and no body
            parts: tuple[bytes, ...] = (encoded,)
        elif len(response.body) > COPY_LIMIT:
            parts = (encoded, response.body)
        else:
            parts = (encoded + response.body,)
        self._queue(parts, request.keep_alive, response.after)

    def _queue(self, parts: tuple[bytes, ...], keep_alive: bool,
               wait: asyncio.Future | None = None) -> None:
        """Write an answer now, or, while ``wait`` or an answer before it is pending, hold it
        in its place in the stream."""
        if wait is None and not self.held:
            self._write(parts, keep_alive)
            return
        # It waits, and later answers wait behind it; the requests after it are handled
        # meanwhile, unless this answer closes the connection.
        self.held.append((wait, parts, keep_alive))
        if wait is not None:
            wait.add_done_callback(self._release)
        if not keep_alive:
            self.busy = True
            self.transport.pause_reading()

    def _write(self, parts: tuple[bytes, ...], keep_alive: bool) -> None:
        if len(parts) > 1:
            self.transport.writelines(parts)
        else:
            self.transport.write(parts[0])
        if not keep_alive:
            self._close()

    def _release(self, _: object = None) -> None:
        """Send the held answers whose wait is over, in order; then go on as after any."""
        held = self.held
        while held and not self.closing and (held[0][0] is None or held[0][0].done()):
            _, parts, keep_alive = held.popleft()
            self._write(parts, keep_alive)
        if not held:
            self._resume()

    def _send_held(self) -> None:
        """The connection is being closed: what is held leaves now, ahead of the end."""
        while self.held:
            _, parts, _ = self.held.popleft()
            self._write(parts, True)

    def _fail(self, status: HTTPStatus, message: str, close: bool = True) -> None:
        """Answer a request we cannot parse or accept; the connection closes after it."""
        if self.closing:
            return
        self._send_held()
        body = orjson.dumps({"request": [message]})
        self.transport.write(
            f"HTTP/1.1 {status.value} {status.phrase}\r\n{date_line()}"
            f"content-type: application/json\r\n"
            f"content-length: {len(body)}\r\naccess-control-allow-origin: *\r\n"
            f"connection: close\r\n\r\n".encode() + body)
        if close:
            self._close()

    def _close(self) -> None:
        """Close once the answers are out; a client that does not take them within
        http_send_timeout is cut off (a plain close would wait for it forever).

        The client may still be sending (a request refused before its end, pipelined ones).
        A socket closed with unread input resets the connection, and the reset can destroy
        our answer before the client reads it: so our side is shut (FIN after the answers)
        and what comes meanwhile is dropped, until the client closes, for LINGER_TIME and
        LINGER_BYTES at most. A connection refused before it sent anything closes at once.
        """
        if self.closing:
            return
        self._send_held()
        self.closing = True
        transport = self.transport
        if self.reading != FRESH and transport.can_write_eof():
            self.unparsed = None
            transport.write_eof()
            transport.resume_reading()
            self.loop.call_later(LINGER_TIME, transport.close)
        else:
            transport.close()
        self._await_send()

    def _drop(self, size: int) -> None:
        self.dropped += size
        if self.dropped > LINGER_BYTES:
            self.transport.close()

    # -- timeouts -------------------------------------------------------------------
    # The client's time runs from ``since`` (for its part: ``timed``, set after each slice
    # parsed) or from ``send_since`` (our answers wait for it); the timer derives the deadline
    # when it fires. It wakes every ``limits.tick`` at the latest, and every timeout is at
    # least that, so moving a deadline costs an attribute store, never a new timer.

    def _await_client(self) -> None:
        """Nothing of ours is pending: the client's time for its part starts now."""
        self.timed = self.reading
        self.since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(self.since + self.limits.tick, self._on_timer)

    def _await_send(self) -> None:
        self.send_since = self.loop.time()
        if self.timer is None:
            self.timer = self.loop.call_at(self.send_since + self.limits.tick, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        limits = self.limits
        if self.transport is None:
            return
        sending = self.closing or self.writing_paused
        if sending:
            deadline = self.send_since + limits.send_timeout
        elif self.busy or self.held:
            return              # the client waits for us; _await_client() starts the timer again
        else:
            deadline = self.since + limits.timeouts[self.reading]
        now = self.loop.time()
        if now < deadline:
            self.timer = self.loop.call_at(min(deadline, now + limits.tick), self._on_timer)
        elif sending:
            self.transport.abort()      # it does not read: drop what it would not take
        elif limits.late[self.reading] is not None:
            self._fail(HTTPStatus.REQUEST_TIMEOUT, limits.late[self.reading])
        else:
            self._close()

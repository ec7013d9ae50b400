"""The server side of RFC 6455 for the shards: the HTTP upgrade, then frames.

A protocol of our own on uvloop rather than picows' server, measured on this machine: 1.3 KB
against 6.0 KB of RSS per idle websocket (picows keeps a 2 KB read and a 1 KB write buffer and
several objects for each socket). What a shard sends is framed once per flush into immutable
bytes shared by every subscriber, so a full socket never holds a buffer that is written again.
Client frames are small (heartbeats, pongs, close): they are parsed here, and only control
frames' payloads are unmasked, the only ones read.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging

import orjson

from .http_messages import date_line

log = logging.getLogger("shardcast.websocket")
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HANDSHAKE = 8192          # bytes of request line and headers
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL, GOING_AWAY, PROTOCOL_ERROR, TOO_BIG = 1000, 1001, 1002, 1009
TOO_SLOW = 3008             # a client that cannot keep up (as Centrifugo)
OPENING, OPEN, CLOSING, CLOSED = range(4)
PING_FRAME = b"\x89\x00"
HIGH_WATER = 64 * 1024        # bytes in a socket's own buffer before it is paused (uvloop's)


def frame(opcode: int, payload: bytes) -> bytes:
    """A whole, unmasked server frame."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 65536:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


def close_frame(code: int) -> bytes:
    return frame(CLOSE, code.to_bytes(2, "big"))


def _unmask(payload: bytes, mask: bytes) -> bytes:
    return bytes(byte ^ mask[index & 3] for index, byte in enumerate(payload))


def refusal(status: int, reason: str, body: bytes, extra: str = "") -> bytes:
    """An HTTP answer to an upgrade that is not taken; the connection closes after it."""
    return (f"HTTP/1.1 {status} {reason}\r\n{date_line()}content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n").encode() + body


class Settings:
    """What every websocket of one server shares (one reference each, not a copy):
    ``max_backlog`` bounds what one peer may leave unread (past it: ``overflowed``)."""

    def __init__(self, max_frame: int, handshake_timeout: float, close_grace: float,
                 max_backlog: int) -> None:
        self.max_frame = max_frame
        self.handshake_timeout = handshake_timeout
        self.close_grace = close_grace
        self.max_backlog = max_backlog
        self.high_water = min(HIGH_WATER, max_backlog)
        self.loop = asyncio.get_running_loop()


class WebSocket(asyncio.Protocol):
    """One websocket. A subclass decides on the upgrade (``accept``) and hears what happens
    (``opened``, ``heard_from``, ``closed``); ``write`` sends a whole frame."""

    __slots__ = ("settings", "transport", "state", "buffer", "need", "fragmented", "timer",
                 "queue", "queued")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.transport: asyncio.Transport | None = None
        self.state = OPENING
        self.buffer: bytearray | None = None     # bytes of an incomplete request or frame,
        self.need = 0                            # and how many it takes to go on
        self.fragmented = False                  # a data message's first frame came, not its last
        self.timer: asyncio.TimerHandle | None = None
        # Frames waiting while the socket's own buffer is over its high-water mark (uvloop
        # pauses us at 64 KiB): references to bytes shared with other sockets, so that a close
        # frame can go out behind that little rather than behind everything queued.
        self.queue: list[bytes] | None = None
        self.queued = 0

    # -- hooks ----------------------------------------------------------------------------

    def accept(self, target: str) -> bytes | None:
        """None to take the upgrade of ``target`` (path and query), else the HTTP answer."""
        raise NotImplementedError

    def opened(self) -> None:
        """The handshake is done."""

    def heard_from(self) -> None:
        """The peer sent a frame (any: data, ping, pong)."""

    def closed(self) -> None:
        """The socket is gone."""

    def overflowed(self) -> None:
        """The peer left more than ``max_backlog`` unread: it is not keeping up."""
        self.close(TOO_SLOW)

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # Paused (``queue``) past this: while not paused, the backlog is within max_backlog.
        transport.set_write_buffer_limits(high=self.settings.high_water)
        self.timer = self.settings.loop.call_later(self.settings.handshake_timeout,
                                                   self.abort)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        if buffer is not None:      # a peer trickling bytes in costs one append each, no scan
            seen = len(buffer)
            buffer += data
            if len(buffer) < self.need or (
                    self.state == OPENING and buffer.find(b"\r\n\r\n", max(0, seen - 3)) < 0
                    and len(buffer) <= MAX_HANDSHAKE):
                return
            data, self.buffer = bytes(buffer), None
        if self.state == OPENING:
            self._handshake(data)
        elif self.state in (OPEN, CLOSING):
            self._frames(data)

    def connection_lost(self, exc: Exception | None) -> None:
        was_open = self.state in (OPEN, CLOSING)
        self.state = CLOSED
        self.transport = None
        self.buffer = self.queue = None
        if self.timer is not None:
            self.timer.cancel()
        if was_open:
            self.closed()

    # -- the upgrade ----------------------------------------------------------------------------

    def _handshake(self, data: bytes) -> None:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > MAX_HANDSHAKE:
                self._refuse(refusal(431, "Request Header Fields Too Large",
                                     b'{"request": ["Upgrade request over 8 KB"]}'))
            else:
                self.buffer, self.need = bytearray(data), 0
            return
        lines = data[:end].split(b"\r\n")
        parts = lines[0].split(b" ")
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                return self._not_an_upgrade()
            headers[name.strip().lower()] = value.strip()
        if len(parts) != 3 or parts[0] != b"GET" or not _upgrading(headers):
            return self._not_an_upgrade()
        if headers.get(b"sec-websocket-version") != b"13":
            return self._refuse(refusal(426, "Upgrade Required",
                                        b'{"request": ["Use websocket version 13"]}',
                                        "sec-websocket-version: 13\r\n"))
        key = headers.get(b"sec-websocket-key", b"")
        if not _valid_key(key):
            return self._not_an_upgrade()
        answer = self.accept(parts[1].decode("latin-1"))
        if answer is not None:
            return self._refuse(answer)
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                             b"connection: Upgrade\r\nsec-websocket-accept: " + accept +
                             b"\r\n\r\n")
        self.timer.cancel()
        self.timer = None
        self.state = OPEN
        self.opened()
        rest = data[end + 4:]
        if rest and self.state == OPEN:
            self._frames(rest)

    def _not_an_upgrade(self) -> None:
        self._refuse(refusal(400, "Bad Request", NOT_AN_UPGRADE))

    def _refuse(self, answer: bytes) -> None:
        self.state = CLOSED
        self.transport.write(answer)
        self.transport.close()

    # -- frames from the peer ---------------------------------------------------------------

    def _frames(self, data: bytes) -> None:
        offset, total = 0, len(data)
        while total - offset >= 2:
            first, second = data[offset], data[offset + 1]
            if first & 0x70 or not second & 0x80:     # extensions, or an unmasked client frame
                return self.fail(PROTOCOL_ERROR)
            size, start = second & 0x7F, offset + 2
            need = start + 4            # the header, then the frame: what must be here first
            if size >= 126:
                width = 2 if size == 126 else 8
                need = start + width
                if total < need:
                    break
                size = int.from_bytes(data[start:start + width], "big")
                start += width
            if size > self.settings.max_frame:
                return self.fail(TOO_BIG)
            need = end = start + 4 + size
            if end > total:
                break
            if not self._frame(first & 0x80, first & 0x0F, data, start, size):
                return
            offset = end
        else:
            need = offset + 2
        if offset < total:
            self.buffer, self.need = bytearray(data[offset:]), need - offset

    def _frame(self, fin: int, opcode: int, data: bytes, start: int, size: int) -> bool:
        """One frame; False when the websocket is done with."""
        if opcode >= CLOSE:
            if not fin or size > 125:
                self.fail(PROTOCOL_ERROR)
                return False
            payload = _unmask(data[start + 4:start + 4 + size], data[start:start + 4])
            if opcode == CLOSE:
                self._peer_closed(payload)
                return False
            if opcode == PING:
                self.pong(payload)
            elif opcode != PONG:
                self.fail(PROTOCOL_ERROR)
                return False
        elif opcode not in (TEXT, BINARY, CONTINUATION) or \
                (opcode == CONTINUATION) != self.fragmented:
            # an unknown opcode, a continuation with no message begun, or a new message before
            # the last one ended
            self.fail(PROTOCOL_ERROR)
            return False
        else:
            self.fragmented = not fin
        if self.state == OPEN:
            self.heard_from()
        return True

    def _peer_closed(self, payload: bytes) -> None:
        if self.state == OPEN:          # answer its close with its code, then hang up
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else NORMAL
            self.transport.write(close_frame(code))
        self.state = CLOSING
        self.transport.close()

    # -- what we send ---------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send a whole frame: at once while the socket takes it, else queued (within
        max_backlog with what the socket holds, or the peer has ``overflowed``)."""
        queue = self.queue
        if queue is None:
            if self.state == OPEN:
                self.transport.write(data)
        elif self.state == OPEN:
            self.queued += len(data)
            if self.queued + self.transport.get_write_buffer_size() > self.settings.max_backlog:
                self.overflowed()
            else:
                queue.append(data)

    def pause_writing(self) -> None:
        if self.queue is None:
            self.queue = []

    def resume_writing(self) -> None:
        queue, self.queue, self.queued = self.queue, None, 0
        if queue and self.state == OPEN:
            self.transport.writelines(queue)

    def pong(self, payload: bytes) -> None:
        self.write(frame(PONG, payload))

    def close(self, code: int = NORMAL) -> None:
        """Send a close frame and half-close: the peer reads what was sent, then the end; we
        read on until it closes too (closing our side with its frames unread would reset the
        socket and lose the close frame), or abort after the grace."""
        if self.state != OPEN:
            return
        self.state = CLOSING
        self.queue, self.queued = None, 0       # what it has not taken by now it never will
        transport = self.transport
        transport.write(close_frame(code))
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
        self.timer = self.settings.loop.call_later(self.settings.close_grace, self.abort)

    def fail(self, code: int) -> None:
        """The peer broke the protocol: a close frame with ``code``, then hang up."""
        log.warning("a client broke the websocket protocol: closed with %d", code)
        if self.state == OPEN:
            self.transport.write(close_frame(code))
        self.state = CLOSING
        self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


NOT_AN_UPGRADE = orjson.dumps(
    {"request": ["Not a websocket upgrade: GET with Upgrade: websocket, Connection: Upgrade, "
                 "Sec-WebSocket-Key and Sec-WebSocket-Version: 13"]})


def _upgrading(headers: dict[bytes, bytes]) -> bool:
    connection = {token.strip() for token in headers.get(b"connection", b"").lower().split(b",")}
    return headers.get(b"upgrade", b"").lower() == b"websocket" and b"upgrade" in connection


def _valid_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


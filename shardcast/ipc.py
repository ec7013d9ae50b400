"""Length-prefixed frames over unix sockets between the supervisor and the shards.

A frame is a header (body length, kind, request id) and a body. Requests and casts
carry ``[command, args]`` as JSON; fan-out frames carry a small JSON routing part
and the client frame bytes, which are passed on without re-encoding. Frames written
in one event-loop tick leave in one write, behind a stamp of when it was made.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import struct
import time
from enum import IntEnum
from operator import itemgetter
from typing import Any, Callable

import orjson

HEADER = struct.Struct("<IBI")
ROUTE = struct.Struct("<I")
STAMP = struct.Struct("<IBIQ")      # a whole STAMP frame: its header, then its 8-byte body
MAX_FRAME = 256 * 1024 * 1024
log = logging.getLogger("shardcast.ipc")


class Kind(IntEnum):
    REQUEST = 1   # [command, args], answered by a REPLY with the same id
    REPLY = 2     # JSON result (or raw bytes the caller asked for)
    CAST = 3      # [command, args], no answer
    DELIVER = 4   # route + client frame for local subscribers of a channel
    STAMP = 5     # CLOCK_MONOTONIC nanoseconds when the write it begins was made


# Compared once a frame: an enum member costs a lookup through its class (6x an int's).
REPLY_KIND, STAMP_KIND = int(Kind.REPLY), int(Kind.STAMP)


class FrameError(ValueError):
    """The byte stream is not a valid frame sequence."""


def pack(kind: Kind, request_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), kind, request_id) + body


def stamp() -> bytes:
    return STAMP.pack(8, Kind.STAMP, 0, time.monotonic_ns())


def pack_command(kind: Kind, request_id: int, command: str, args: Any) -> bytes:
    return pack(kind, request_id, orjson.dumps([command, args]))


def pack_route(route: Any, payload: bytes) -> bytes:
    meta = orjson.dumps(route)
    return pack(Kind.DELIVER, 0, ROUTE.pack(len(meta)) + meta + payload)


def unpack_route(body: bytes) -> tuple[Any, bytes]:
    if len(body) < ROUTE.size:
        raise FrameError("deliver frame too short")
    (size,) = ROUTE.unpack_from(body)
    end = ROUTE.size + size
    if end > len(body):
        raise FrameError("deliver route overruns the frame")
    try:
        route = orjson.loads(body[ROUTE.size:end])
    except orjson.JSONDecodeError:
        raise FrameError("deliver route is not JSON") from None
    if not isinstance(route, list):
        raise FrameError("deliver route is not a list")
    return route, body[end:]


class FrameDecoder:
    """Incremental decoder: feed bytes, get complete ``(kind, id, body)`` frames."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        buffer = self.buffer
        buffer += data
        frames = []
        start = 0
        while len(buffer) - start >= HEADER.size:
            size, kind, request_id = HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME or kind not in Kind._value2member_map_:
                raise FrameError(f"bad frame header (kind {kind}, size {size})")
            end = start + HEADER.size + size
            if end > len(buffer):
                break
            frames.append((kind, request_id, bytes(buffer[start + HEADER.size:end])))
            start = end
        if start:
            del buffer[:start]
        return frames


FrameHandler = Callable[["Link", int, int, bytes], None]


class Link(asyncio.Protocol):
    """One IPC connection, either end: coalesced writes, pending requests."""

    def __init__(self, on_frame: FrameHandler, on_lost: Callable[["Link"], None] | None = None):
        self.on_frame = on_frame
        self.on_lost = on_lost
        self.decoder = FrameDecoder()
        self.transport: asyncio.Transport | None = None
        self.outgoing: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False
        self.requests: dict[int, tuple[asyncio.Future, bool]] = {}
        self.next_id = 0
        self.sent = 0           # bytes handed to the transport
        # (bytes handed to the transport then, future done once the socket took them)
        self.unsent: collections.deque[tuple[int, asyncio.Future]] = collections.deque()
        # Looked up once: Python 3.11's get_running_loop() makes a getpid syscall each time.
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._schedule_flush()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except FrameError as error:
            log.error("closing IPC link: %s", error)
            self.close()
            return
        self.received(frames)

    def received(self, frames: list[tuple[int, int, bytes]]) -> None:
        for kind, request_id, body in frames:
            if kind == REPLY_KIND:
                self.resolve(request_id, body)
            elif kind != STAMP_KIND:
                self.on_frame(self, kind, request_id, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.give_up("shard link lost")
        if self.on_lost:
            self.on_lost(self)

    def give_up(self, reason: str) -> None:
        """Closed (lost, or never connected): what waits for an answer fails now."""
        self.closed = True
        self.outgoing = []
        for future, _ in self.requests.values():
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self.requests.clear()
        for _, future in self.unsent:      # nothing more will get through: wait no longer
            if not future.done():
                future.set_result(None)
        self.unsent.clear()

    def write(self, frame: bytes) -> None:
        if self.closed:
            return
        self.outgoing.append(frame)
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self.flush_scheduled and self.outgoing and self.transport is not None:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what is queued now (otherwise it leaves at the end of this loop tick)."""
        self.flush_scheduled = False
        if self.transport is not None and self.outgoing:
            frames, self.outgoing = self.outgoing, []
            frames.insert(0, stamp())
            data = b"".join(frames)
            self.sent += len(data)
            self.transport.write(data)
            if self.unsent and not self.closed:
                self._watch()

    def backlog(self) -> int:
        """Bytes handed to the transport that the socket has not taken (its peer not reading)."""
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    def in_socket(self) -> asyncio.Future | None:
        """Done once all handed to the transport so far is in the socket, the shard's to read;
        None when it already is (the transport buffers nothing)."""
        if self.closed or not self.backlog():
            return None
        future = self.loop.create_future()
        self.unsent.append((self.sent, future))
        self._watch()
        return future

    def _watch(self) -> None:
        """Resolve what the socket took; then have uvloop call resume_writing once it takes
        the next one's bytes. It checks its low-water mark whenever a write completes (each
        flush is one write), so the mark is set to what was handed over after those bytes."""
        unsent, transport = self.unsent, self.transport
        taken = self.sent - transport.get_write_buffer_size()
        while unsent and unsent[0][0] <= taken:
            future = unsent.popleft()[1]
            if not future.done():
                future.set_result(None)
        if unsent:
            after = self.sent - unsent[0][0]
            transport.set_write_buffer_limits(high=after, low=after)
        else:
            transport.set_write_buffer_limits()     # uvloop's defaults

    def resume_writing(self) -> None:
        if self.unsent and not self.closed:
            self._watch()

    def request(self, command: str, args: Any, raw: bool = False) -> asyncio.Future:
        """Send a request; the future resolves to the decoded reply (or raw bytes)."""
        future = self.loop.create_future()
        if self.closed:
            future.set_exception(ConnectionError("shard link closed"))
            return future
        self.next_id = (self.next_id + 1) & 0xFFFFFFFF
        self.requests[self.next_id] = (future, raw)
        self.write(pack_command(Kind.REQUEST, self.next_id, command, args))
        return future

    def cast(self, command: str, args: Any) -> None:
        self.write(pack_command(Kind.CAST, 0, command, args))

    def reply(self, request_id: int, body: bytes) -> None:
        self.write(pack(Kind.REPLY, request_id, body))

    def resolve(self, request_id: int, body: bytes) -> None:
        entry = self.requests.pop(request_id, None)
        if entry is None:
            return
        future, raw = entry
        if not future.done():
            future.set_result(body if raw else orjson.loads(body))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Inbox:
    """Frames from several links, handled in the order they were written. What one pass of
    the loop through I/O read from the links is sorted by the stamps of the writes that carried
    it (CLOCK_MONOTONIC is one clock for the whole machine): when links wait unread together (a
    long flush, a hold) the loop reads them in an order of its own, and a post answered by one
    API process must still come before the next one, sent through another. Replies to this
    side's requests are resolved in that order too."""

    def __init__(self, on_frame: FrameHandler) -> None:
        self.on_frame = on_frame
        self.pending: list[tuple[int, Link, list]] = []     # stamp, link, frames
        # While held, only its owner drains it: what a link not paused meanwhile (a new one)
        # brings waits with the rest.
        self.held = False
        self.loop = asyncio.get_running_loop()

    def add(self, stamp: int, link: "Link", frames: list) -> None:
        if not self.pending and not self.held:
            self.loop.call_soon(self.drain)     # once this pass through I/O is over
        self.pending.append((stamp, link, frames))

    def drain(self) -> None:
        pending, self.pending = self.pending, []
        if len(pending) > 1:
            pending.sort(key=itemgetter(0))     # stable: equal stamps keep their arrival order
        on_frame = self.on_frame
        for _, link, frames in pending:
            for kind, request_id, body in frames:
                if kind == REPLY_KIND:      # to a request made on this link, as Link resolves
                    link.resolve(request_id, body)
                else:
                    on_frame(link, kind, request_id, body)


class InboxLink(Link):
    """A link whose frames go through an Inbox, a write's worth at a time. ``on_made`` hears of
    it once it has a transport: uvloop makes the protocol a callback before that."""

    def __init__(self, inbox: Inbox, on_made: Callable[["Link"], None] | None = None,
                 on_lost: Callable[["Link"], None] | None = None):
        super().__init__(inbox.on_frame, on_lost)
        self.inbox = inbox
        self.on_made = on_made
        self.stamp = 0      # of the write being read

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if self.on_made is not None:
            self.on_made(self)

    def received(self, frames: list[tuple[int, int, bytes]]) -> None:
        write: list = []
        for frame in frames:
            if frame[0] == STAMP_KIND:
                if write:
                    self.inbox.add(self.stamp, self, write)
                    write = []
                self.stamp = int.from_bytes(frame[2], "little")
            else:
                write.append(frame)
        if write:
            self.inbox.add(self.stamp, self, write)


def run_id(directory: str) -> str:
    """What tells this run of a node from its earlier ones: the name of its IPC directory,
    made afresh (``mkdtemp``) by each supervisor."""
    return os.path.basename(directory)


def socket_path(directory: str, shard: int) -> str:
    return f"{directory}/shard-{shard}.sock"

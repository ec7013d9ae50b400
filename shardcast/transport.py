"""Client transports of a shard: websockets and held long-poll requests."""
from __future__ import annotations

import asyncio
import time
from typing import Callable
from urllib.parse import parse_qs

import orjson

from . import schemas
from .connection import HEARTBEAT, Connection, Queued, joined, merge_frames
from .envelopes import canonical_uuid
from .websocket import (NORMAL, OPEN, PING_FRAME, TEXT, TOO_SLOW, Settings, WebSocket, frame,
                        refusal)

LISTEN_QUIET = 0.25      # a long poll keeps collecting while frames arrive this often,
LISTEN_COLLECT = 1.0     # for this long at most after the first one
CLOSE_GRACE = 10.0       # seconds a closing websocket may take to flush before it is reset
NOT_FOUND = b'{"path": ["Websockets are served on /ws"]}'


def wire(out: Queued) -> bytes:
    """A connection's queued frames as one text frame, ready for any number of sockets."""
    return frame(TEXT, joined(out))


def conn_id_from_query(query: dict[str, list[str]]) -> str | None:
    """The canonical conn_id of ``conn_id=...``, or None when missing or invalid."""
    values = query.get("conn_id", [])
    return canonical_uuid(values[0]) if len(values) == 1 else None


class Hosting:
    """What every websocket of a shard shares: the protocol's settings, how to find a
    connection, what to call when one opens or closes, and how many channels ``since`` may
    name."""

    def __init__(self, settings: Settings, find: Callable[[str], Connection | None],
                 on_open: Callable, on_close: Callable, max_channels: int) -> None:
        self.settings = settings
        self.find = find
        self.on_open = on_open
        self.on_close = on_close
        self.max_channels = max_channels


class WebSocketClient(WebSocket):
    """One browser websocket bound to one connection of this shard."""

    __slots__ = ("hosting", "conn", "heard", "offsets", "since")

    def __init__(self, hosting: Hosting) -> None:
        super().__init__(hosting.settings)
        self.hosting = hosting
        self.conn: Connection | None = None
        self.heard = time.monotonic()      # when the peer last sent a frame (pongs included)
        self.offsets = False
        self.since: dict | None = None

    def accept(self, target: str) -> bytes | None:
        """Take /ws?conn_id=... with valid positions; an unknown conn_id is taken, then
        closed with 1000 (API.md)."""
        # Split as http_server does: urlsplit would cache the last 128 URLs, each socket's unique.
        path, _, query = target.partition("?")
        if path != "/ws":
            return refusal(404, "Not Found", NOT_FOUND)
        fields = parse_qs(query)
        conn_id = conn_id_from_query(fields)
        if conn_id is None:
            return _refused({"conn_id": ["Missing or invalid conn_id"]})
        try:
            self.offsets, self.since = schemas.positions(
                {key: values[-1] for key, values in fields.items()}, self.hosting.max_channels)
        except schemas.Invalid as error:
            return _refused(error.errors)
        self.conn = self.hosting.find(conn_id)
        return None

    def opened(self) -> None:
        if self.conn is None:
            self.close(NORMAL)
        else:
            self.hosting.on_open(self.conn, self)

    def heard_from(self) -> None:
        self.heard = time.monotonic()
        if self.conn is not None:
            self.conn.last_active = self.heard

    def closed(self) -> None:
        if self.conn is not None:
            self.hosting.on_close(self.conn, self)

    def ping(self, since: float) -> bool:
        """Ping the peer; False (and the socket dropped) if it sent nothing since ``since``."""
        if self.state != OPEN:
            return True
        if self.heard < since:
            self.abort()
            return False
        self.write(PING_FRAME)
        return True

    def send(self, data: bytes) -> None:
        self.write(frame(TEXT, data))

    def send_frames(self, out: Queued, memo: dict) -> int:
        """Send queued frames as one; ``memo`` shares the encoding between the subscribers
        that queued the same frames in one flush: a batch as itself, a list by its frames
        (bytes cache their hash)."""
        key = tuple(out) if out.__class__ is list else out
        data = memo.get(key)
        if data is None:
            data = memo[key] = wire(out)
        if self.queue is None and self.state == OPEN:   # write()'s fast path, a call less
            self.transport.write(data)
        else:
            self.write(data)
        return len(data)

    def overflowed(self) -> None:
        """More than send_buffer_size unread (pongs too: a peer that pings and never reads
        made picows queue a pong per ping, 190 MB for a million): dropped as too slow."""
        super().overflowed()
        # The connection goes at once, not when the socket is done (it may never be); later,
        # as the caller may be iterating over the shard's connections.
        self.hosting.settings.loop.call_soon(self.hosting.on_close, self.conn, self,
                                             TOO_SLOW)


def _refused(errors: dict) -> bytes:
    return refusal(400, "Bad Request", orjson.dumps(errors))


class LongPoll:
    """A held ``/listen`` request: answers with the first frames to come, or ``[]``.

    Once frames arrive it keeps collecting while more follow within LISTEN_QUIET, but for
    LISTEN_COLLECT at most and up to ``max_bytes``: a busy channel cannot hold it forever.
    """

    def __init__(self, wait: float, answer: Callable[[bytes], None],
                 on_done: Callable[["LongPoll"], bytes | None], max_bytes: int,
                 offsets: bool = False, since: dict | None = None) -> None:
        self.offsets = offsets
        self.since = since
        self.frames: list[bytes] = []
        self.size = 0
        self.max_bytes = max_bytes
        self.answer = answer
        self.on_done = on_done
        self.done = False
        self.loop = asyncio.get_running_loop()
        self.last_call = 0.0
        self.timer = self.loop.call_later(wait, self.finish)

    def send(self, frame: bytes) -> None:
        if self.done or frame == HEARTBEAT:
            return
        self.frames.append(frame)
        self.size += len(frame)
        now = self.loop.time()
        if len(self.frames) == 1:
            self.last_call = now + LISTEN_COLLECT
        if self.size >= self.max_bytes or now >= self.last_call:
            self.finish()
            return
        self.timer.cancel()
        self.timer = self.loop.call_later(min(LISTEN_QUIET, self.last_call - now), self.finish)

    def send_frames(self, out: Queued, memo: dict) -> int:
        data = joined(out)
        self.send(data)
        return len(data)

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.timer.cancel()
        queued = self.on_done(self)     # frames queued for it since the shard's last flush
        if queued is not None:
            self.frames.append(queued)
        self.answer(merge_frames(self.frames) if self.frames else HEARTBEAT)

    def close(self, code: int = 1000) -> None:
        self.finish()

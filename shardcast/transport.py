"""Client transports of a shard: picows websockets and held long-poll requests."""
from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Callable
from urllib.parse import parse_qs
from uuid import UUID

import orjson
from picows import (WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport,
                    WSUpgradeRequest, WSUpgradeResponse, WSUpgradeResponseWithListener)

from . import schemas
from .connection import HEARTBEAT, Connection, merge_frames

SLOW_CONSUMER = 3008     # close code for a client that cannot keep up (as Centrifugo)
LISTEN_QUIET = 0.25      # a long poll keeps collecting while frames arrive this often,
LISTEN_COLLECT = 1.0     # for this long at most after the first one
CLOSE_GRACE = 2.0        # seconds a closing websocket may take to flush before it is reset
# Room for a websocket header (14 bytes at most) in front of each payload we send: picows writes
# the header there and sends the buffer as it is, copying only what the socket does not take at
# once. Its send() instead, for payloads over 8 KB, handed uvloop a view of a header buffer it
# reuses; uvloop keeps such a view while the socket is full, so the next frame's header
# overwrote it and clients read spliced frames under load (issue 9).
HEADROOM = 14


def wire(frames: list[bytes]) -> bytearray:
    """JSON-array frames merged into one payload, with room in front for its header."""
    data = bytearray(HEADROOM)
    data += merge_frames(frames)
    return data


def conn_id_from_query(query: dict[str, list[str]]) -> str | None:
    """The canonical conn_id of ``conn_id=...``, or None when missing or invalid."""
    values = query.get("conn_id", [])
    try:
        return str(UUID(values[0])) if len(values) == 1 else None
    except ValueError:
        return None


def forget_handshake(transport: WSTransport) -> None:
    """picows keeps the upgrade request and response on the transport for the socket's life;
    their headers, never read again, are 2.3 KB of each idle websocket's RSS. A picows that
    made them read-only would only cost that memory again, never the socket."""
    with contextlib.suppress(AttributeError):
        transport.request.headers = transport.response.headers = None


class WebSocketClient(WSListener):
    """One browser websocket bound to one connection of this shard."""

    __slots__ = ("conn", "on_open", "on_close", "send_buffer_size", "transport", "heard",
                 "offsets", "since")

    def __init__(self, conn: Connection | None, on_open: Callable, on_close: Callable,
                 send_buffer_size: int, offsets: bool = False, since: dict | None = None) -> None:
        self.conn = conn
        self.on_open = on_open
        self.on_close = on_close
        self.send_buffer_size = send_buffer_size
        self.offsets = offsets
        self.since = since
        self.transport: WSTransport | None = None
        self.heard = time.monotonic()      # when the peer last sent a frame (pongs included)

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        forget_handshake(transport)
        if self.conn is None:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            return
        self.on_open(self.conn, self)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        self.heard = time.monotonic()
        if self.transport is None:      # we closed: wait for the peer's close, drop the rest
            if frame.msg_type == WSMsgType.CLOSE:
                transport.disconnect()
            return
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
            return
        if frame.msg_type == WSMsgType.PING:
            self.pong(frame.get_payload_as_bytes())
        if self.conn is not None:
            self.conn.last_active = self.heard

    def pong(self, payload: bytes) -> None:
        """Answer a ping within send_buffer_size, as everything else sent: picows' auto-pong
        queued a pong per ping for a peer that never read them (190 MB for a million)."""
        transport = self.transport
        if transport is None:
            return
        if transport.underlying_transport.get_write_buffer_size() > self.send_buffer_size:
            self.drop_slow_consumer()
        else:
            transport.send_pong(payload)

    def ping(self, since: float) -> bool:
        """Ping the peer; False (and the socket dropped) if it sent nothing since ``since``."""
        if self.transport is None:
            return True
        if self.heard < since:
            self.transport.disconnect(False)
            return False
        self.transport.send_ping()
        return True

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.conn is not None:
            self.on_close(self.conn, self)

    def send(self, frame: bytes) -> None:
        self._write(wire([frame]))

    def send_frames(self, frames: list[bytes], memo: dict) -> int:
        """Send queued frames as one; ``memo`` shares the encoding between the subscribers
        that queued the same frames in one flush (a frame's bytes cache their hash)."""
        key = frames[0] if len(frames) == 1 else tuple(frames)
        data = memo.get(key)
        if data is None:
            data = memo[key] = wire(frames)
        self._write(data)
        return len(data) - HEADROOM

    def _write(self, data: bytearray) -> None:
        transport = self.transport
        if transport is None:
            return
        # Measured as fast as a bound method cached per websocket, which cost 64 B of each.
        if transport.underlying_transport.get_write_buffer_size() > self.send_buffer_size:
            self.drop_slow_consumer()
            return
        # The header written in place is the same for every socket sent this buffer (server
        # frames are not masked), so one buffer serves them all.
        transport.send_reuse_external_bytearray(WSMsgType.TEXT, data, HEADROOM)

    def drop_slow_consumer(self) -> None:
        self.close(SLOW_CONSUMER)
        # The connection goes at once, not when the socket is done (it may never be); later,
        # as the caller may be iterating over the shard's connections.
        asyncio.get_running_loop().call_soon(self.on_close, self.conn, self, SLOW_CONSUMER)

    def close(self, code: int = 1000) -> None:
        transport, self.transport = self.transport, None
        if transport is not None and not transport.is_disconnected:
            transport.send_close(WSCloseCode(code))
            # Half-closed: the peer reads what was sent, the close frame, then the end of the
            # stream, and we read on until it closes its side. Closing ours with its frames
            # still unread (a flood) would reset the socket, and lose the close frame.
            if not transport.underlying_transport.is_closing():    # else it raises
                transport.underlying_transport.write_eof()
            # A peer that does not read or close would hold the socket and its buffer forever.
            asyncio.get_running_loop().call_later(CLOSE_GRACE, transport.disconnect, False)


def upgrade(request: WSUpgradeRequest, find: Callable[[str], Connection | None],
            make: Callable[..., WebSocketClient], max_channels: int):
    """picows router: refuse other paths and bad ids or positions; unknown ids get a listener
    that closes."""
    # Split as http_server does: urlsplit would cache the last 128 URLs, each socket's unique.
    path, _, query = request.path.decode("latin-1").partition("?")
    if path != "/ws":
        return None
    fields = parse_qs(query)
    conn_id = conn_id_from_query(fields)
    if conn_id is None:
        return _refused({"conn_id": ["Missing or invalid conn_id"]})
    try:
        offsets, since = schemas.positions({key: values[-1] for key, values in fields.items()},
                                           max_channels)
    except schemas.Invalid as error:
        return _refused(error.errors)
    return make(find(conn_id), offsets=offsets, since=since)


def _refused(errors: dict) -> WSUpgradeResponseWithListener:
    return WSUpgradeResponseWithListener(
        WSUpgradeResponse.create_error_response(400, orjson.dumps(errors)), None)


class LongPoll:
    """A held ``/listen`` request: answers with the first batch of frames, or ``[]``.

    Once frames arrive it keeps collecting while more follow within LISTEN_QUIET, but for
    LISTEN_COLLECT at most and up to ``max_bytes``: a busy channel cannot hold it forever.
    """

    def __init__(self, wait: float, answer: Callable[[bytes], None],
                 on_done: Callable[["LongPoll"], None], max_bytes: int, offsets: bool = False,
                 since: dict | None = None) -> None:
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

    def send_frames(self, frames: list[bytes], memo: dict) -> int:
        data = merge_frames(frames)
        self.send(data)
        return len(data)

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        self.timer.cancel()
        self.answer(merge_frames(self.frames) if self.frames else HEARTBEAT)
        self.on_done(self)

    def close(self, code: int = 1000) -> None:
        self.finish()

"""Subscriber websockets: open them, check every frame they receive, count what arrived.

A client that receives a bad frame (one picows cannot parse, or one ``bench.frames`` refuses)
closes with 1002, as a browser client would drop a connection it cannot read: a protocol
error. Others close early because the server closed them as slow consumers (3008), or for no
reason they were told. Each is counted by why, and is owed no message after the last it
received (the rest are ``cut_off``). Why a client closed is read once it is gone: picows hands
the protocol error it closed for to ``wait_disconnected``.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import os
import socket
import time
from typing import Any, Callable, Iterable

from picows import (WSCloseCode, WSError, WSListener, WSMsgType, WSParsedURL, WSProtocolError,
                    WSTransport, ws_connect)

from .codec import CODECS, Decoders
from .frames import BadFrame, Presence, padding
from .httpclient import ApiClient, HttpError
from .shared import OPENED, Worker
from .stats import Histogram, Sequence

OPEN_CONCURRENCY = 64         # /connect + websocket opens in flight per worker
API_CONNECTIONS = 8           # keep-alive connections a client worker uses for /connect
HANDSHAKE_TIMEOUT = 20.0
MAX_FRAME = 64 * 1024 * 1024
SLOW_CONSUMER = 3008          # the close code of a server dropping a client that lags behind
ERROR_SAMPLES = 5             # reasons of early closes kept per worker
REASON_BYTES = 123            # the most a close frame carries
CLOSE_WAIT = 1.0              # for the clients to be gone at the end
DIAL_ERRORS = (HttpError, WSError, OSError, asyncio.TimeoutError, ValueError)


class Tally:
    """Everything one worker's clients received, and why any of them closed early."""

    def __init__(self, worker: Worker, decoder: Decoders) -> None:
        self.worker = worker
        self.decoder = decoder          # a client's channels -> its frames' decoder
        self.latency = Histogram()
        self.received = 0
        self.frames = 0
        self.presence = 0
        self.caught_up = 0              # replayed catch-up (resumers), not timed
        self.dropped = 0
        self.protocol_errors = 0
        self.slow_consumer_closes = 0
        self.notes: list[str] = []
        self.last_rx = 0.0

    def feed(self, client: "Client", data: bytes) -> None:
        """Count one frame's messages; BadFrame or ``msgspec.DecodeError`` if it is bad."""
        self.count(client, client.decode(data))

    def count(self, client: "Client", envelopes: Iterable) -> None:
        """Check one frame's messages (their channel, numbering and send time) in one pass, the
        hot loop of every subscriber; time those live (catch-up waited on purpose)."""
        now = time.monotonic()
        streams = client.streams
        ages = []
        received = 0
        for envelope in envelopes:
            if envelope.__class__ is Presence:
                self.presence += 1
                continue
            stamp = envelope.message
            key = (envelope.channel, stamp.p)
            sequence = streams.get(key)
            if sequence is None:
                if envelope.channel not in client.channels:
                    raise BadFrame(f"a message of {envelope.channel!r}, a channel not joined")
                sequence = streams[key] = Sequence()
            sequence.see(stamp.s)
            age = now - stamp.t
            if age < 0:
                raise BadFrame("a message sent after it was received")
            received += 1
            if envelope.catchup:
                self.caught_up += 1
            else:
                ages.append(age)
        if received:
            if ages:
                self.latency.add_many(ages)
            self.frames += 1
            self.received += received
            self.worker.shared.received[self.worker.slot] = self.received
            self.last_rx = now

    def ended(self, client: "Client", handshake: Any, error: WSError | None) -> None:
        """A client closed before the end of the run: for a bad frame, as a slow consumer,
        or otherwise."""
        client.ended_early = True
        received = handshake.recv if handshake is not None else None
        if error is not None:
            self.protocol_errors += 1
            self.note(f"bad frame: {error.args[-1]}")
        elif received is not None and received.code == SLOW_CONSUMER:
            self.slow_consumer_closes += 1
        else:
            self.dropped += 1
            self.note("dropped: " + (f"closed by the server with {int(received.code)}"
                                     if received is not None else "no close frame"))

    def note(self, reason: str) -> None:
        """Keep the first few reasons clients closed for."""
        if len(self.notes) < ERROR_SAMPLES:
            self.notes.append(reason[:300])

    def result(self, clients: list["Client"]) -> dict:
        """Counts over all clients. For the clients that closed early: the channels they
        joined (``early_joined``), and the messages up to the last each received of every
        publisher (``early_reached``), all they are owed."""
        unique = duplicated = out_of_order = early_reached = 0
        early_joined: dict[str, int] = {}
        for client in clients:
            for sequence in client.streams.values():
                unique += sequence.unique
                duplicated += sequence.duplicated
                out_of_order += sequence.out_of_order
                early_reached += sequence.next if client.ended_early else 0
            for channel in client.channels if client.ended_early else ():
                early_joined[channel] = early_joined.get(channel, 0) + 1
        return {"unique": unique, "duplicated": duplicated, "out_of_order": out_of_order,
                "received": self.received, "frames": self.frames, "presence": self.presence,
                "dropped": self.dropped, "protocol_errors": self.protocol_errors,
                "slow_consumer_closes": self.slow_consumer_closes, "early_joined": early_joined,
                "early_reached": early_reached, "last_rx": self.last_rx,
                "latency": self.latency.dump()}


class Client(WSListener):
    """One subscriber websocket; ``tally`` None ignores what arrives (churners)."""

    def __init__(self, tally: Tally | None, channels: list[str]) -> None:
        self.tally = tally
        self.channels = frozenset(channels)
        self.decode = tally.decoder(self.channels) if tally is not None else None
        self.conn_id = ""
        self.api: ApiClient | None = None     # the API of the node it connected through
        self.streams: dict[tuple, Sequence] = {}
        self.transport: WSTransport | None = None
        self.closing = False
        self.ended_early = False              # closed before the end of the run
        self.fragments: list[bytes] | None = None   # a text message arriving in pieces
        self.watcher: asyncio.Future | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT and frame.fin:
            self.receive(frame.get_payload_as_bytes())
        elif kind == WSMsgType.TEXT:
            self.fragments = [frame.get_payload_as_bytes()]
        elif kind == WSMsgType.CONTINUATION and self.fragments is not None:
            self.fragments.append(frame.get_payload_as_bytes())
            if frame.fin:
                data, self.fragments = b"".join(self.fragments), None
                self.receive(data)
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()
        elif kind not in (WSMsgType.PING, WSMsgType.PONG):
            bad_frame(f"unexpected {kind.name} frame")

    def receive(self, data: bytes) -> None:
        if self.tally is None:
            return
        try:
            self.tally.feed(self, data)
        except ValueError as error:   # BadFrame, msgspec.DecodeError
            bad_frame(str(error))

    async def watch(self) -> None:
        """Wait until the websocket is gone; then, if it went early, tell the tally why."""
        transport = self.transport
        try:
            await transport.wait_disconnected()
            error = None
        except WSError as protocol_error:   # picows' and bad_frame's, both closed with it
            error = protocol_error
        if not self.closing and self.tally is not None:
            self.tally.ended(self, transport.close_handshake, error)

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close()
            self.transport.disconnect()


def bad_frame(reason: str) -> None:
    """Have picows close the websocket with 1002 and hand the error to ``Client.watch``."""
    reason = reason.encode()[:REASON_BYTES].decode(errors="ignore")
    raise WSProtocolError(WSCloseCode.PROTOCOL_ERROR, reason)


async def numeric_socket(url: WSParsedURL) -> socket.socket | None:
    """A socket connected to a numeric host: picows would have uvloop ask the resolver thread
    to look up "127.0.0.1" for every open, a seventh of a connect storm's generator CPU."""
    try:
        address = ipaddress.ip_address(url.host)
    except ValueError:
        return None     # a name: resolved as usual
    sock = socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET)
    sock.setblocking(False)
    try:
        error = sock.connect_ex((url.host, url.port))
        if error == errno.EINPROGRESS:
            loop = asyncio.get_running_loop()
            writable = loop.create_future()
            loop.add_writer(sock, lambda: writable.done() or writable.set_result(None))
            try:
                await writable
            finally:
                loop.remove_writer(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if error:
            raise OSError(error, os.strerror(error))
    except BaseException:
        sock.close()
        raise
    return sock


class Opener:
    """/connect then open the websocket, for many clients with bounded concurrency; through
    the nodes' APIs in turn, so a cluster's clients spread over its nodes."""

    def __init__(self, plan: dict, worker: Worker, tally: Tally | None) -> None:
        self.apis = [ApiClient(url, plan["secret"], API_CONNECTIONS) for url in plan["apis"]]
        self.codec = CODECS[plan["codec"]]
        self.turn = 0
        self.by_api = [0] * len(self.apis)   # clients opened through each node
        self.ws_template = plan["ws_template"]
        self.worker = worker
        self.tally = tally
        self.latency = Histogram()
        self.opened = 0
        self.joined: dict[str, int] = {}   # channel -> clients of this worker that joined it
        self.errors: list[str] = []
        self.gate = asyncio.Semaphore(OPEN_CONCURRENCY)

    async def open_all(self, specs: list[dict]) -> list[Client]:
        clients = await asyncio.gather(*(self.open(spec) for spec in specs))
        return [client for client in clients if client is not None]

    async def open(self, spec: dict, listener: Callable[[], Client] | None = None,
                   query: str = "") -> Client | None:
        """A new subscriber (None if it failed: the error is kept), counted as opened, with
        OPEN_CONCURRENCY opens in flight at most; see ``dial`` for ``listener`` and ``query``."""
        async with self.gate:
            start = time.monotonic()
            try:
                client = await self.dial(
                    spec, listener or (lambda: Client(self.tally, spec["channels"])), query)
            except DIAL_ERRORS as error:
                self.failed(error)
                return None
        self.latency.add(time.monotonic() - start)
        self.opened += 1
        self.by_api[self.apis.index(client.api)] += 1
        for channel in spec["channels"]:
            self.joined[channel] = self.joined.get(channel, 0) + 1
        self.worker.shared.opened[self.worker.slot] = self.opened
        return client

    async def dial(self, spec: dict, listener: Callable[[], Client], query: str = "") -> Client:
        """Reach a websocket through the next node's API (/connect, for shardcast), then open
        it with ``query`` (``&key=value...``) added; raises one of DIAL_ERRORS."""
        api = self.apis[self.turn % len(self.apis)]
        self.turn += 1
        conn_id, url = await self.codec.websocket(api, spec, self.ws_template)
        _, client = await ws_connect(listener, url + query,
                                     websocket_handshake_timeout=HANDSHAKE_TIMEOUT,
                                     max_frame_size=MAX_FRAME, socket_factory=numeric_socket)
        if client is None:   # picows: the server closed it during the handshake
            raise WSError(f"websocket {url} closed at once")
        client.conn_id = conn_id
        client.api = api
        client.watcher = asyncio.ensure_future(client.watch())
        return client

    def failed(self, error: Exception) -> None:
        self.errors.append(f"{type(error).__name__}: {error}"[:200])

    def close(self) -> None:
        for api in self.apis:
            api.close()


async def close_all(clients: list[Client]) -> None:
    """Close every client and wait (CLOSE_WAIT s at most) until they are gone."""
    for client in clients:
        client.close()
    watchers = [client.watcher for client in clients if client.watcher is not None]
    if watchers:
        _, late = await asyncio.wait(watchers, timeout=CLOSE_WAIT)
        for watcher in late:
            watcher.cancel()


async def run_clients(plan: dict, worker: Worker) -> dict:
    """Subscribers (opened before ``go``) or a connection storm (opened after it)."""
    # picows logs each protocol error it meets; the tally counts them and keeps samples.
    logging.getLogger("picows").setLevel(logging.CRITICAL)
    tally = Tally(worker, CODECS[plan["codec"]].decoders(padding(plan["payload"])))
    opener = Opener(plan, worker, tally)
    if plan["storm"]:
        await worker.start_when_told(plan["max_seconds"])
        clients = await opener.open_all(plan["clients"])
        open_seconds = time.monotonic() - worker.usage.wall0
    else:
        clients = await opener.open_all(plan["clients"])
        open_seconds = None
        # Idle until the end, the API connections would be closed by the server meanwhile
        # (http_keep_alive_timeout): a soak would read that as its open files going down.
        opener.close()
    worker.set_state(OPENED)
    if not plan["storm"]:
        await worker.start_when_told(plan["max_seconds"])
    await worker.wait(worker.shared.stop, plan["max_seconds"])
    return {**await finish(worker, opener, clients), "open_seconds": open_seconds}


async def finish(worker: Worker, opener: Opener, clients: list[Client]) -> dict:
    """Close the clients; what they received, and how opening them went."""
    usage = worker.usage.report()
    await close_all(clients)
    opener.close()
    tally = opener.tally
    return {**tally.result(clients), **usage, "opened": opener.opened, "joined": opener.joined,
            "opened_by_node": opener.by_api, "open_latency": opener.latency.dump(),
            "errors": (tally.notes + opener.errors)[:20], "error_count": len(opener.errors)}

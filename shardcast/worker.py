"""A shard process: one uvloop loop running the actor, its IPC socket and websocket port."""
from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import time
from multiprocessing import connection as mp_connection
from typing import Any

import orjson
import uvloop

from . import descriptors, ipc, limits, listening, logs, websocket
from .config import Config
from .connection import HEARTBEAT, Connection
from .ipc import Kind, Link
from .pacing import Pacing
from .shard import Shard
from .shards import REQUEST_TIMEOUT, expiring
from .transport import CLOSE_GRACE, Hosting, LongPoll, WebSocketClient
from .websocket import CLOSED, TOO_SLOW

log = logging.getLogger("shardcast.shard")
SWEEP_INTERVAL = 1.0
CHANNEL_SWEEP_INTERVAL = 60.0   # at most; a pass over 100,000 channels takes about 10 ms
GOING_AWAY = 1001
# A line for every websocket that breaks the protocol, even one with no connection, would be an
# easy log flood: one line of each kind per this many seconds, with a count of those held back.
WEBSOCKET_LOG_INTERVAL = 10.0
HANDSHAKE_TIMEOUT = 5.0     # seconds a new socket has to complete its websocket upgrade
# Seconds a peer shard has to answer (a stopped one holds what waits on it no longer): below
# the API's REQUEST_TIMEOUT, so that the API's answer names the shard that did not answer.
MESH_TIMEOUT = REQUEST_TIMEOUT - 2.0


def tune_gc() -> None:
    """Fewer cyclic-GC passes: a broker holds many long-lived objects and makes few cycles.
    Measured in a connect storm: collections took a third of a shard's busy time."""
    gc.freeze()                       # what was loaded at start is never collected
    gc.set_threshold(50_000, 20, 100)


def shard_main(index: int, config: Config, ipc_dir: str, restart: bool = False) -> None:
    """Process entry point: one uvloop loop for the shard's whole life."""
    logs.setup(config.log_level, config.log_format, f"shard-{index}")
    websocket.log.addFilter(logs.RateLimit(WEBSOCKET_LOG_INTERVAL))
    # The supervisor decides when shards stop (Ctrl-C and service managers signal the
    # whole process group); a lost supervisor is noticed by the sweep.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    descriptors.raise_limit()   # done by the supervisor already (inherited); cheap to be sure
    tune_gc()
    try:
        uvloop.run(_serve(index, config, ipc_dir, restart))
    except OSError as error:    # e.g. its websocket port is taken; the supervisor reports it
        log.error("shard %d cannot start: %s", index, error)
        sys.exit(1)


async def _serve(index: int, config: Config, ipc_dir: str, restart: bool) -> None:
    await Worker(index, config, ipc_dir).run(restart)   # made inside the loop it keeps


def standby_main(orders: mp_connection.Connection, config: Config, ipc_dir: str) -> None:
    """A spare shard process, started and imported ahead of need: it becomes shard i when the
    supervisor sends i, so a crashed shard is replaced in milliseconds rather than a spawn."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        index = orders.recv()
    except EOFError:            # the supervisor stopped, or is gone
        return
    finally:
        orders.close()
    shard_main(index, config, ipc_dir, restart=True)     # spares stand by for restarts


FAILED = b'{"error": {"_server": ["shard failed on this command"]}}'


def _reply_when_done(link: Link, request_id: int, result: asyncio.Future) -> None:
    if result.cancelled() or result.exception() is not None:
        if not result.cancelled():
            log.error("a shard command failed", exc_info=result.exception())
        link.reply(request_id, FAILED)
    else:
        link.reply(request_id, orjson.dumps(result.result()))


class Worker:
    """Implements the actor's ``Net``: local calls for itself, IPC links to peers."""

    def __init__(self, index: int, config: Config, ipc_dir: str) -> None:
        self.index = index
        self.config = config
        self.ipc_dir = ipc_dir
        if config.redis_url:     # a cluster node: channels and users live in Redis
            from .redis.shard import ClusterShard
            self.actor = ClusterShard(index, config.workers, config, self, config.node,
                                      ipc.run_id(ipc_dir))
        else:
            self.actor = Shard(index, config.workers, config, self)
        self.handlers = self.actor.handlers()
        self.handlers["stats"] = self.stats
        self.handlers["ready"] = lambda args: True     # /ready: this loop answers
        self.peers: list[Link | None] = [None] * config.workers
        # Per peer left behind: the channels and connections whose deliveries it missed.
        self.missed: dict[int, tuple[set[str], set[str]]] = {}
        self.parent = os.getppid()
        self.descriptors = descriptors.Watch(f"shard {index}")
        self.long_polls = 0     # /listen requests held open
        self.inbox = ipc.Inbox(self.on_frame)
        self.links: set[Link] = set()   # IPC links to this shard, left unread while it holds
        # Looked up once: Python 3.11's get_running_loop() makes a getpid syscall each time.
        self.loop = asyncio.get_running_loop()
        self.pacing = Pacing(self.loop, self.actor, self.inbox, self.links)
        self.stopped: asyncio.Future | None = None
        self.ws_server: asyncio.AbstractServer | None = None
        self.closing: list[WebSocketClient] | None = None   # websockets closing at shutdown
        self.hosting = Hosting(
            websocket.Settings(config.max_client_frame_size, HANDSHAKE_TIMEOUT, CLOSE_GRACE,
                               config.send_buffer_size),
            self.actor.conns.get, self.actor.attach, self.ws_closed,
            config.max_channels_per_connection)

    async def run(self, restart: bool = False) -> None:
        loop = self.loop
        self.stopped = loop.create_future()
        if restart:
            self.announce_restart()
        path = ipc.socket_path(self.ipc_dir, self.index)
        if os.path.exists(path):
            os.unlink(path)
        ipc_server = await loop.create_unix_server(self.accept_link, path)
        self.ws_server = await listening.listen(loop, lambda: WebSocketClient(self.hosting),
                                                self.config, self.config.ws_port_base + self.index)
        self.actor.start()
        loop.call_later(SWEEP_INTERVAL, self.sweep)
        loop.call_later(self.channel_sweep_interval, self.forget_channels)
        loop.call_later(self.config.heartbeat_interval, self.heartbeat)
        loop.call_later(self.config.ws_ping_interval, self.ping, time.monotonic())
        await self.stopped
        self.shut_down()
        ipc_server.close()
        deadline = loop.time() + min(CLOSE_GRACE, self.config.shutdown_timeout / 2)
        while loop.time() < deadline and any(s.state != CLOSED for s in self.closing):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.01)   # let the last IPC replies leave
        with contextlib.suppress(OSError):     # the supervisor may be gone: tidy up after it
            os.unlink(path)
            os.rmdir(self.ipc_dir)             # by the last shard out

    def announce_restart(self) -> None:
        """Back empty after a crash: the peers part its old connections from their channels
        and users, and send back what it owned (``Recovery``). Told on the links this shard's
        own joins will take, before it accepts anything, so that no peer takes the news
        after a join of a new connection here (and parts that one too)."""
        for shard in range(self.config.workers):
            if shard != self.index:
                self.peer(shard).cast("peer_restarted", {"shard": self.index})

    def shut_down(self) -> None:
        """Stop taking websockets, close each with 1001 and answer held long polls; IPC goes
        on until the supervisor says ``exit`` (its calls in flight may still need this shard)."""
        if self.closing is not None:
            return
        self.closing = []
        self.ws_server.close()
        for conn in list(self.actor.conns.values()):
            transport = conn.transport
            if isinstance(transport, WebSocketClient):
                self.closing.append(transport)
            if transport is not None:
                transport.close(GOING_AWAY)

    def stop(self) -> None:
        if not self.stopped.done():
            self.stopped.set_result(None)

    # -- Net ------------------------------------------------------------------------

    def cast(self, shard: int, command: str, args: Any) -> None:
        if shard == self.index:
            self.handlers[command](args)
        else:
            self.peer(shard).cast(command, args)

    def request(self, shard: int, command: str, args: Any) -> asyncio.Future:
        if shard != self.index:
            return expiring(self.peer(shard).request(command, args), shard, MESH_TIMEOUT)
        result = self.handlers[command](args)
        if isinstance(result, asyncio.Future):     # answered by Redis (cluster)
            return result
        future = self.loop.create_future()
        future.set_result(result)
        return future

    def deliver(self, shard: int, route: list, frame: bytes) -> None:
        if shard == self.index:
            self.actor.deliver(route, frame)
            return
        link = self.peer(shard)
        if link.backlog() > self.config.max_shard_backlog:
            self.miss(shard, route)
            return
        if self.missed and shard in self.missed:
            self.tell_lagged(shard, link)
        link.write(ipc.pack_route(route, frame))

    def miss(self, shard: int, route: list) -> None:
        """The peer leaves more than max_shard_backlog unread (stopped, or far behind): this
        delivery is dropped and noted, rather than kept here for as long as the peer takes.
        Once it reads again, it is told whose deliveries it missed (``lagged``) before any
        other, and closes them as slow consumers: their clients come back and catch up."""
        channels, conns = self.missed.setdefault(shard, (set(), set()))
        if route[0] == "c":
            channels.add(route[1])
        else:
            conns.update(route[1])

    def tell_lagged(self, shard: int, link: Link) -> None:
        channels, conns = self.missed.pop(shard)
        link.cast("lagged", {"channels": sorted(channels), "conns": sorted(conns)})

    def schedule_flush(self) -> None:
        self.pacing.schedule()

    def accept_link(self) -> Link:
        # Counted once connected: a hold pauses the links it counts, and a new one has no
        # transport yet (what it brings during a hold waits in the inbox all the same).
        return ipc.InboxLink(self.inbox, self.links.add, self.links.discard)

    def peer(self, shard: int) -> Link:
        """The link to a peer shard, connected lazily and again after a restart."""
        link = self.peers[shard]
        if link is None or link.closed:
            self.missed.pop(shard, None)    # a restarted peer has none of those connections
            # Its replies come through the inbox too, in the order the peer wrote them with
            # what it sends on its own link: a history reply must not overtake the deliveries
            # written before it (a resume would send those twice).
            link = self.peers[shard] = ipc.InboxLink(self.inbox)
            asyncio.ensure_future(self.connect(link, shard))
        return link

    async def connect(self, link: Link, shard: int) -> None:
        for _ in range(100):
            try:
                await self.loop.create_unix_connection(lambda: link,
                                                  ipc.socket_path(self.ipc_dir, shard))
                return
            except OSError:
                await asyncio.sleep(0.05)
        log.error("cannot reach shard %d; dropping what was queued for it", shard)
        link.give_up(f"shard {shard} unreachable")

    # -- incoming frames ------------------------------------------------------------

    def on_frame(self, link: Link, kind: int, request_id: int, body: bytes) -> None:
        try:
            if kind == Kind.DELIVER:
                route, frame = ipc.unpack_route(body)
                self.actor.deliver(route, frame)
                return
            command, args = orjson.loads(body)
            if command == "listen":
                self.listen(link, request_id, args)
            elif command == "shutdown":
                self.shut_down()
            elif command == "exit":
                self.stop()
            else:
                result = self.handlers[command](args)
                if kind != Kind.REQUEST:
                    return
                if isinstance(result, asyncio.Future):   # answered by Redis (cluster)
                    result.add_done_callback(functools.partial(_reply_when_done, link,
                                                               request_id))
                else:
                    link.reply(request_id, orjson.dumps(result))
        except Exception:
            log.exception("failed to handle an IPC frame")
            if kind == Kind.REQUEST:
                link.reply(request_id, FAILED)

    def listen(self, link: Link, request_id: int, args: dict) -> None:
        conn = self.actor.conns.get(args["conn_id"])
        if conn is None:
            link.reply(request_id, b"")
            return
        if self.closing is not None:    # shutting down: answer at once
            link.reply(request_id, HEARTBEAT)
            return
        if not isinstance(conn.transport, LongPoll):    # a repeated poll replaces its own
            refusal = limits.long_polls(self.index, self.long_polls, self.config.max_long_polls)
            if refusal is not None:
                link.reply(request_id, orjson.dumps(refusal))
                return
        self.long_polls += 1
        poll = LongPoll(self.config.wake_connections_after,
                        lambda frame: link.reply(request_id, frame),
                        lambda done: self.poll_done(conn, done), self.config.send_buffer_size,
                        args.get("offsets", False), args.get("since"))
        self.actor.attach(conn, poll)

    def poll_done(self, conn: Connection, poll: LongPoll) -> bytes | None:
        self.long_polls -= 1
        return self.actor.detach(conn, poll)

    def stats(self, args: Any = None) -> dict:
        return {**self.actor.stats(args), "long_polls": self.long_polls}

    # -- websockets -----------------------------------------------------------------

    def ws_closed(self, conn: Connection, client: WebSocketClient,
                  code: int | None = None) -> None:
        if conn.transport is client:
            if code == TOO_SLOW:
                self.actor.slow_consumers += 1
            self.actor.remove_conn(conn)

    # -- timers -----------------------------------------------------------------------

    def sweep(self) -> None:
        if os.getppid() != self.parent:
            log.error("supervisor is gone; shard %d exits", self.index)
            self.stop()
            return
        now = time.monotonic()
        self.actor.sweep(now)
        self.descriptors.check(now)
        for shard in list(self.missed):     # a peer that caught up, with nothing more to get
            link = self.peers[shard]
            if link.backlog() <= self.config.max_shard_backlog:
                self.tell_lagged(shard, link)
        self.loop.call_later(SWEEP_INTERVAL, self.sweep)

    @property
    def channel_sweep_interval(self) -> float:
        return min(CHANNEL_SWEEP_INTERVAL, self.config.gc_channels_after)

    def forget_channels(self) -> None:
        self.actor.forget_channels(time.time())
        self.loop.call_later(self.channel_sweep_interval, self.forget_channels)

    def ping(self, last_round: float) -> None:
        """Dead-peer detection: one timer pings every websocket each ws_ping_interval, and
        drops those that sent nothing (not even the pong) since the previous round. A task per
        socket (picows' auto-ping) cost 1.9 KB of RSS per idle connection."""
        for conn in list(self.actor.conns.values()):
            if isinstance(conn.transport, WebSocketClient):
                conn.transport.ping(last_round)
        self.loop.call_later(self.config.ws_ping_interval, self.ping,
                                              time.monotonic())

    def heartbeat(self) -> None:
        self.actor.heartbeat()
        self.loop.call_later(self.config.heartbeat_interval, self.heartbeat)

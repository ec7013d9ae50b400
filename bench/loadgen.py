"""Load-generator processes: websocket subscribers, publishers and churners.

Each worker is an aiomultiprocess process running uvloop. The coordinator (``bench.session``)
gives it a role and a plan (plain picklable data) and steers all workers through shared
memory: per-worker counters it reads for progress and flow control, and two events, ``go``
(start the measured phase) and ``stop``. A worker returns one result dict.

Every published message carries ``{"p": publisher id, "s": sequence, "t": send time}`` in its
``message``; subscribers check the sequence per (channel, publisher) to count lost,
duplicated and out-of-order messages, and the send time for end-to-end latency (the clock is
CLOCK_MONOTONIC, which all processes of the machine share).
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import random
import socket
import time
from dataclasses import dataclass
from typing import Any, Union

import aiomultiprocess.core
import msgspec
import orjson
from picows import WSError, WSListener, WSMsgType, WSParsedURL, WSTransport, ws_connect

from shardcast.worker import tune_gc

from .httpclient import ApiClient, HttpError
from .resources import SelfUsage, raise_open_file_limit
from .stats import Histogram, Sequence

STARTING, READY, OPENED = 0, 1, 2
OPEN_CONCURRENCY = 64         # /connect + websocket opens in flight per worker
API_CONNECTIONS = 8           # keep-alive connections a client worker uses for /connect
MAX_MESSAGES = 2_000_000      # per publisher process: a hard bound besides the duration
MAX_CHURN_CYCLES = 200_000    # per churn process
POLL = 0.01
WINDOW_POLL = 0.001
HANDSHAKE_TIMEOUT = 20.0


@dataclass
class Shared:
    """Shared memory between the coordinator and its workers (one slot per worker)."""

    opened: Any     # websockets open
    received: Any   # message envelopes received
    state: Any      # STARTING, READY, OPENED
    go: Any
    stop: Any

    @classmethod
    def create(cls, slots: int) -> "Shared":
        context = aiomultiprocess.core.get_context()
        return cls(context.RawArray("q", slots), context.RawArray("q", slots),
                   context.RawArray("b", slots), context.Event(), context.Event())


class Worker:
    """A worker's view of the shared state, and its own CPU use."""

    def __init__(self, slot: int, shared: Shared) -> None:
        self.slot = slot
        self.shared = shared
        self.usage = SelfUsage()

    def set_state(self, state: int) -> None:
        """Advance to ``state`` (never back: OPENED implies READY)."""
        self.shared.state[self.slot] = max(self.shared.state[self.slot], state)

    async def wait(self, event: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not event.is_set():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(POLL)
        return True

    async def start_when_told(self, timeout: float) -> None:
        """Report ready, wait for ``go``, then start the CPU clock."""
        self.set_state(READY)
        if not await self.wait(self.shared.go, timeout):
            raise TimeoutError("the coordinator never said go")
        self.usage.begin()


async def worker_main(role: str, plan: dict, slot: int, shared: Shared) -> dict:
    """Process entry point."""
    raise_open_file_limit()
    tune_gc()     # as the server does: generators hold many long-lived objects too
    worker = Worker(slot, shared)
    result = await ROLES[role](plan, worker)
    return {"role": role, "slot": slot, **result}


# ------------------------------------------------------------------------- subscribers


class Stamp(msgspec.Struct):
    """The numbering a publisher puts in each message; other bodies decode to the defaults."""

    p: str = ""
    s: int = -1
    t: float = 0.0


class Envelope(msgspec.Struct):
    """The fields of a delivered envelope that the bench reads (the rest is skipped)."""

    type: str
    channel: Union[str, None] = None
    message: Union[Stamp, None] = None


decode_frame = msgspec.json.Decoder(list[Envelope]).decode


class Tally:
    """Everything one worker's clients received."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.latency = Histogram()
        self.received = 0
        self.frames = 0
        self.presence = 0
        self.dropped = 0
        self.last_rx = 0.0

    def feed(self, client: "Client", data: bytes) -> None:
        now = time.monotonic()
        streams = client.streams
        ages = []
        for envelope in decode_frame(data):
            stamp = envelope.message
            if envelope.type != "message" or stamp is None or stamp.s < 0:
                self.presence += envelope.type == "presence"
                continue
            key = (envelope.channel, stamp.p)
            sequence = streams.get(key)
            if sequence is None:
                sequence = streams[key] = Sequence()
            sequence.see(stamp.s)
            ages.append(now - stamp.t)
        if ages:
            self.latency.add_many(ages)
            self.frames += 1
            self.received += len(ages)
            self.worker.shared.received[self.worker.slot] = self.received
            self.last_rx = now

    def result(self, clients: list["Client"]) -> dict:
        unique = duplicated = out_of_order = 0
        for client in clients:
            for sequence in client.streams.values():
                unique += sequence.unique
                duplicated += sequence.duplicated
                out_of_order += sequence.out_of_order
        return {"unique": unique, "duplicated": duplicated, "out_of_order": out_of_order,
                "received": self.received, "frames": self.frames, "presence": self.presence,
                "dropped": self.dropped, "last_rx": self.last_rx,
                "latency": self.latency.dump()}


class Client(WSListener):
    """One subscriber websocket; ``tally`` None ignores what arrives (churners)."""

    def __init__(self, tally: Tally | None) -> None:
        self.tally = tally
        self.conn_id = ""
        self.streams: dict[tuple, Sequence] = {}
        self.transport: WSTransport | None = None
        self.closing = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: Any) -> None:
        if frame.msg_type == WSMsgType.TEXT:
            if self.tally is not None:
                self.tally.feed(self, frame.get_payload_as_bytes())
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.closing and self.tally is not None:
            self.tally.dropped += 1

    def close(self) -> None:
        self.closing = True
        if self.transport is not None and not self.transport.is_disconnected:
            self.transport.send_close()
            self.transport.disconnect()


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
    """/connect then open the websocket, for many clients with bounded concurrency."""

    def __init__(self, plan: dict, worker: Worker, tally: Tally | None) -> None:
        self.api = ApiClient(plan["api"], plan["secret"], API_CONNECTIONS)
        self.ws_template = plan["ws_template"]
        self.worker = worker
        self.tally = tally
        self.latency = Histogram()
        self.opened = 0
        self.joined: dict[str, int] = {}   # channel -> clients of this worker that joined it
        self.errors: list[str] = []

    async def open_all(self, specs: list[dict]) -> list[Client]:
        gate = asyncio.Semaphore(OPEN_CONCURRENCY)

        async def one(spec: dict) -> Client | None:
            async with gate:
                return await self.open(spec)

        clients = await asyncio.gather(*(one(spec) for spec in specs))
        return [client for client in clients if client is not None]

    async def open(self, spec: dict) -> Client | None:
        start = time.monotonic()
        try:
            reply = await self.api.call("POST", "/connect", spec)
            url = reply.get("ws_url") or self.ws_template.format(conn_id=reply["conn_id"])
            _, client = await ws_connect(lambda: Client(self.tally), url,
                                         websocket_handshake_timeout=HANDSHAKE_TIMEOUT,
                                         max_frame_size=64 * 1024 * 1024,
                                         socket_factory=numeric_socket)
            if client is None:   # picows: the server closed it during the handshake
                raise WSError(f"websocket of {reply['conn_id']} closed at once")
        except (HttpError, WSError, OSError, asyncio.TimeoutError, ValueError) as error:
            self.errors.append(f"{type(error).__name__}: {error}"[:200])
            return None
        client.conn_id = reply["conn_id"]
        self.latency.add(time.monotonic() - start)
        self.opened += 1
        for channel in spec["channels"]:
            self.joined[channel] = self.joined.get(channel, 0) + 1
        self.worker.shared.opened[self.worker.slot] = self.opened
        return client


async def run_clients(plan: dict, worker: Worker) -> dict:
    """Subscribers (opened before ``go``) or a connection storm (opened after it)."""
    tally = Tally(worker)
    opener = Opener(plan, worker, tally)
    if plan["storm"]:
        await worker.start_when_told(plan["max_seconds"])
        clients = await opener.open_all(plan["clients"])
        open_seconds = time.monotonic() - worker.usage.wall0
    else:
        clients = await opener.open_all(plan["clients"])
        open_seconds = None
    worker.set_state(OPENED)
    if not plan["storm"]:
        await worker.start_when_told(plan["max_seconds"])
    await worker.wait(worker.shared.stop, plan["max_seconds"])
    usage = worker.usage.report()
    for client in clients:
        client.close()
    await asyncio.sleep(0.05)   # let the close frames leave
    opener.api.close()
    return {**tally.result(clients), **usage, "opened": opener.opened, "joined": opener.joined,
            "open_seconds": open_seconds, "open_latency": opener.latency.dump(),
            "errors": opener.errors[:20], "error_count": len(opener.errors)}


# --------------------------------------------------------------------------- publishers


class Publisher:
    """One keep-alive connection posting numbered messages, paced by ``plan["pacing"]``."""

    def __init__(self, ident: str, index: int, api: ApiClient, plan: dict, flow: "Flow") -> None:
        self.ident = ident
        self.api = api
        self.connection = api.connections[index]
        self.channels = plan["channels"]
        self.turn = index
        self.batch = plan["batch"]
        self.pad = "x" * plan["payload"]
        self.flow = flow
        self.interval = plan["batch"] * plan["connections"] / plan["rate"] if plan["rate"] else 0
        self.next_seq: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self.requests = 0
        self.errors: list[str] = []
        self.latency = Histogram()

    def build(self, stamp: float) -> tuple[bytes, list[str]]:
        items, channels = [], []
        for _ in range(self.batch):
            channel = self.channels[self.turn % len(self.channels)]
            self.turn += 1
            seq = self.next_seq.get(channel, 0)
            self.next_seq[channel] = seq + 1
            items.append({"user": "bench", "channel": channel,
                          "message": {"p": self.ident, "s": seq, "t": stamp, "pad": self.pad}})
            channels.append(channel)
        return self.api.encode("POST", "/message", orjson.dumps(items)), channels

    async def run(self, deadline: float) -> None:
        scheduled = time.monotonic()
        while time.monotonic() < deadline and self.flow.sent < MAX_MESSAGES:
            if self.interval:
                scheduled += self.interval
                await asyncio.sleep(max(0.0, scheduled - time.monotonic()))
                stamp = scheduled     # open loop: a late send shows up as latency
            else:
                await self.flow.wait_for_window(deadline)
                stamp = time.monotonic()
            await self.post(*self.build(stamp))

    async def post(self, request: bytes, channels: list[str]) -> None:
        self.flow.sending(channels)
        start = time.monotonic()
        try:
            status, body = await self.connection.request(request)
        except HttpError as error:
            status, body = 0, str(error).encode()
        self.latency.add(time.monotonic() - start)
        self.requests += 1
        if status != 200:
            self.errors.append(f"{status}: {body[:200]!r}")
            return
        for channel in channels:
            self.published[channel] = self.published.get(channel, 0) + 1


class Flow:
    """Messages sent by this process, and (window pacing) how many are not yet delivered."""

    def __init__(self, plan: dict, shared: Shared) -> None:
        self.fanout: dict[str, int] = plan["fanout"]
        self.window = plan["window"]
        self.received = shared.received
        self.sent = 0
        self.deliveries = 0
        self.first_tx: float | None = None

    def sending(self, channels: list[str]) -> None:
        if self.first_tx is None:
            self.first_tx = time.monotonic()
        self.sent += len(channels)
        self.deliveries += sum(self.fanout.get(channel, 0) for channel in channels)

    async def wait_for_window(self, deadline: float) -> None:
        """Hold while more than ``window`` deliveries are outstanding."""
        if not self.window:
            return
        while self.deliveries - sum(self.received) > self.window and time.monotonic() < deadline:
            await asyncio.sleep(WINDOW_POLL)


async def run_publishers(plan: dict, worker: Worker) -> dict:
    api = ApiClient(plan["api"], plan["secret"], plan["connections"])
    flow = Flow(plan, worker.shared)
    prefix = plan.get("prefix", "")   # sets publishers of one run apart (soak phases)
    publishers = [Publisher(f"{prefix}{worker.slot}.{index}", index, api, plan, flow)
                  for index in range(plan["connections"])]
    await worker.start_when_told(plan["max_seconds"])
    deadline = time.monotonic() + plan["duration"]
    await asyncio.gather(*(publisher.run(deadline) for publisher in publishers))
    last_tx = time.monotonic()
    usage = worker.usage.report()
    api.close()
    latency = Histogram()
    for publisher in publishers:
        latency.merge(publisher.latency.dump())
    errors = [error for publisher in publishers for error in publisher.errors]
    return {**usage, "published": [[channel, publisher.ident, count]
                                   for publisher in publishers
                                   for channel, count in publisher.published.items()],
            "requests": sum(publisher.requests for publisher in publishers),
            "first_tx": flow.first_tx, "last_tx": last_tx, "request_latency": latency.dump(),
            "errors": errors[:20], "error_count": len(errors)}


# ------------------------------------------------------------------------------ churn


async def churn_loop(opener: Opener, plan: dict, deadline: float, stats: dict) -> None:
    rng = random.Random()
    while time.monotonic() < deadline and stats["cycles"] < MAX_CHURN_CYCLES:
        start = time.monotonic()
        spec = {"username": f"churn-{rng.randrange(1 << 30)}",
                "channels": [rng.choice(plan["channels"])]}
        client = await opener.open(spec)
        if client is None:
            await asyncio.sleep(0.05)
            continue
        await asyncio.sleep(rng.uniform(0, plan["hold"]))
        client.close()
        try:
            await opener.api.call("POST", "/disconnect", {"conn_id": client.conn_id})
        except HttpError as error:
            opener.errors.append(str(error)[:200])
        stats["latency"].add(time.monotonic() - start)
        stats["cycles"] += 1


async def run_churn(plan: dict, worker: Worker) -> dict:
    opener = Opener(plan, worker, None)
    stats = {"cycles": 0, "latency": Histogram()}
    await worker.start_when_told(plan["max_seconds"])
    deadline = time.monotonic() + plan["duration"]
    await asyncio.gather(*(churn_loop(opener, plan, deadline, stats)
                           for _ in range(plan["concurrency"])))
    usage = worker.usage.report()
    opener.api.close()
    return {**usage, "cycles": stats["cycles"], "cycle_latency": stats["latency"].dump(),
            "errors": opener.errors[:20], "error_count": len(opener.errors)}


ROLES = {"clients": run_clients, "publishers": run_publishers, "churn": run_churn}

"""The scenarios: what load each one makes, and which figures it reports.

Every scenario takes a started target, the options and the progress bar, and returns one flat
result dict. The message scenarios (fanout, channels, latency, churn) share one flow: open the
subscribers, publish for ``duration`` seconds, wait for the deliveries to drain, count.
"""
from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import asdict, dataclass, replace
from typing import Awaitable, Callable

from .codec import CODECS
from .figures import (api_figures, connect_figures, difference, expected_deliveries,
                      flow_figures, resume_cost)
from .httpclient import ApiClient
from .progress import Progress
from .resources import CpuWindow
from .session import Session
from .targets import Target

DRAIN_IDLE = 3.0          # stop waiting for deliveries after this long without any
DRAIN_LIMIT = 30.0
SETTLE = 1.0              # idle connections settle this long before RSS is read
WORKER_SLACK = 180.0      # how long workers outlive the planned duration at most
CHURN_HOLD = 0.01         # a churning client stays up to this long (uniformly drawn)
HISTORY = {"store_history": True, "history_size": 1000}   # what channels keep with --history
# churn --resume waits this long after the drain (at most --duration), so that the server has
# forgotten the dropped connections (gc_conns_after of bench.soak.SERVER_SETTINGS) within the
# measured phase.
RESUME_SETTLE = 3.0


@dataclass(frozen=True)
class Options:
    clients: int = 1000
    channels: int = 1
    duration: float = 10.0
    rate: float = 0.0               # messages/s over all publishers; 0 = as fast as accepted
    batch: int = 1                  # messages per POST /message
    payload: int = 64               # padding bytes in each message
    loadgen_procs: int = 2          # subscriber (or api publisher) processes
    publishers: int = 1             # keep-alive publishing connections
    window: int = 50                # messages in flight end to end (as-fast-as-accepted runs)
    channels_per_client: int = 3    # the channels scenario
    churners: int = 16              # concurrent join/leave loops (churn), or resumers
    history: bool = False           # channels keep history (store_history)
    resume: bool = False            # churn: resumers drop and resume instead of join/leave


DEFAULTS = {
    "fanout": Options(clients=1000, channels=1),
    "channels": Options(clients=1000, channels=100, publishers=2),
    "latency": Options(clients=100, channels=1, rate=200.0),
    "connect": Options(clients=1000, channels=100),
    # One generator: it drives 8 connections with about 0.65 of a core, while two splitting
    # them took 0.85 between them (fewer answers per wake-up each), CPU the server lacked.
    "api": Options(clients=0, publishers=8, loadgen_procs=1),
    "churn": Options(clients=200, channels=10, rate=50.0),
    # 100 msg/s per channel: a resumer away for up to 0.1 s misses a few messages each time;
    # a light steady load besides, so that the CPU of the resumes stands out.
    "churn --resume": Options(clients=40, channels=4, rate=400.0, churners=32, history=True,
                              resume=True),
    "overload": Options(clients=1000, channels=1, duration=6.0),   # bench/overload.py
    "soak": Options(clients=200, channels=10, rate=50.0, duration=60.0),   # bench/soak.py
}


def options_for(scenario: str, overrides: dict, target: Target) -> Options:
    """The scenario's defaults, the target's need for generator processes, then the options
    given."""
    given = {key: value for key, value in overrides.items() if value is not None}
    defaults = DEFAULTS[label(scenario, Options(resume=bool(given.get("resume"))))]
    if scenario in target.loadgen_procs:
        defaults = replace(defaults, loadgen_procs=target.loadgen_procs[scenario])
    options = replace(defaults, **given)
    if options.batch > 1 and not CODECS[target.codec].batches:
        raise ValueError(f"{target.name} takes one message per publish request: run it with "
                         f"--batch 1")
    return options


def label(scenario: str, options: Options) -> str:
    """The scenario's name in results, with the mode it ran in."""
    if options.resume:
        return f"{scenario} --resume"
    return f"{scenario} --history" if options.history else scenario


@dataclass
class Run:
    """One scenario against one target."""

    scenario: str
    target: Target
    options: Options
    ui: Progress

    def __post_init__(self) -> None:
        self.tag = f"bench-{self.scenario}-{uuid.uuid4().hex[:8]}"
        self.cpu = CpuWindow(self.target.probe())

    def plan(self, **fields: object) -> dict:
        return {"apis": self.target.apis, "secret": self.target.secret,
                "codec": self.target.codec, "ws_template": self.target.ws_template,
                "max_seconds": self.options.duration + WORKER_SLACK, **fields}

    def channel_names(self) -> list[str]:
        return [f"{self.tag}-{index}" for index in range(max(self.options.channels, 1))]

    async def configure(self, channels: list[str], **settings: object) -> None:
        """Create channels up front (messages to unknown channels are discarded); with
        ``history`` they keep it."""
        if self.options.history:
            settings = {**HISTORY, **settings}
        api = ApiClient(self.target.api, self.target.secret)
        try:
            await api.call("POST", "/channel_config", {name: dict(settings) for name in channels})
        finally:
            api.close()

    def spawn_clients(self, session: Session, specs: list[dict], storm: bool) -> list[int]:
        procs = max(1, min(self.options.loadgen_procs, len(specs)))
        return [session.spawn("clients", self.plan(clients=specs[index::procs], storm=storm,
                                                   payload=self.options.payload))
                for index in range(procs)]

    def header(self) -> dict:
        return {"scenario": label(self.scenario, self.options), "target": self.target.name,
                "workers": self.target.workers, "nodes": self.target.nodes,
                "options": asdict(self.options)}


# ------------------------------------------------------------------------ message flow


def layout(run: Run, channels: list[str]) -> list[dict]:
    """Client /connect bodies: the channels each client joins."""
    rng = random.Random(7)
    per_client = min(run.options.channels_per_client, len(channels))
    specs = []
    for index in range(run.options.clients):
        if run.scenario == "channels":
            joined = rng.sample(channels, per_client)
        else:
            joined = [channels[index % len(channels)]]
        specs.append({"username": f"u{index}", "channels": joined})
    return specs


def fanout_of(specs: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for spec in specs:
        for channel in spec["channels"]:
            counts[channel] = counts.get(channel, 0) + 1
    return counts


def publisher_plan(run: Run, channels: list[str], fanout: dict[str, int]) -> dict:
    options = run.options
    average = sum(fanout.values()) / max(len(fanout), 1)
    if fanout:   # publish only where someone listens: unknown channels discard messages
        channels = [channel for channel in channels if fanout.get(channel)]
    return run.plan(channels=channels, fanout=fanout, connections=options.publishers,
                    batch=options.batch, payload=options.payload, rate=options.rate,
                    duration=options.duration,
                    window=int(options.window * max(average, 1)) if not options.rate else 0)


async def message_flow(run: Run, channels: list[str], settings: dict | None = None,
                       extra: tuple[str, dict] | None = None, drain_limit: float = DRAIN_LIMIT,
                       settle: float = 0.0) -> dict:
    """Subscribers, a publisher and ``extra``, a generator of another role (churners or
    resumers) whose plan's ``clients`` subscribe too; channels are configured first with
    ``settings`` (and history with --history); the measured phase lasts ``settle`` s beyond
    the drain."""
    if settings is not None or run.options.history:
        await run.configure(channels, **(settings or {}))
    specs = layout(run, channels)
    role, plan = extra or ("", {})
    fanout = fanout_of(specs + plan.get("clients", []))
    procs = max(1, min(run.options.loadgen_procs, len(specs)))
    session = Session(procs + 1 + bool(role), run.ui)
    try:
        clients = run.spawn_clients(session, specs, storm=False)
        publisher = session.spawn("publishers", publisher_plan(run, channels, fanout))
        extra = [session.spawn(role, run.plan(**plan))] if role else []
        run.ui.phase(f"opening {len(specs):,} websockets", len(specs))
        await session.wait_opened(clients)
        await session.wait_ready([publisher, *extra])
        slow_before = run.target.slow_consumer_closes()
        run.cpu.start()
        session.go()
        run.ui.phase("publishing", run.options.duration)
        start = time.monotonic()
        (published,) = await session.finish([publisher], run.options.duration + WORKER_SLACK,
                                            lambda: time.monotonic() - start)
        planned = expected_deliveries(published, fanout)
        run.ui.phase("draining deliveries", planned)
        await session.drain(planned, DRAIN_IDLE, drain_limit)
        await asyncio.sleep(settle)
        run.cpu.stop()
        slow_after = run.target.slow_consumer_closes()
        results = await session.close()
    finally:
        session.kill()
    return {**flow_figures(run, published, results),
            "server_slow_consumer_closes": difference(slow_after, slow_before)}


# ---------------------------------------------------------------------------- scenarios


async def fanout(run: Run) -> dict:
    return await message_flow(run, run.channel_names()[:1])


async def channels(run: Run) -> dict:
    return await message_flow(run, run.channel_names())


async def latency(run: Run) -> dict:
    return await message_flow(run, run.channel_names())


async def churn(run: Run) -> dict:
    if run.options.resume:
        return await resume_churn(run)
    names = run.channel_names()
    plan = {"channels": names, "concurrency": run.options.churners, "hold": CHURN_HOLD,
            "duration": run.options.duration}
    return await message_flow(run, names, {"notify_presence": True}, ("churn", plan))


async def resume_churn(run: Run) -> dict:
    """churn --resume (bench.resumers): first a steady run, on channels of its own, where the
    resumers never drop, then the run with drops; what a resume costs the server is the CPU
    the second used beyond the first, per resume."""
    steady = Run(run.scenario, run.target, run.options, run.ui)
    settle = min(RESUME_SETTLE, run.options.duration)
    run.ui.run(f"churn --resume @ {run.target.name}: steady, no drops")
    base = await message_flow(steady, steady.channel_names(), {},
                              ("resumers", resumer_plan(steady, drops=False)), settle=settle)
    run.ui.run(f"churn --resume @ {run.target.name}: resumers drop")
    figures = await message_flow(run, run.channel_names(), {},
                                 ("resumers", resumer_plan(run, drops=True)), settle=settle)
    return {**figures, **resume_cost(figures, base)}


def resumer_plan(run: Run, drops: bool) -> dict:
    channels = run.channel_names()
    specs = [{"username": f"resumer{index}", "channels": [channels[index % len(channels)]]}
             for index in range(run.options.churners)]
    return {"clients": specs, "drops": drops, "duration": run.options.duration,
            "payload": run.options.payload}


async def connect(run: Run) -> dict:
    """A storm of /connect + websocket opens; then the memory the idle connections hold."""
    specs = layout(run, run.channel_names())
    session = Session(max(1, min(run.options.loadgen_procs, len(specs))), run.ui)
    probe = run.target.probe()
    try:
        clients = run.spawn_clients(session, specs, storm=True)
        await session.wait_ready(clients)
        rss_before = probe.rss_bytes()
        run.cpu.start()
        session.go()
        run.ui.phase(f"opening {len(specs):,} connections", len(specs))
        await session.wait_opened(clients, run.options.duration + WORKER_SLACK)
        run.cpu.stop()
        run.ui.phase("idle connections settling", 1)
        await asyncio.sleep(SETTLE)
        rss_after = probe.rss_bytes()
        results = await session.close()
    finally:
        session.kill()
    return connect_figures(run, results, rss_before, rss_after)


async def api(run: Run) -> dict:
    """POST /message throughput: a channel with no subscribers, keep-alive connections, all
    to one node (node 0 of a cluster)."""
    names = run.channel_names()[:1]
    await run.configure(names)
    options = run.options
    procs = max(1, min(options.loadgen_procs, options.publishers))
    session = Session(procs, run.ui)
    try:
        slots = []
        for index in range(procs):
            connections = len(range(index, options.publishers, procs))
            plan = publisher_plan(run, names, {})
            slots.append(session.spawn("publishers", {**plan, "connections": connections,
                                                      "apis": [run.target.api]}))
        await session.wait_ready(slots)
        run.cpu.start()
        session.go()
        run.ui.phase(f"posting on {options.publishers} connections", options.duration)
        start = time.monotonic()
        results = await session.finish(slots, options.duration + WORKER_SLACK,
                                       lambda: time.monotonic() - start)
        run.cpu.stop()
    finally:
        session.kill()
    return api_figures(run, results)


Play = Callable[[Run], Awaitable[dict]]
SCENARIOS: dict[str, Play] = {"fanout": fanout, "channels": channels, "latency": latency,
                              "connect": connect, "api": api, "churn": churn}   # `all` runs these


async def run_scenario(scenario: str, play: Play, target: Target, options: Options,
                       ui: Progress) -> dict:
    run = Run(scenario, target, options, ui)
    ui.run(f"{scenario} @ {target.name}")
    figures = await play(run)
    return {**run.header(), **figures}

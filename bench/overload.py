"""overload: fan-out to one channel published faster than its subscribers' sockets can take.

Without ``--rate`` the scenario first finds the highest sustainable rate and then publishes at
OVERLOAD_FACTOR times it, so it measures every server at the same relative overload, where
backlogs grow and slow consumers may be closed; with ``--rate`` it publishes at that rate and
skips the search. Either way the publisher runs an open loop.

A rate is sustained when a short run at it (a fresh server and fresh subscribers, since an
overloaded run leaves clients closed and backlogs behind) delivers every message to every
client by STEP_DRAIN s after the last was published, closes none (not even as a slow
consumer), holds the latency p99 within P99_LIMIT_MS, and the publisher kept its schedule.
The search doubles from a first guess while rates are sustained (halves while not), then
bisects the bracket geometrically until it is narrower than RESOLUTION, within MAX_STEPS runs
and SEARCH_BUDGET seconds. A step that failed while other processes kept the machine busy runs
once more when it is quiet; the quieter run counts.
"""
from __future__ import annotations

import asyncio
import math
import time
from dataclasses import replace

from .report import NOISY_CORES, on_schedule
from .resources import QUIET_WAIT, wait_until_quiet
from .scenarios import Run, message_flow

OVERLOAD_FACTOR = 2.0
P99_LIMIT_MS = 100.0
STEP_SECONDS = 3.0            # publishing time of one search step
# How long a step waits for the last deliveries: a rate whose backlog outlasts this cannot
# have kept p99 within P99_LIMIT_MS, and a server far behind would take minutes to drain.
STEP_DRAIN = 2.0
FIRST_DELIVERIES = 200_000    # deliveries/s the search tries first (rate × subscribers)
RESOLUTION = 1.25             # bracket (lowest failed / highest sustained) that ends the search
MAX_STEPS = 8
NOISY_RETRIES = 1             # more runs of a step that failed on a busy machine
SEARCH_BUDGET = 150.0         # seconds; a step under way finishes
MUST_BE_ZERO = ("lost", "duplicated", "out_of_order", "protocol_errors", "slow_consumer_closes",
                "dropped_connections", "connect_errors", "publish_errors")


async def overload(run: Run) -> dict:
    search: dict = {}
    if not run.options.rate:
        search = await find_sustainable(run)
        base = search["sustainable_msgs_per_s"] or search["unsustainable_msgs_per_s"]
        run = restarted(run, rate=round_rate(OVERLOAD_FACTOR * base))
        run.ui.run(f"overload @ {run.target.name}: {run.options.rate:,g} msg/s")
    figures = await message_flow(run, run.channel_names()[:1])
    return {**search, **figures}


async def find_sustainable(run: Run) -> dict:
    """Short open-loop runs at rates chosen by doubling, then by bisection."""
    good = bad = None
    rate = round_rate(FIRST_DELIVERIES / max(run.options.clients, 1))
    steps = []
    begun = time.monotonic()
    while len(steps) < MAX_STEPS and time.monotonic() - begun < SEARCH_BUDGET:
        figures = await search_step(run, rate)
        faults = shortfalls(figures)
        steps.append(step_summary(rate, faults, figures))
        if faults:
            bad = rate if bad is None else min(bad, rate)
        else:
            good = rate if good is None else max(good, rate)
        if good is not None and bad is not None and bad / good <= RESOLUTION:
            break
        rate = next_rate(good, bad)
        if rate in (good, bad):   # rounding left no rate to try (the 1 msg/s floor)
            break
    return {"sustainable_msgs_per_s": good, "unsustainable_msgs_per_s": bad,
            "search_seconds": round(time.monotonic() - begun, 1), "search": steps}


async def search_step(run: Run, rate: float) -> dict:
    """The figures of a short run at ``rate``; if it failed on a busy machine, of the quieter
    of it and one more run when the machine went quiet (QUIET_WAIT s at most)."""
    best: dict | None = None
    for attempt in range(1 + NOISY_RETRIES):
        if attempt:
            run.ui.phase("waiting for the machine to go quiet", 1)
            await asyncio.to_thread(wait_until_quiet, QUIET_WAIT)
        step = restarted(run, rate=rate, duration=min(STEP_SECONDS, run.options.duration))
        run.ui.run(f"overload @ {run.target.name}: trying {rate:,g} msg/s")
        figures = await message_flow(step, step.channel_names()[:1], drain_limit=STEP_DRAIN)
        if best is None or noise(figures) < noise(best):
            best = figures
        if not shortfalls(best) or noise(best) <= NOISY_CORES:
            break
    return best


def noise(figures: dict) -> float:
    return figures.get("other_cores") or 0.0


def shortfalls(figures: dict) -> list[str]:
    """Why a step's rate was not sustained (empty: it was)."""
    faults = [f"{key} {figures[key]:,}" for key in MUST_BE_ZERO if figures.get(key)]
    p99 = figures.get("lat_p99_ms")
    if p99 is None or p99 > P99_LIMIT_MS:
        faults.append("no latency" if p99 is None else f"p99 {p99:,.0f} ms")
    if not on_schedule(figures):
        faults.append(f"publisher sent {figures.get('offered_msgs_per_s')} msg/s")
    return faults


def step_summary(rate: float, faults: list[str], figures: dict) -> dict:
    return {"rate": rate, "sustained": not faults, "faults": faults,
            **{key: figures.get(key) for key in ("lat_p99_ms", "delivered_msgs_per_s",
                                                 "other_cores", *MUST_BE_ZERO)}}


def next_rate(good: float | None, bad: float | None) -> float:
    if bad is None:
        return round_rate(good * 2)
    if good is None:
        return round_rate(bad / 2)
    return round_rate(math.sqrt(good * bad))


def round_rate(rate: float) -> float:
    """Three significant digits, at least 1 msg/s."""
    return float(f"{max(rate, 1.0):.3g}")


def restarted(run: Run, **options: float) -> Run:
    """A run with other options on a fresh server (a server given with --api is reused)."""
    run.target.stop()
    run.target.start()
    return Run(run.scenario, run.target, replace(run.options, **options), run.ui)


OVERLOAD_SCENARIOS = {"overload": overload}

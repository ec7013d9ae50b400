"""The soak: connections join and leave presence channels for a minute while messages flow to
stable subscribers; afterwards the server should hold the file descriptors and, within
RSS_BOUND_MIB, the memory it held before, and have logged no error.

One server, one set of stable subscribers, two phases of churn + publishing: a warm-up (a
quarter of ``--duration``, at most WARMUP_MAX s) that fills allocator pools and caches, then
``--duration`` seconds. After each phase the bench waits until ``/admin/admin.json`` counts only
the stable connections (and remembers no user without one), then reads the server's RSS and
open file descriptors: the baseline after the warm-up, the end figures after the soak. Each
phase's publisher and churner are processes that exit with it, so at both readings the bench
holds exactly the same connections open.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from .httpclient import ApiClient, HttpError
from .figures import expected_deliveries, flow_figures, mib
from .scenarios import (CHURN_HOLD, DRAIN_IDLE, DRAIN_LIMIT, SETTLE, WORKER_SLACK, Run, fanout_of,
                        layout, publisher_plan)
from .session import Session

WARMUP_MAX = 10.0
WARMUP_SHARE = 0.25
SETTLE_LIMIT = 30.0       # longest wait for the churned connections and users to be gone
SETTLE_POLL = 0.2
FD_READS = 10             # reads of the fd count until two in a row agree
RSS_BOUND_MIB = 8.0       # RSS may end this much above the baseline
RSS_BOUND = int(RSS_BOUND_MIB * 2**20)
ERROR_LINES = 5           # of the server's error lines kept with the result
# The bench's own server forgets connections 2 s after their last sign of life (so churned ones
# that never opened a websocket go quickly; 1 s heartbeats keep the stable ones) and the users
# without a connection 2 s after their last one (each churn cycle is a new user, which the
# server would otherwise remember for gc_users_after = a day, by design).
SERVER_SETTINGS = {"gc_conns_after": 2.0, "gc_users_after": 2.0, "heartbeat_interval": 1.0}


@dataclass(frozen=True)
class Reading:
    """The server at a quiet moment."""

    census: dict          # /admin/admin.json ({}: no answer)
    settled: bool         # only the stable connections were left (see ``quiet``)
    rss: dict[int, int]   # RSS bytes by pid ({}: not measurable here)
    fds: int | None       # open file descriptors, all processes

    @property
    def connections(self) -> int | None:
        return self.census.get("total_connections")

    @property
    def rss_total(self) -> int | None:
        return sum(self.rss.values()) if self.rss else None


async def soak(run: Run) -> dict:
    options = run.options
    if options.rate <= 0:
        raise ValueError("soak publishes at a fixed rate: give --rate above 0 (default 50)")
    names = run.channel_names()
    await run.configure(names, notify_presence=True)
    specs = layout(run, names)
    fanout = fanout_of(specs)
    warmup = min(WARMUP_MAX, options.duration * WARMUP_SHARE)
    session = Session(max(1, min(options.loadgen_procs, len(specs))), run.ui)
    admin = ApiClient(run.target.api, run.target.secret)   # one keep-alive connection
    try:
        clients = run.spawn_clients(session, specs, storm=False)
        run.ui.phase(f"opening {len(specs):,} websockets", len(specs))
        await session.wait_opened(clients)
        stable = session.opened()
        run.cpu.start()
        session.go()
        phases = await phase(run, names, fanout, "warm-up", warmup)
        start = await quiet_reading(run, admin, stable)
        phases += await phase(run, names, fanout, "soak", options.duration)
        published = merged_publishers(phases)
        planned = expected_deliveries(published, fanout)
        run.ui.phase("draining deliveries", planned)
        await session.drain(planned, DRAIN_IDLE, DRAIN_LIMIT)
        end = await quiet_reading(run, admin, stable)
        run.cpu.stop()
        results = await session.close()
    finally:
        admin.close()
        session.kill()
    figures = flow_figures(run, published, results + phases, warmup + options.duration)
    return {**figures, "warmup_s": warmup, "stable_connections": stable,
            **baseline_figures(start, end, stable, run.target.logged_errors(),
                               run.cpu.probe.root_pid)}


async def phase(run: Run, channels: list[str], fanout: dict[str, int], label: str,
                seconds: float) -> list[dict]:
    """Publish and churn for ``seconds`` in processes of their own; their results."""
    session = Session(2, run.ui)
    try:
        publisher = session.spawn("publishers", {**publisher_plan(run, channels, fanout),
                                                 "duration": seconds, "prefix": f"{label}-"})
        churner = session.spawn("churn", run.plan(
            channels=channels, concurrency=run.options.churners, hold=CHURN_HOLD,
            duration=seconds))
        await session.wait_ready([publisher, churner])
        session.go()
        run.ui.phase(f"{label}: churning and publishing", seconds)
        begun = time.monotonic()
        await session.finish([publisher, churner], seconds + WORKER_SLACK,
                             lambda: time.monotonic() - begun)
        return await session.close()
    finally:
        session.kill()


def merged_publishers(results: list[dict]) -> dict:
    """The publisher results of all phases as one."""
    runs = [result for result in results if result["role"] == "publishers"]
    return {"published": [row for result in runs for row in result["published"]],
            "first_tx": min((result["first_tx"] for result in runs if result["first_tx"]),
                            default=None),
            "last_tx": max(result["last_tx"] for result in runs),
            "seconds": sum(result["seconds"] for result in runs),
            "sent": sum(result["sent"] for result in runs),
            "error_count": sum(result["error_count"] for result in runs)}


async def quiet_reading(run: Run, admin: ApiClient, stable: int) -> Reading:
    """Wait (at most SETTLE_LIMIT s) until the churned connections and their users are gone,
    let the server settle, then read its RSS and open fds."""
    run.ui.phase("waiting for the churned connections to go", SETTLE_LIMIT)
    begun = time.monotonic()
    census = await admin_census(admin)
    while census and not quiet(census, stable) and time.monotonic() - begun < SETTLE_LIMIT:
        run.ui.update(time.monotonic() - begun)
        await asyncio.sleep(SETTLE_POLL)
        census = await admin_census(admin)
    await asyncio.sleep(SETTLE)
    probe = run.cpu.probe
    fds = probe.open_fds()
    for _ in range(FD_READS):
        await asyncio.sleep(SETTLE_POLL)
        fds, previous = probe.open_fds(), fds
        if fds == previous:
            break
    return Reading(census, quiet(census, stable), probe.rss_by_pid(), fds)


async def admin_census(admin: ApiClient) -> dict:
    """/admin/admin.json: connections, users, shards ({}: no answer)."""
    try:
        return await admin.call("GET", "/admin/admin.json")
    except (HttpError, ValueError):
        return {}


def quiet(census: dict, stable: int) -> bool:
    """The server holds the ``stable`` connections and remembers no user without one."""
    return (census.get("total_connections") == stable
            and census.get("remembered_user_count") == census.get("unique_user_count"))


def baseline_figures(start: Reading, end: Reading, stable: int, logged: list[str] | None,
                     supervisor: int | None) -> dict:
    """Memory, fds and errors at the end against the baseline, and what did not return."""
    before, after = start.rss_total, end.rss_total
    growth = None if before is None or after is None else after - before
    returned = None
    if start.fds is not None and end.fds is not None and growth is not None:
        returned = end.fds == start.fds and growth <= RSS_BOUND
    figures = {"rss_start_mb": mib(before), "rss_end_mb": mib(after),
               "rss_growth_mb": mib(growth), "rss_bound_mb": RSS_BOUND_MIB,
               "rss_growth_by_process_mb": growth_by_process(start, end, supervisor),
               "fds_start": start.fds, "fds_end": end.fds, "returned_to_baseline": returned,
               "users_start": start.census.get("remembered_user_count"),
               "users_end": end.census.get("remembered_user_count"),
               "errors_logged": None if logged is None else len(logged),
               "server_errors": (logged or [])[:ERROR_LINES]}
    return {**figures, "baseline_warnings": baseline_warnings(figures, start, end, stable)}


def growth_by_process(start: Reading, end: Reading,
                      supervisor: int | None) -> dict[str, float | None]:
    """RSS growth (MiB) of each server process present at both readings, by role."""
    roles = {shard["pid"]: f"shard {shard['shard']}" for shard in end.census.get("shards", [])}
    roles[supervisor] = "supervisor"
    return {roles.get(pid, f"pid {pid}"): mib(end.rss[pid] - start.rss[pid])
            for pid in end.rss if pid in start.rss}


def baseline_warnings(figures: dict, start: Reading, end: Reading, stable: int) -> list[str]:
    notes = []
    for moment, reading in (("baseline", start), ("end", end)):
        if reading.connections is None:
            notes.append(f"{moment}: /admin/admin.json did not answer; the reading may include "
                         f"churned connections")
        elif not reading.settled:
            census = reading.census
            notes.append(f"{moment}: after {SETTLE_LIMIT:.0f} s the server still counted "
                         f"{reading.connections:,} connections ({stable:,} stable) and "
                         f"remembered {census.get('remembered_user_count')} users "
                         f"({census.get('unique_user_count')} connected)")
    if figures["returned_to_baseline"] is None:
        notes.append("RSS and open fds not measured: the server does not run on this machine")
    if start.fds is not None and end.fds is not None and end.fds != start.fds:
        notes.append(f"open fds did not return to baseline: {start.fds:,} → {end.fds:,}")
    before, after = start.rss_total, end.rss_total
    if before is not None and after is not None and after - before > RSS_BOUND:
        notes.append(f"RSS grew by {figures['rss_growth_mb']} MiB (bound {RSS_BOUND_MIB:g}): "
                     f"{figures['rss_start_mb']} → {figures['rss_end_mb']} MiB")
    if figures["errors_logged"]:
        notes.append(f"the server logged {figures['errors_logged']:,} error lines, the first: "
                     f"{figures['server_errors'][0][:200]}")
    return notes


LONG_SCENARIOS = {"soak": soak}   # not part of `all`

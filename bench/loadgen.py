"""Load-generator processes: websocket subscribers, publishers and churners.

Each worker is an aiomultiprocess process running uvloop. The coordinator (``bench.session``)
gives it a role and a plan (plain picklable data) and steers all workers through shared
memory (``bench.shared``). A worker returns one result dict. Subscribers live in
``bench.subscribers``, publishers in ``bench.publishers``, the resumers of ``churn --resume``
in ``bench.resumers``; the churn, which reuses the subscribers' opener, is here.
"""
from __future__ import annotations

import asyncio
import random
import time

from shardcast.worker import tune_gc

from .httpclient import HttpError
from .publishers import run_publishers
from .resources import raise_open_file_limit
from .resumers import run_resumers
from .shared import Shared, Worker
from .stats import Histogram
from .subscribers import Opener, run_clients

MAX_CHURN_CYCLES = 200_000    # per churn process


async def worker_main(role: str, plan: dict, slot: int, shared: Shared) -> dict:
    """Process entry point."""
    raise_open_file_limit()
    tune_gc()     # as the server does: generators hold many long-lived objects too
    worker = Worker(slot, shared)
    result = await ROLES[role](plan, worker)
    return {"role": role, "slot": slot, **result}


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
            await client.api.call("POST", "/disconnect", {"conn_id": client.conn_id})
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
    opener.close()
    return {**usage, "cycles": stats["cycles"], "cycle_latency": stats["latency"].dump(),
            "errors": opener.errors[:20], "error_count": len(opener.errors)}


ROLES = {"clients": run_clients, "publishers": run_publishers, "churn": run_churn,
         "resumers": run_resumers}

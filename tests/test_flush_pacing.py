"""A shard that spent t writing waits about t before its next flush (4 t when its flushes carry
more than two messages a frame, 8 t and bounded further past four), and not at all when its
flushes are quick: frames gather meanwhile and share one socket write."""
from __future__ import annotations

import asyncio
import time

import pytest
import uvloop

from shardcast import worker
from shardcast.config import Config
from shardcast.worker import Worker

# libuv counts whole milliseconds (a rounded delay from a truncated clock), so a timer
# may fire up to 1.5 ms before the rest it was given has passed in full.
TIMER_SLACK = 0.0015

KEEPING_UP, BEHIND, FAR_BEHIND = 1.0, 3.0, 8.0     # messages a frame


def flush_gaps(write_seconds: float, flushes: int = 3,
               per_frame: float = KEEPING_UP) -> list[float]:
    """The time from each flush's start to the next's, with the actor's flush taking
    ``write_seconds`` and sending ``per_frame`` messages a frame."""
    starts: list[float] = []

    async def run() -> None:
        shard = Worker(0, Config(workers=1, secret="x"), "/tmp")
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def slow_flush() -> bool:
            starts.append(time.perf_counter())
            time.sleep(write_seconds)
            if len(starts) < flushes:   # a frame arrives right after this flush
                loop.call_soon(shard.schedule_flush)
            else:
                done.set_result(None)
            return per_frame
        shard.actor.flush = slow_flush
        shard.schedule_flush()
        await asyncio.wait_for(done, 5)

    uvloop.run(run())
    return [later - earlier for earlier, later in zip(starts, starts[1:])]


def test_a_busy_shard_rests_as_long_as_its_last_flush_took():
    gaps = flush_gaps(0.004)
    assert all(gap >= 2 * 0.004 - TIMER_SLACK for gap in gaps), gaps   # the write, then as long again


@pytest.mark.parametrize("per_frame, factor, bound", [
    (BEHIND, worker.FLUSH_REST_BEHIND, worker.MAX_FLUSH_WAIT),
    (FAR_BEHIND, worker.FLUSH_REST_FAR_BEHIND, worker.MAX_FLUSH_WAIT_FAR_BEHIND)],
    ids=["behind", "far-behind"])
def test_a_shard_that_is_behind_rests_longer(per_frame, factor, bound):
    gaps = flush_gaps(0.002, per_frame=per_frame)
    rest = min(factor * 0.002, bound)
    assert all(gap >= 0.002 + rest - TIMER_SLACK for gap in gaps), gaps


@pytest.mark.parametrize("per_frame, bound", [
    (KEEPING_UP, worker.MAX_FLUSH_WAIT), (BEHIND, worker.MAX_FLUSH_WAIT),
    (FAR_BEHIND, worker.MAX_FLUSH_WAIT_FAR_BEHIND)], ids=["keeping-up", "behind", "far-behind"])
def test_the_rest_is_bounded(per_frame, bound):
    gaps = flush_gaps(0.030, per_frame=per_frame)
    assert all(0.030 + bound - TIMER_SLACK <= gap < 0.030 + bound + 0.015
               for gap in gaps), gaps


def test_quick_flushes_follow_at_once():
    assert sum(flush_gaps(0.0, flushes=50)) < 0.05

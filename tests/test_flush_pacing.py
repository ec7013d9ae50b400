"""A shard that spent t writing waits about t before its next flush (4 t when its flushes carry
more than two messages a frame, 8 t and bounded further past four), and not at all when its
flushes are quick: frames gather meanwhile and share one socket write. Behind, it leaves its IPC
links unread while it rests, and reads what came at once afterwards."""
from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
import uvloop

from contract import delivered, unique
from shardcast import ipc, pacing
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
    (BEHIND, pacing.FLUSH_REST_BEHIND, pacing.MAX_FLUSH_WAIT),
    (FAR_BEHIND, pacing.FLUSH_REST_FAR_BEHIND, pacing.MAX_FLUSH_WAIT_FAR_BEHIND)],
    ids=["behind", "far-behind"])
def test_a_shard_that_is_behind_rests_longer(per_frame, factor, bound):
    gaps = flush_gaps(0.002, per_frame=per_frame)
    rest = min(factor * 0.002, bound)
    assert all(gap >= 0.002 + rest - TIMER_SLACK for gap in gaps), gaps


@pytest.mark.parametrize("per_frame, bound", [
    (KEEPING_UP, pacing.MAX_FLUSH_WAIT), (BEHIND, pacing.MAX_FLUSH_WAIT),
    (FAR_BEHIND, pacing.MAX_FLUSH_WAIT_FAR_BEHIND)], ids=["keeping-up", "behind", "far-behind"])
def test_the_rest_is_bounded(per_frame, bound):
    gaps = flush_gaps(0.030, per_frame=per_frame)
    assert all(0.030 + bound - TIMER_SLACK <= gap < 0.030 + bound + 0.015
               for gap in gaps), gaps


def test_quick_flushes_follow_at_once():
    assert sum(flush_gaps(0.0, flushes=50)) < 0.05


def heard_after_flush(write_seconds: float, per_frame: float) -> float:
    """Seconds from the end of a flush to when the shard handled a command sent on an IPC link
    right after it."""
    times: dict[str, float] = {}

    async def run() -> None:
        shard = Worker(0, Config(workers=1, secret="x"), "/tmp")
        loop = asyncio.get_running_loop()
        heard = loop.create_future()
        shard.handlers["probe"] = lambda args: heard.set_result(time.perf_counter())
        ours, theirs = socket.socketpair()
        await loop.connect_accepted_socket(shard.accept_link, ours)

        def slow_flush() -> float:
            time.sleep(write_seconds)
            return per_frame
        shard.actor.flush = slow_flush
        shard.pacing.flush()
        times["flushed"] = time.perf_counter()
        theirs.send(ipc.pack_command(ipc.Kind.CAST, 0, "probe", None))
        times["heard"] = await asyncio.wait_for(heard, 5)
        theirs.close()

    uvloop.run(run())
    return times["heard"] - times["flushed"]


def test_a_shard_behind_reads_its_links_when_its_rest_ends():
    rest = min(pacing.FLUSH_REST_FAR_BEHIND * 0.004, pacing.MAX_FLUSH_WAIT_FAR_BEHIND)
    assert heard_after_flush(0.004, FAR_BEHIND) >= rest - TIMER_SLACK


def test_a_shard_keeping_up_reads_its_links_at_once():
    assert heard_after_flush(0.004, KEEPING_UP) < 0.004


def test_a_link_accepted_just_before_a_hold_is_heard_when_the_rest_ends():
    """uvloop calls a new link's connection_made one callback after it makes the protocol. A
    flush that held in between met the link without a transport, failed, and left the shard's
    links unread for good: every command to it then timed out."""
    async def run() -> bool:
        shard = Worker(0, Config(workers=1, secret="x"), "/tmp")
        loop = asyncio.get_running_loop()
        heard = loop.create_future()
        shard.handlers["probe"] = lambda args: heard.set_result(True)

        def slow_flush() -> float:
            time.sleep(0.002)
            return FAR_BEHIND
        shard.actor.flush = slow_flush
        ours, theirs = socket.socketpair()
        loop.call_soon(shard.pacing.flush)       # runs after the link is made, before it connects
        await loop.connect_accepted_socket(shard.accept_link, ours)
        theirs.send(ipc.pack_command(ipc.Kind.CAST, 0, "probe", None))
        try:
            return await asyncio.wait_for(heard, 2)
        finally:
            theirs.close()

    assert uvloop.run(run())


def test_a_shard_behind_answers_commands_and_delivers_every_message(server3, open_ws):
    """Posts of ten messages make each flush carry ten a frame, so the channel's shards hold
    their links while they rest: the commands that come meanwhile are answered after a rest at
    most, and every subscriber gets every message, in order."""
    channel = unique("held")
    clients = [open_ws(server3.connect(unique("u"), [channel])) for _ in range(12)]
    posted: list[dict] = []

    def post() -> None:
        for batch in range(40):
            posted.extend(server3.message(*[
                {"user": "b", "channel": channel, "message": {"n": batch * 10 + n}}
                for n in range(10)]))

    publisher = threading.Thread(target=post)
    publisher.start()
    answers = []
    while publisher.is_alive() or not answers:
        start = time.monotonic()
        server3.connect(unique("u"), [channel, unique("side")])
        answers.append(time.monotonic() - start)
    publisher.join()
    assert max(answers) < 1.0, answers    # a hold lasts 25 ms at most; a busy host, more
    for client in clients:
        assert client.take(400, timeout=15) == [delivered(item) for item in posted]

"""The coordinator's side of a scenario run: start workers, step them through the phases."""
from __future__ import annotations

import asyncio
import time
from typing import Callable

import aiomultiprocess
import uvloop

from .loadgen import worker_main
from .progress import Progress
from .shared import OPENED, READY, Shared

POLL = 0.1
START_TIMEOUT = 120.0     # worker start and client connection phase
RESULT_TIMEOUT = 60.0


class WorkerFailed(RuntimeError):
    pass


class Session:
    """A fixed number of load-generator processes sharing one block of counters."""

    def __init__(self, slots: int, ui: Progress) -> None:
        self.shared = Shared.create(slots)
        self.ui = ui
        self.workers: list[aiomultiprocess.Worker] = []
        self.roles: list[str] = []
        self.results: dict[int, dict] = {}

    def spawn(self, role: str, plan: dict) -> int:
        slot = len(self.workers)
        worker = aiomultiprocess.Worker(
            target=worker_main, args=(role, plan, slot, self.shared),
            name=f"bench-{role}-{slot}", loop_initializer=uvloop.new_event_loop)
        worker.start()
        self.workers.append(worker)
        self.roles.append(role)
        return slot

    def slots(self, role: str) -> list[int]:
        return [slot for slot, name in enumerate(self.roles) if name == role]

    # shared counters -----------------------------------------------------------

    def opened(self) -> int:
        return sum(self.shared.opened)

    def received(self) -> int:
        return sum(self.shared.received)

    def go(self) -> float:
        self.shared.go.set()
        return time.monotonic()

    def stop(self) -> None:
        self.shared.stop.set()

    # waiting ------------------------------------------------------------------------

    def _check_alive(self, slots: list[int]) -> None:
        for slot in slots:
            worker = self.workers[slot]
            if worker.exitcode is not None and slot not in self.results:
                self.results[slot] = self._result(slot)

    def _result(self, slot: int) -> dict:
        result = self.workers[slot].result
        if not isinstance(result, dict):
            raise WorkerFailed(f"{self.roles[slot]} worker {slot} failed: {result!r} "
                               f"(exit code {self.workers[slot].exitcode})")
        return result

    async def wait_state(self, slots: list[int], state: int, progress: Callable[[], float],
                         timeout: float = START_TIMEOUT) -> None:
        """Until every worker in ``slots`` reached ``state`` (READY or OPENED)."""
        deadline = time.monotonic() + timeout
        while any(self.shared.state[slot] < state for slot in slots):
            self._check_alive(slots)
            if time.monotonic() > deadline:
                raise WorkerFailed(f"workers not {'ready' if state == READY else 'open'} "
                                   f"within {timeout:.0f} s")
            self.ui.update(progress())
            await asyncio.sleep(POLL)

    async def wait_ready(self, slots: list[int]) -> None:
        await self.wait_state(slots, READY, lambda: 0)

    async def wait_opened(self, slots: list[int], timeout: float = START_TIMEOUT) -> None:
        await self.wait_state(slots, OPENED, self.opened, timeout)

    async def finish(self, slots: list[int], timeout: float,
                     progress: Callable[[], float] | None = None) -> list[dict]:
        """Results of ``slots`` once their processes end (they end by themselves)."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive(slots)
            if all(slot in self.results for slot in slots):
                return [self.results[slot] for slot in slots]
            if time.monotonic() > deadline:
                raise WorkerFailed(f"workers {slots} did not finish within {timeout:.0f} s")
            if progress is not None:
                self.ui.update(progress())
            await asyncio.sleep(POLL)

    async def drain(self, expected: int, idle: float, limit: float) -> None:
        """Until ``expected`` messages arrived, nothing arrived for ``idle`` s, or ``limit`` s."""
        start = last_change = time.monotonic()
        seen = self.received()
        while seen < expected:
            now = time.monotonic()
            if now - last_change > idle or now - start > limit:
                return
            await asyncio.sleep(POLL)
            current = self.received()
            if current != seen:
                seen, last_change = current, time.monotonic()
            self.ui.update(seen)

    async def close(self) -> list[dict]:
        """Stop every worker; return all results (in slot order)."""
        self.stop()
        try:
            await self.finish(list(range(len(self.workers))), RESULT_TIMEOUT)
        finally:
            self.kill()
        return [self.results[slot] for slot in range(len(self.workers))]

    def kill(self) -> None:
        for worker in self.workers:
            if worker.exitcode is None:
                worker.kill()

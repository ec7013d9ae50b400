"""The shared memory between the coordinator (``bench.session``) and its load generators.

Per-worker counters the coordinator reads for progress and flow control, a state per worker
(STARTING, READY, OPENED), and two events: ``go`` (start the measured phase) and ``stop``.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import aiomultiprocess.core

from .resources import SelfUsage

STARTING, READY, OPENED = 0, 1, 2
POLL = 0.01


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

"""How a shard paces its flushes: resting after each so that frames gather and share one socket
write, and, when behind, leaving its IPC links unread for the rest so that what they bring is
read at once."""
from __future__ import annotations

import asyncio
import time
from typing import Protocol

from .ipc import Inbox, Link

# After a flush that took t, a shard rests before the next: frames gather meanwhile and share
# one socket write. How long follows how far behind its sockets are, told by the messages its
# last flush sent a frame (measured in fan-out to 1,000 subscribers, alternating pairs):
# - keeping up: t, 10 ms at most; a shard with little to write waits microseconds, and its
#   latency stays as it was (2.4 -> 5.9 messages a write, 2.1 -> 1.2 us CPU a delivery);
# - behind (past two): 4 t, 10 ms at most (at 2 shards 4.0-4.9 -> 7.4-7.5 messages a write);
#   25 ms there cost a window-bound publisher to many channels 13% of its rate;
# - far behind (past four): 8 t, 25 ms at most. A flush there takes 6-12 ms; with 4 t a shard
#   with half the sockets (2 shards) flushed twice as often as one with all of them (whose rest
#   is at the bound), 18 messages a frame against 34. At 2 shards, 9 pairs: median 18.3 -> 24.7
#   messages a frame, 0.53 -> 0.49 us a delivery (7 pairs lower), p99 unchanged (204 -> 206 ms).
FLUSH_REST = 1.0
FLUSH_REST_BEHIND = 4.0
FLUSH_REST_FAR_BEHIND = 8.0
BEHIND = 2.0                    # messages a frame
FAR_BEHIND = 4.0
MAX_FLUSH_WAIT = 0.010
MAX_FLUSH_WAIT_FAR_BEHIND = 0.025


class Flusher(Protocol):
    def flush(self) -> float:
        """Write what is due; the messages a frame it carried."""
        ...


class Pacing:
    """The flushes of one shard's actor (its Net's ``schedule_flush``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, actor: Flusher, inbox: Inbox,
                 links: set[Link]) -> None:
        self.loop = loop
        self.actor = actor
        self.inbox = inbox
        self.links = links      # held with the inbox
        self.after = 0.0        # perf_counter time before which no flush starts
        self.held = False       # a flush waits for the hold's end

    def schedule(self) -> None:
        if self.inbox.held:
            self.held = True
            return
        wait = self.after - time.perf_counter()
        if wait > 0:
            self.loop.call_later(wait, self.flush)
        else:
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        start = time.perf_counter()
        per_frame = self.actor.flush()
        end = time.perf_counter()
        behind, far = per_frame > BEHIND, per_frame > FAR_BEHIND
        factor = (FLUSH_REST_FAR_BEHIND if far else
                  FLUSH_REST_BEHIND if behind else FLUSH_REST)
        bound = MAX_FLUSH_WAIT_FAR_BEHIND if far else MAX_FLUSH_WAIT
        rest = min((end - start) * factor, bound)
        self.after = end + rest
        if behind:      # (no flush runs while holding: schedule waits for the release)
            self.hold(rest)

    def hold(self, rest: float) -> None:
        """Messages come faster than this shard flushes: what its links bring during the rest
        waits unread, and is read at once when it ends, rather than waking the shard for each
        message (several wakes a frame; each costs tens of us on a VM). The inbox puts what
        the links held back in the order it was written. Commands wait as long,
        MAX_FLUSH_WAIT_FAR_BEHIND at most; websockets are read as ever."""
        self.inbox.held = True
        self.loop.call_later(rest, self.release)    # first: a held inbox must be released
        for link in self.links:
            link.transport.pause_reading()

    def release(self) -> None:
        # The links are read in the loop's next pass through I/O, after the callbacks due now
        # and those they schedule: their frames are handled then, and the flush held after.
        self.loop.call_soon(self.loop.call_soon, self.after_hold)
        for link in self.links:
            link.transport.resume_reading()

    def after_hold(self) -> None:
        self.inbox.held = False
        self.inbox.drain()      # a frame that makes the shard dirty schedules its own flush
        if self.held:
            self.held = False
            self.schedule()

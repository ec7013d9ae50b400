"""Resumers (``churn --resume``): subscribers that drop and come back with ``since``, as the
browser client does.

A resumer is one subscriber of one channel (which keeps history) across many websockets. It
opens the first (asking for ``offsets=1``) before publishing starts, so it is owed every
message, then until the end of the publishing: keeps it up to HOLD s (once it has a position in
each of its channels), drops it abruptly (the TCP connection closes, no close frame), stays
away up to AWAY s while messages flow, and comes back on a fresh ``/connect`` (through the
next node, without history in its answer) whose websocket URL carries ``since``: the epoch and
offset of the last message it got in each channel. Without ``drops`` resumers stay on their
first websocket: the steady run that a run with drops is compared with.

Every message is checked as a subscriber checks its own (the frame field by field, the
publisher's numbering across all the resumer's websockets: lost, duplicated, out of order),
and by its position: within an epoch each message of a channel must be the one after the
last (``position_errors`` otherwise). A resumed websocket must first send a recovery frame
saying ``recovered`` for each channel, in the epoch the resumer had (``resume_failures``
otherwise).
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from urllib.parse import quote

import orjson

from .frames import BadFrame, Presence, Recovery, frame_decoder, padding
from .shared import OPENED, Worker
from .stats import Histogram
from .subscribers import DIAL_ERRORS, Client, Opener, Tally, finish

HOLD = 0.2            # seconds a resumer keeps a websocket at most (uniformly drawn)
AWAY = 0.1            # seconds it stays away after a drop at most, while messages flow
RETRY = 0.05          # seconds before dialling again after a failed resume
GIVE_UP = 10.0        # seconds after the end of the publishing a resume is tried at most
POSITIONS = "&offsets=1"
# What comes back through since need not come in the /connect answer too (by default it
# carries each channel's history, up to history_size entries).
NO_HISTORY = {"info": {"include_history": False}}


class ResumingClient(Client):
    """One websocket of a resumer."""

    def __init__(self, tally: Tally, resumer: "Resumer") -> None:
        super().__init__(tally, resumer.spec["channels"])
        self.resumer = resumer
        self.streams = resumer.streams    # the numbering carries over from socket to socket


class Resumer:
    """One subscriber across its websockets: where it is in each channel."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.again = {**spec, **NO_HISTORY}    # the /connect of a resume
        self.streams: dict = {}
        self.positions: dict[str, tuple] = {}  # channel -> (epoch, offset) last received
        self.client: Client | None = None
        self.dropped: Client | None = None     # the websocket it dropped last
        self.dialled = 0.0                     # when the current resume began
        self.recovering = False                # a recovery frame is due first

    def listener(self, tally: Tally) -> ResumingClient:
        return ResumingClient(tally, self)

    def placed(self) -> bool:
        """It has a position in each of its channels (before that, it could not resume)."""
        return len(self.positions) == len(self.spec["channels"])

    def drop(self) -> None:
        """Close the TCP connection without a close frame."""
        client, self.client = self.client, None
        self.dropped = client
        client.closing = True
        if client.transport is not None:
            client.transport.disconnect()

    async def resume(self, opener: Opener, until: float) -> bool:
        """A fresh /connect, and its websocket with ``since``; again until one opens (False:
        none did until ``until``)."""
        since = {channel: {"epoch": epoch, "offset": offset}
                 for channel, (epoch, offset) in self.positions.items()}
        query = "&since=" + quote(orjson.dumps(since).decode())
        self.dialled = time.monotonic()
        while self.client is None:
            if time.monotonic() > until:
                return False
            self.recovering = True
            try:
                self.client = await opener.dial(self.again, lambda: self.listener(opener.tally),
                                                query)
            except DIAL_ERRORS as error:
                opener.failed(error)
                await asyncio.sleep(RETRY)
        return True


class ResumeTally(Tally):
    """A tally that also checks positions and recoveries."""

    def __init__(self, worker: Worker, payload: int) -> None:
        decode = frame_decoder(padding(payload), positions=True)
        super().__init__(worker, lambda channels: decode)
        self.resume_latency = Histogram()
        self.resume_failures = 0
        self.position_errors = 0

    def feed(self, client: ResumingClient, data: bytes) -> None:
        """A recovery frame first after a resume; each message after the last of its channel."""
        resumer = client.resumer
        envelopes = client.decode(data)
        for envelope in envelopes:
            kind = envelope.__class__
            if kind is Recovery:
                self.recovered(resumer, envelope)
            elif resumer.recovering:
                raise BadFrame("a resumed websocket sent something before its recovery frame")
            elif kind is not Presence:
                self.follow(resumer, envelope)
        self.count(client, (e for e in envelopes if e.__class__ is not Recovery))

    def recovered(self, resumer: Resumer, recovery: Recovery) -> None:
        if not resumer.recovering:
            raise BadFrame("a recovery frame on a websocket opened without since")
        resumer.recovering = False
        self.resume_latency.add(time.monotonic() - resumer.dialled)
        for channel, had in resumer.positions.items():
            now = recovery.channels.get(channel)
            if now is None or not now.recovered or now.epoch != had[0]:
                self.resume_failures += 1
                self.note(f"{channel} not recovered from {had}: {now}")

    def follow(self, resumer: Resumer, envelope: object) -> None:
        """The message must be the one after the last of its channel, in the same epoch."""
        had = resumer.positions.get(envelope.channel)
        if had is not None and (envelope.epoch != had[0] or envelope.offset != had[1] + 1):
            self.position_errors += 1
            self.note(f"{envelope.channel}: offset {envelope.offset} of {envelope.epoch} after "
                      f"{had[1]} of {had[0]} ({'catch-up' if envelope.catchup else 'live'})")
        resumer.positions[envelope.channel] = (envelope.epoch, envelope.offset)


async def cycle(resumer: Resumer, opener: Opener, deadline: float) -> int:
    """Drop and resume until the deadline; the number of resumes (a resumer that could not
    resume for GIVE_UP s stops, and is owed what it missed)."""
    rng = random.Random()
    resumes = 0
    while True:
        await asyncio.sleep(rng.uniform(0, HOLD))
        if time.monotonic() >= deadline:
            return resumes
        if not resumer.placed():
            continue
        resumer.drop()
        await asyncio.sleep(rng.uniform(0, AWAY))
        if not await resumer.resume(opener, deadline + GIVE_UP):
            opener.tally.resume_failures += 1
            resumer.client = resumer.dropped    # counted as a client that ended early
            resumer.client.ended_early = True
            return resumes
        resumes += 1


async def run_resumers(plan: dict, worker: Worker) -> dict:
    logging.getLogger("picows").setLevel(logging.CRITICAL)
    tally = ResumeTally(worker, plan["payload"])
    opener = Opener(plan, worker, tally)
    resumers = [Resumer(spec) for spec in plan["clients"]]

    async def first(resumer: Resumer) -> None:
        resumer.client = await opener.open(resumer.spec, lambda: resumer.listener(tally),
                                           POSITIONS)

    await asyncio.gather(*(first(resumer) for resumer in resumers))
    worker.set_state(OPENED)
    await worker.start_when_told(plan["max_seconds"])
    resumers = [resumer for resumer in resumers if resumer.client is not None]
    resumes = 0
    if plan["drops"]:
        deadline = time.monotonic() + plan["duration"]
        resumes = sum(await asyncio.gather(*(cycle(resumer, opener, deadline)
                                             for resumer in resumers)))
    await worker.wait(worker.shared.stop, plan["max_seconds"])
    result = await finish(worker, opener, [resumer.client for resumer in resumers])
    return {**result, "resumes": resumes, "resume_failures": tally.resume_failures,
            "position_errors": tally.position_errors, "caught_up": tally.caught_up,
            "resume_latency": tally.resume_latency.dump()}

"""Publishers: keep-alive connections posting numbered messages to ``POST /message``.

Without a rate a publisher runs a closed loop, one request in flight, held back while more
than ``window`` deliveries are outstanding. With a rate it runs an open loop: each message has
its time in a fixed schedule, leaves then whatever the earlier answers did (requests pipeline
on the keep-alive connection) and carries that scheduled time, so a server that falls behind
shows it as latency rather than slowing the publisher down. A publisher that itself runs late
writes all that is due in one go; at the deadline it stops, and ``sent`` tells how much of the
schedule it kept.
"""
from __future__ import annotations

import asyncio
import time

from .codec import CODECS
from .frames import USER, message_body, padding
from .httpclient import NO_ANSWER, REQUEST_TIMEOUT, Answer, ApiClient, HttpError
from .shared import POLL, Shared, Worker
from .stats import Histogram

MAX_MESSAGES = 2_000_000      # per publisher process: a hard bound besides the duration
WINDOW_POLL = 0.001


class Flow:
    """Messages sent by this process, and (window pacing) how many are not yet delivered."""

    def __init__(self, plan: dict, shared: Shared) -> None:
        self.fanout: dict[str, int] = plan["fanout"]
        self.window = plan["window"]
        self.received = shared.received
        self.sent = 0
        self.deliveries = 0
        self.first_tx: float | None = None

    def sending(self, channels: list[str]) -> None:
        if self.first_tx is None:
            self.first_tx = time.monotonic()
        self.sent += len(channels)
        self.deliveries += sum(self.fanout.get(channel, 0) for channel in channels)

    async def wait_for_window(self, deadline: float) -> None:
        """Hold while more than ``window`` deliveries are outstanding."""
        if not self.window:
            return
        while self.deliveries - sum(self.received) > self.window and time.monotonic() < deadline:
            await asyncio.sleep(WINDOW_POLL)


class Publisher:
    """One keep-alive connection posting numbered messages, ``batch`` per request."""

    def __init__(self, ident: str, index: int, api: ApiClient, plan: dict, flow: Flow) -> None:
        self.ident = ident
        self.api = api
        self.codec = CODECS[plan["codec"]]
        self.connection = api.connections[0]
        self.channels = plan["channels"]
        self.turn = index
        self.batch = plan["batch"]
        self.pad = padding(plan["payload"])
        self.flow = flow
        self.interval = plan["batch"] * plan["connections"] / plan["rate"] if plan["rate"] else 0
        self.phase = index / plan["connections"]   # open loop: connections take turns
        self.stopped = 0.0                         # when it stopped sending
        self.next_seq: dict[str, int] = {}
        self.published: dict[str, int] = {}
        self.requests = 0
        self.unanswered = 0
        self.errors: list[str] = []
        self.latency = Histogram()

    def build(self, stamp: float) -> tuple[bytes, list[str]]:
        items, channels = [], []
        for _ in range(self.batch):
            channel = self.channels[self.turn % len(self.channels)]
            self.turn += 1
            seq = self.next_seq.get(channel, 0)
            self.next_seq[channel] = seq + 1
            items.append({"user": USER, "channel": channel,
                          "message": message_body(self.ident, seq, stamp, self.pad)})
            channels.append(channel)
        self.flow.sending(channels)
        return self.codec.publish(self.api, items), channels

    async def run(self, deadline: float) -> None:
        if self.interval:
            await self.run_open(deadline)
        else:
            await self.run_closed(deadline)

    async def run_closed(self, deadline: float) -> None:
        while time.monotonic() < deadline and self.flow.sent < MAX_MESSAGES:
            await self.flow.wait_for_window(deadline)
            start = time.monotonic()
            request, channels = self.build(start)
            try:
                status, body = await self.connection.request(request)
            except HttpError as error:
                status, body = NO_ANSWER, str(error).encode()
            self.answered(channels, start, status, body)
        self.stopped = time.monotonic()

    async def run_open(self, deadline: float) -> None:
        """Write every request whose time came, in one go, until the deadline (a publisher
        running late sends less); then wait for the answers."""
        due = time.monotonic() + self.interval * self.phase
        while (now := time.monotonic()) < deadline and self.flow.sent < MAX_MESSAGES:
            if due > now:
                await asyncio.sleep(due - now)
                continue
            requests, answers = [], []
            while due <= now and self.flow.sent < MAX_MESSAGES:
                request, channels = self.build(due)
                requests.append(request)
                answers.append(self.answer_for(channels, due))
                due += self.interval
            await self.submit(requests, answers)
            await asyncio.sleep(0)   # read the answers between bursts, even when running late
        self.stopped = time.monotonic()
        await self.wait_for_answers(self.stopped + REQUEST_TIMEOUT)

    async def submit(self, requests: list[bytes], answers: list[Answer]) -> None:
        self.unanswered += len(answers)
        try:
            await self.connection.connect()
        except HttpError as error:
            for answer in answers:
                answer(NO_ANSWER, str(error).encode())
            return
        self.connection.submit(b"".join(requests), answers)

    def answer_for(self, channels: list[str], sent: float) -> Answer:
        def answer(status: int, body: bytes) -> None:
            self.unanswered -= 1
            self.answered(channels, sent, status, body)
        return answer

    async def wait_for_answers(self, until: float) -> None:
        while self.unanswered > 0 and time.monotonic() < until:
            await asyncio.sleep(POLL)
        if self.unanswered > 0:
            self.connection.close()   # the requests still pending fail with NO_ANSWER

    def answered(self, channels: list[str], sent: float, status: int, body: bytes) -> None:
        self.latency.add(time.monotonic() - sent)
        self.requests += 1
        if status not in self.codec.accepted:
            self.errors.append(f"{status or 'no answer'}: {body[:200]!r}")
            return
        for channel in channels:
            self.published[channel] = self.published.get(channel, 0) + 1


async def run_publishers(plan: dict, worker: Worker) -> dict:
    # One keep-alive connection per publisher, through the nodes' APIs in turn.
    apis = [ApiClient(plan["apis"][index % len(plan["apis"])], plan["secret"])
            for index in range(plan["connections"])]
    flow = Flow(plan, worker.shared)
    prefix = plan.get("prefix", "")   # sets publishers of one run apart (soak phases)
    publishers = [Publisher(f"{prefix}{worker.slot}.{index}", index, api, plan, flow)
                  for index, api in enumerate(apis)]
    await worker.start_when_told(plan["max_seconds"])
    deadline = time.monotonic() + plan["duration"]
    await asyncio.gather(*(publisher.run(deadline) for publisher in publishers))
    usage = worker.usage.report()
    last_tx = max(publisher.stopped for publisher in publishers)
    for api in apis:
        api.close()
    latency = Histogram()
    for publisher in publishers:
        latency.merge(publisher.latency.dump())
    errors = [error for publisher in publishers for error in publisher.errors]
    return {**usage, "published": [[channel, publisher.ident, count]
                                   for publisher in publishers
                                   for channel, count in publisher.published.items()],
            "sent": flow.sent, "requests": sum(publisher.requests for publisher in publishers),
            "first_tx": flow.first_tx, "last_tx": last_tx,
            "seconds": last_tx - (flow.first_tx or last_tx),
            "request_latency": latency.dump(), "errors": errors[:20], "error_count": len(errors)}

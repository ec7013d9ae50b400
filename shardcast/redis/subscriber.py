"""A shard's ordered stream of publications: one Redis connection subscribed to the channels
its connections are in (and to its own inbox), handing what arrives to the actor.

Per channel it tracks the last offset seen: a duplicate is dropped; a gap holds what follows
while the missing messages are read from history, then delivers them in order; what history
no longer holds is counted (``lost``) and logged. After a lost connection every channel is
resubscribed and repaired the same way. ``reached`` tells when the stream has come as far as a
history read went: a resume waits for it, so that the two meet without overlap. A probe
published to the inbox every second through the command connection must come back within
``probe_timeout``: a subscription that went silent (Centrifugo users lost messages to exactly
this) is dropped and rebuilt.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import orjson

from .. import envelopes
from .keys import Keys
from .owner import history_entries
from .resp import Redis, RedisUnavailable

log = logging.getLogger("shardcast.redis")
LINGER = 5.0                # seconds a channel stays subscribed after its last local member
PROBE_EVERY = 1.0
RETRY_REPAIR = 1.0          # seconds before a repair Redis could not serve is tried again
MAX_HELD = 10_000           # publications held for one channel's repair before giving up
Publication = tuple[int, bytes, list, bytes]     # offset, epoch, route, frame


class Subscriber:
    def __init__(self, url: str, timeout: float, probe_timeout: float, keys: Keys,
                 inbox: str, commands: Redis, deliver: Callable[[list, bytes], None],
                 activate: Callable[[dict], None]) -> None:
        self.keys = keys
        self.inbox = inbox.encode()
        self.commands = commands
        self.deliver = deliver
        self.activate = activate
        self.probe_timeout = probe_timeout
        self.loop = asyncio.get_running_loop()
        self.redis = Redis(url, timeout, f"subscriber {inbox}", on_push=self.on_push,
                           on_ready=self.resubscribe)
        self.wanted: dict[str, int] = {}           # channel -> local connections in it
        self.by_key: dict[bytes, str] = {}         # its pub/sub channel -> channel
        self.confirmed: set[str] = set()
        self.waiting: dict[str, list[asyncio.Future]] = {}
        self.lingering: dict[str, asyncio.TimerHandle] = {}
        self.positions: dict[str, list] = {}       # channel -> [epoch, last offset]
        self.held: dict[str, list[Publication]] = {}   # channels under repair -> what arrived
        # channel -> (epoch, offset, future) of each wait for the stream to come that far
        self.reaching: dict[str, list[tuple[bytes, int, asyncio.Future]]] = {}
        self.probes: dict[int, float] = {}          # outstanding probe -> sent (monotonic)
        self.probe_count = 0
        self.lag = 0.0
        self.repaired = 0           # messages read back from history into a gap
        self.lost = 0               # messages a gap missed that history no longer held
        self.duplicates = 0
        self.stalls = 0

    def start(self) -> None:
        self.redis.start()
        self.loop.call_later(PROBE_EVERY, self.probe)

    # -- what the shard wants ------------------------------------------------------------

    def add(self, name: str) -> None:
        """One more local connection in ``name``: subscribed on the first."""
        self.wanted[name] = self.wanted.get(name, 0) + 1
        timer = self.lingering.pop(name, None)
        if timer is not None:
            timer.cancel()
        key = self.keys.channel(name).encode()
        if key not in self.by_key:      # else asked already (or sent again on reconnection)
            self.by_key[key] = name
            self.redis.send_unanswered("SUBSCRIBE", key)

    def when_ready(self, names: list[str]) -> asyncio.Future | None:
        """None when every channel's subscription is confirmed, else a future done when it
        is: a shard answers a join only then, so the join's activation reaches it."""
        futures = []
        for name in names:
            if name not in self.confirmed:
                future = self.loop.create_future()
                self.waiting.setdefault(name, []).append(future)
                futures.append(future)
        return asyncio.gather(*futures) if futures else None

    def reached(self, name: str, epoch: bytes, offset: int) -> asyncio.Future | None:
        """None when the stream of ``name`` delivered everything up to ``offset`` of
        ``epoch``; else a future done when it has."""
        if self._at(name, epoch, offset):
            return None
        future = self.loop.create_future()
        self.reaching.setdefault(name, []).append((epoch, offset, future))
        return future

    def _at(self, name: str, epoch: bytes, offset: int) -> bool:
        position = self.positions.get(name)
        return position is not None and position[0] == epoch and position[1] >= offset

    def _advanced(self, name: str) -> None:
        """Wake the waits the stream of ``name`` has now come as far as."""
        left = []
        for wait in self.reaching.pop(name, ()):
            epoch, offset, future = wait
            if future.done():           # given up on
                continue
            if self._at(name, epoch, offset):
                future.set_result(None)
            else:
                left.append(wait)
        if left:
            self.reaching[name] = left

    def remove(self, name: str) -> None:
        count = self.wanted.get(name, 0) - 1
        if count > 0:
            self.wanted[name] = count
            return
        self.wanted.pop(name, None)
        if name not in self.lingering:
            self.lingering[name] = self.loop.call_later(LINGER, self._leave, name)

    def _leave(self, name: str) -> None:
        self.lingering.pop(name, None)
        if name in self.wanted:
            return
        key = self.keys.channel(name)
        self.by_key.pop(key.encode(), None)
        self.confirmed.discard(name)
        self.positions.pop(name, None)
        self.held.pop(name, None)
        for _, _, future in self.reaching.pop(name, ()):
            if not future.done():       # nobody here follows the channel any more
                future.set_result(None)
        self.redis.send_unanswered("UNSUBSCRIBE", key)

    def resubscribe(self, redis: Redis) -> None:
        """A new connection: the inbox and every channel again, each repaired once confirmed."""
        self.confirmed.clear()
        self.probes.clear()
        for name in self.by_key.values():
            self.held.setdefault(name, [])
        redis.send_unanswered("SUBSCRIBE", self.inbox, *self.by_key)

    # -- what arrives ----------------------------------------------------------------------

    def on_push(self, reply) -> None:
        try:
            self._push(reply)
        except Exception:       # one bad publication must not end the subscription
            log.exception("cannot handle a publication from Redis")

    def _push(self, reply) -> None:
        if not isinstance(reply, list) or len(reply) < 3:
            return
        kind, key, data = reply[0], reply[1], reply[2]
        if kind == b"message":
            if key == self.inbox:
                self._inbox(data)
            else:
                name = self.by_key.get(key)
                if name is not None:
                    self._publication(name, data)
        elif kind == b"subscribe":
            name = self.by_key.get(key)
            if name is not None:
                self._confirmed(name)

    def _confirmed(self, name: str) -> None:
        self.confirmed.add(name)
        for future in self.waiting.pop(name, ()):
            if not future.done():
                future.set_result(None)
        if name in self.held:
            asyncio.ensure_future(self._repair(name, None))

    def _inbox(self, data: bytes) -> None:
        _, _, rest = data.partition(b"\n")
        route_json, _, frame = rest.partition(b"\n")
        route = orjson.loads(route_json)
        if route[0] == "p":
            sent = self.probes.pop(route[1], None)
            if sent is not None:
                self.lag = time.monotonic() - sent
        else:
            self.deliver(route, frame)

    def _publication(self, name: str, data: bytes) -> None:
        head, _, rest = data.partition(b"\n")
        offset, epoch, frames = head.split(b" ")
        route_json, _, frame = rest.partition(b"\n")
        route = orjson.loads(route_json)
        position = int(offset)
        if route[0] == "c":
            route[4] = frames == b"1"
            if position:            # a message: its position, for clients that want it
                route[7] = [epoch.decode(), position]
        publication = (position, epoch, route, frame)
        held = self.held.get(name)
        if held is None:
            self._apply(name, publication)
            return
        held.append(publication)
        if len(held) > MAX_HELD:
            log.error("%s: repair is taking too long; delivering what arrived without it", name)
            self.positions.pop(name, None)
            for publication in self.held.pop(name):
                self._apply(name, publication)

    def _apply(self, name: str, publication: Publication) -> None:
        offset, epoch, route, frame = publication
        if route[0] == "a":         # an activation carries the position it happened at
            self.positions.setdefault(name, [epoch, offset])
            self.activate({"pairs": [route[1:]]})
        elif not offset or self._next(name, publication):
            self.deliver(route, frame)
        if offset and self.reaching:
            self._advanced(name)

    def _next(self, name: str, publication: Publication) -> bool:
        """Whether a message is the next of its channel (its position then moves on); a
        duplicate is dropped, one after a gap held while the gap is repaired."""
        offset, epoch = publication[0], publication[1]
        position = self.positions.get(name)
        if position is None or position[0] != epoch:
            self.positions[name] = [epoch, offset]
        elif offset <= position[1]:
            self.duplicates += 1
            return False
        elif offset > position[1] + 1:
            self.held[name] = [publication]
            asyncio.ensure_future(self._repair(name, offset - 1))
            return False
        else:
            position[1] = offset
        return True

    # -- repair ------------------------------------------------------------------------------

    async def _repair(self, name: str, upto: int | None) -> None:
        """Deliver from history what came after the last position (up to ``upto``, or to what
        Redis has now), then release what was held meanwhile."""
        position = self.positions.get(name)
        try:
            if position is not None:
                await self._fill(name, position, upto)
        except (RedisUnavailable, RuntimeError) as error:
            log.warning("cannot repair %s yet: %s", name, error)
            self.loop.call_later(RETRY_REPAIR, self._retry_repair, name, upto)
            return
        held = self.held.pop(name, [])
        for publication in held:
            self._apply(name, publication)

    def _retry_repair(self, name: str, upto: int | None) -> None:
        if name in self.held:
            asyncio.ensure_future(self._repair(name, upto))

    async def _fill(self, name: str, position: list, upto: int | None) -> None:
        keys = self.keys
        held = self.held.get(name) or []
        first_held = next((p[0] for p in held if p[0]), None)
        top, epoch, frames = await self.commands.call(
            "HMGET", keys.meta(name), "offset", "epoch", "frames")
        if epoch != position[0]:
            if top is not None:
                log.warning("%s lost its history (new epoch): what was missed is gone", name)
            return
        last = int(top) if upto is None else upto
        if first_held is not None:
            last = min(last, first_held - 1)
        if last <= position[1]:
            return
        members = await self.commands.call("ZRANGEBYSCORE", keys.history(name),
                                           position[1] + 1, last)
        found = history_entries(members)
        for offset, entry in found:
            route = ["c", name, entry["exclude_users"], entry["pm_users"], frames == b"1",
                     None, envelopes.publication_stamp(), [epoch.decode(), offset]]
            self.deliver(route, orjson.dumps([envelopes.from_history(entry)]))
        missed = last - position[1] - len(found)
        self.repaired += len(found)
        if missed:
            self.lost += missed
            log.warning("%s: %d messages missed while the subscription was away are no "
                        "longer in history", name, missed)
        position[1] = last
        self._advanced(name)

    # -- liveness ------------------------------------------------------------------------------

    def probe(self) -> None:
        """Publish a probe to the inbox; one unanswered for probe_timeout means the
        subscription is stalled: drop it, resubscribe, repair."""
        now = time.monotonic()
        if self.redis.ready and self.commands.ready:
            if any(now - sent > self.probe_timeout for sent in self.probes.values()):
                self.stalls += 1
                log.warning("the Redis subscription went silent; rebuilding it")
                self.probes.clear()
                if self.redis.conn is not None:
                    self.redis.conn.close()
            else:
                self.probe_count += 1
                self.probes[self.probe_count] = now
                token = self.probe_count
                self.commands.send("PUBLISH", self.inbox,
                                   b"0 - 0\n" + orjson.dumps(["p", token]) + b"\n")
        self.loop.call_later(PROBE_EVERY, self.probe)

    def stats(self) -> dict:
        return {"subscriptions": len(self.by_key), "subscription_lag": self.lag,
                "gaps_repaired": self.repaired, "gaps_lost": self.lost,
                "duplicates_dropped": self.duplicates, "subscription_stalls": self.stalls,
                "subscription_reconnects": self.redis.reconnects}

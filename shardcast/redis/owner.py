"""The channel-owner and user-owner commands of a shard, with the state kept in Redis.

Same command names, arguments and answers as the in-memory owners (``shard.Shard``,
``user.UserOwner``), so the supervisor's side of each API call is the same on one node and in
a cluster. A node's owner shard of a channel is the one that talks to Redis about it: the calls
it issues run in the order they were sent (one connection), which keeps an /info after a join
showing the join. Requests answer with a future; a Redis that is away makes them answer a 503.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import orjson

from .. import envelopes
from ..channel import DEFAULT_SETTINGS, describe
from ..config import Config
from ..user import AMENDS
from .keys import Keys
from .resp import Redis, RedisUnavailable
from .scripts import Scripts
from .users import RedisUsers

log = logging.getLogger("shardcast.redis")
REDIS_DOWN = {"error": {"error": "Redis is unreachable; retry in a moment"}, "status": 503}
MEMBER = b":"      # history members are b"<offset>:<entry JSON>"
EXISTS_BATCH = 1000     # keys an EXISTS asks about: Redis answers each command at once


def meta_fields(settings: dict | None) -> list:
    """A channel's settings as meta hash fields: the whole for /info, and the flags the
    scripts read without decoding JSON."""
    full = {**DEFAULT_SETTINGS, **(settings or {})}
    flag = {True: 1, False: 0}
    return ["settings", orjson.dumps(full), "store", flag[full["store_history"]],
            "hsize", full["history_size"], "frames", flag[full["store_frames"]],
            "presence", flag[full["notify_presence"]],
            "lists", flag[full["broadcast_presence_with_user_lists"]],
            "notify", flag[full["notify_state"]]]


def history_entries(members: list[bytes]) -> list[tuple[int, dict]]:
    """(offset, entry) from history members, oldest first."""
    entries = []
    for member in members:
        offset, _, entry = member.partition(MEMBER)
        entries.append((int(offset), orjson.loads(entry)))
    return entries


def _failed(reply: Any) -> bool:
    return isinstance(reply, Exception)


class RedisOwner(RedisUsers):
    """Owner commands on Redis; ``index`` and ``node_id`` name this shard's inbox."""

    def __init__(self, config: Config, node_id: str, index: int, shards: int, redis: Redis,
                 scripts: Scripts, keys: Keys) -> None:
        self.config = config
        self.node_id = node_id
        self.index = index
        self.shards = shards
        self.redis = redis
        self.scripts = scripts
        self.keys = keys
        self.ttl_ms = int(config.history_ttl * 1000)
        self.published = 0
        self.failures = 0              # commands Redis refused or could not take
        self.last_logged = 0.0
        # Per channel with an edit or delete in flight (it takes Redis round trips before its
        # announcement): the posts and amends made after it, started in order once it is done.
        self.amending: dict[str, list[tuple[Callable[..., None], tuple]]] = {}

    def _check(self, reply: Any) -> bool:
        """True when ``reply`` is an answer; failures are counted and logged now and then."""
        if not _failed(reply):
            return True
        self.failures += 1
        now = time.monotonic()
        if now - self.last_logged > 5:
            self.last_logged = now
            log.warning("a Redis command failed (%d so far): %s", self.failures, reply)
        return False

    # -- channels -----------------------------------------------------------------------

    def join(self, args: dict) -> None:
        for name, settings, conn_id, user, public_state in args["joins"]:
            keys = self.keys
            activation = orjson.dumps(["a", name, conn_id])
            self.scripts.send(
                self.redis, "join",
                [keys.meta(name), keys.members(name), keys.member_users(name),
                 keys.member_states(name), keys.conn_channels(conn_id), keys.channels],
                [name, keys.channel(name), conn_id, user,
                 orjson.dumps(public_state) if public_state else "", activation,
                 envelopes.new_uuid(), time.time(), *meta_fields(settings)],
                callback=lambda reply, name=name, user=user, state=public_state or {}:
                    self._joined(name, user, state, reply))

    def _joined(self, name: str, user: str, state: dict, reply: Any) -> None:
        if self._check(reply) and reply[0]:
            self._presence(name, user, state, orjson.loads(reply[1]))

    def leave(self, args: dict) -> None:
        name, conn_id = args["channel"], args["conn_id"]
        keys = self.keys
        self.scripts.send(
            self.redis, "leave",
            [keys.meta(name), keys.members(name), keys.member_users(name),
             keys.member_states(name), keys.conn_channels(conn_id)],
            [name, conn_id, self.ttl_ms, time.time()],
            callback=lambda reply: self._left(name, reply))

    def _left(self, name: str, reply: Any) -> None:
        if self._check(reply) and reply and reply[0]:
            self._presence(name, reply[1].decode(), None, orjson.loads(reply[2]))

    def _presence(self, name: str, user: str, state: dict | None, settings: dict) -> None:
        """``state`` is the joiner's public state, or None for a part."""
        if not settings["notify_presence"]:
            return
        if not settings["broadcast_presence_with_user_lists"]:
            self._announce(name, envelopes.presence(name, user, state is not None, state, []),
                           [user])
            return
        asyncio.ensure_future(self._presence_with_list(name, user, state))

    async def _presence_with_list(self, name: str, user: str, state: dict | None) -> None:
        try:
            users, states = await asyncio.gather(
                self.redis.call("HKEYS", self.keys.member_users(name)),
                self.redis.call("HGETALL", self.keys.member_states(name)))
        except (RedisUnavailable, RuntimeError) as error:
            self._check(error)
            return
        public = {states[i].decode(): orjson.loads(states[i + 1])
                  for i in range(0, len(states), 2)}
        members = [{"user": member, "state": public.get(member) or {}}
                   for member in sorted(u.decode() for u in users)]
        self._announce(name, envelopes.presence(name, user, state is not None, state, members),
                       [user])

    def _announce(self, name: str, envelope: dict, exclude: list, pm: list = (),
                  amend: list | None = None) -> None:
        route = ["c", name, exclude, list(pm), None, amend, envelopes.publication_stamp(), None]
        self.scripts.send(self.redis, "announce", [self.keys.meta(name)],
                          [self.keys.channel(name), _body(route, envelope)],
                          callback=self._check)

    def configure(self, args: dict) -> asyncio.Future:
        return asyncio.ensure_future(self._configure(args["configs"]))

    async def _configure(self, configs: dict) -> dict:
        keys = self.keys
        try:
            for name, settings in configs.items():
                await self.scripts.call(
                    self.redis, "configure",
                    [keys.meta(name), keys.history(name), keys.members(name), keys.channels],
                    [name, envelopes.new_uuid(), time.time(), self.ttl_ms,
                     *meta_fields(settings)])
            return await self._infos(list(configs), False, False)
        except (RedisUnavailable, RuntimeError):
            return REDIS_DOWN

    def info(self, args: dict) -> asyncio.Future:
        """As ``Shard.info``: the chosen channels' infos, and how many were chosen."""
        return asyncio.ensure_future(self._guarded(self._info(args)))

    async def _info(self, args: dict) -> dict:
        names = args["channels"]
        if names is None:
            names = [name.decode() for name in await self.redis.call(
                "ZRANGE", self.keys.channels, 0, -1)]
        exclude, after, match = set(args["exclude"]), args.get("after"), args.get("match")
        chosen = [name for name in dict.fromkeys(names) if name not in exclude
                  and (after is None or name > after)
                  and (not match or match in name.casefold())]
        limit = args.get("limit")
        if limit is None:
            infos = await self._infos(chosen, args["history"], args["users"])
            return {"channels": infos, "chosen": len(infos)}
        # A page: the first ``limit`` channels by name that exist, and how many exist in all
        # (info.gather tells what remains from it).
        chosen.sort()
        infos, start = {}, 0
        while len(infos) < limit and start < len(chosen):
            batch = chosen[start:start + limit - len(infos)]
            start += len(batch)
            infos.update(await self._infos(batch, args["history"], args["users"]))
        return {"channels": infos,
                "chosen": len(infos) + await self._existing(chosen[start:])}

    async def _infos(self, names: list[str], history: bool, users: bool) -> dict:
        """The infos of those of ``names`` that exist."""
        found = await asyncio.gather(*(self._channel(name, history, users) for name in names))
        return {name: info for name, info in zip(names, found) if info is not None}

    async def _existing(self, names: list[str]) -> int:
        """How many of ``names`` (each once) are channels."""
        counts = await asyncio.gather(*(
            self.redis.call("EXISTS", *map(self.keys.meta, names[start:start + EXISTS_BATCH]))
            for start in range(0, len(names), EXISTS_BATCH)))
        return sum(counts)

    async def _channel(self, name: str, history: bool, users: bool) -> dict | None:
        keys, call = self.keys, self.redis.call
        meta = call("HMGET", keys.meta(name), "settings", "uuid", "last_active")
        count = call("HLEN", keys.members(name))
        names = call("HKEYS", keys.member_users(name)) if users else None
        kept = call("ZRANGE", keys.history(name), 0, -1) if history else None
        settings, uuid, last_active = await meta
        if settings is None:
            return None
        return describe(name, uuid.decode(), orjson.loads(settings),
                        [entry for _, entry in history_entries(await kept)] if history else [],
                        float(last_active or 0), await count,
                        sorted(u.decode() for u in await names) if users else [])

    async def _guarded(self, work) -> Any:
        try:
            return await work
        except (RedisUnavailable, RuntimeError):
            return REDIS_DOWN

    # -- messages -----------------------------------------------------------------------

    async def history_after(self, name: str, offset: int) -> dict | None:
        """As ``Channel.history_after``, from Redis."""
        keys, call = self.keys, self.redis.call
        meta = call("HMGET", keys.meta(name), "epoch", "offset")
        kept = call("ZRANGEBYSCORE", keys.history(name), f"({offset}", "+inf")
        deleted = call("ZRANGEBYSCORE", keys.deleted(name), f"({offset}", "+inf")
        epoch, top = await meta
        if epoch is None:
            return None
        return {"epoch": epoch.decode(), "top": int(top),
                "entries": [list(found) for found in history_entries(await kept)],
                "deleted": [int(o) for o in await deleted]}

    def publish(self, items: list[dict]) -> None:
        now, epoch = time.time(), envelopes.new_uuid()
        for item in items:
            self._in_order(item["channel"], self._publish, item, now, epoch)

    def _publish(self, item: dict, now: float, epoch: str) -> None:
        keys, name = self.keys, item["channel"]
        route = ["c", name, item["exclude_users"], item["pm_users"], None, None,
                 item.pop("stamp"), None]     # Redis fills in the channel's settings
        entry = b"" if item["no_history"] else orjson.dumps(envelopes.history_entry(item))
        self.scripts.send(
            self.redis, "publish", [keys.meta(name), keys.history(name), keys.channels],
            [name, keys.channel(name), epoch, entry, _body(route, envelopes.message(item)),
             now, self.ttl_ms], callback=self._published)

    def _published(self, reply: Any) -> None:
        if self._check(reply) and reply is not None:
            self.published += 1

    def edit(self, items: list[dict]) -> None:
        for item in items:
            self._in_order(item["channel"], self._start_amend, item, envelopes.edit(item),
                           "edit")

    def delete(self, items: list[dict]) -> None:
        for item in items:
            self._in_order(item["channel"], self._start_amend, item, envelopes.delete(item),
                           "delete")

    def _in_order(self, name: str, start: Callable[..., None], *args: Any) -> None:
        """``start(*args)`` now, or after the edits and deletes in flight on ``name``: a post
        made after an edit must not reach the members before the edit does."""
        waiting = self.amending.get(name)
        if waiting is not None:
            waiting.append((start, args))
            return
        if start == self._start_amend:
            self.amending[name] = []
        start(*args)

    def _amended(self, name: str) -> None:
        """An edit or delete of ``name`` is announced: start what waited for it, up to the
        next edit or delete."""
        waiting = self.amending[name]
        while waiting:
            start, args = waiting.pop(0)
            start(*args)
            if start == self._start_amend:
                return
        del self.amending[name]

    def _start_amend(self, item: dict, envelope: dict, operation: str) -> None:
        asyncio.ensure_future(self._amend(item, envelope, operation))

    async def _amend(self, item: dict, envelope: dict, operation: str) -> None:
        """Change the history entry (when kept), then tell the members."""
        try:
            await self._change_entry(item, operation)
        except (RedisUnavailable, RuntimeError) as error:
            self._check(error)
        else:
            item.pop("stamp", None)
            self._announce(item["channel"], envelope, item["exclude_users"], item["pm_users"],
                           [operation, item["uuid"]])
        finally:
            self._amended(item["channel"])

    async def _change_entry(self, item: dict, operation: str) -> None:
        name, uuid = item["channel"], item["uuid"]
        key = self.keys.history(name)
        for member in await self.redis.call("ZRANGE", key, 0, -1):
            offset, entry = history_entries([member])[0]
            if entry["uuid"] != uuid:
                continue
            new = b""
            if operation == "edit":
                for field in ("message", "user", "timestamp", "edited"):
                    if field in item:
                        entry[field] = item[field]
                new = b"%d:%s" % (offset, orjson.dumps(entry))
            await self.scripts.call(self.redis, "amend", [key, self.keys.deleted(name)],
                                    [member, new, offset, self.ttl_ms])
            return

    def state_change(self, args: dict) -> None:
        user, state = args["user"], args["public_state"]
        for name in args["channels"]:
            keys = self.keys
            envelope = envelopes.state_change(name, user, state, args["changed"])
            route = ["c", name, [], [], None, None, envelopes.publication_stamp(), None]
            self.scripts.send(
                self.redis, "state_change",
                [keys.meta(name), keys.member_users(name), keys.member_states(name)],
                [user, orjson.dumps(state) if state else "", 1 if args["notify"] else 0,
                 keys.channel(name), _body(route, envelope)], callback=self._check)

    def direct(self, args: dict) -> None:
        envelope = args["envelope"]
        amend = AMENDS.get(envelope["type"])
        if amend is None:
            self.published += 1
        users = list(dict.fromkeys(args["users"]))   # a user listed twice gets one copy
        self.scripts.send(self.redis, "direct", [self.keys.user_conns(u) for u in users],
                          [orjson.dumps([amend, envelope["uuid"]] if amend else None),
                           args["stamp"], orjson.dumps([envelope])], callback=self._check)


def _body(route: list, envelope: dict) -> bytes:
    """What follows a publication's position line: route, newline, client frame."""
    return orjson.dumps(route) + b"\n" + orjson.dumps([envelope])

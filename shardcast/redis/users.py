"""The user-owner commands of a shard, with users kept in Redis: state, public keys, and
the connections of each user (the inbox of the shard holding each, for direct messages).

A part of ``owner.RedisOwner``, as ``user.UserOwner`` is of the in-memory ``Shard``.
"""
from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import orjson

from .. import limits
from ..routing import owner
from ..user import UNKNOWN_USER

if TYPE_CHECKING:
    from .owner import RedisOwner

FORGET_BATCH = 1000     # connections forgotten at once


class RedisUsers:
    """The user commands (a part of the shard's ``RedisOwner``, whose connection they use)."""

    def inbox(self: RedisOwner, conn_id: str) -> str:
        """Where direct messages for a connection of this node go: its shard's inbox."""
        return self.keys.shard_inbox(self.node_id, owner(conn_id, self.shards))

    def user_connect(self: RedisOwner, args: dict) -> asyncio.Future:
        return asyncio.ensure_future(self._guarded(self._user_connect(args)))

    async def _user_connect(self: RedisOwner, args: dict) -> dict:
        name, conn_id = args["user"], args["conn_id"]
        fresh, state = _pairs(args["fresh_state"]), _pairs(args["state"])
        keys = self.keys
        reply = await self.scripts.call(
            self.redis, "user_connect",
            [keys.user(name), keys.state(name), keys.user_conns(name), keys.users, keys.online],
            [name, conn_id, self.inbox(conn_id), time.time(), orjson.dumps(args["public_keys"]),
             self.config.max_connections_per_user, self.config.max_state_keys, len(fresh),
             *fresh, *state])
        verdict = reply[0]
        if verdict == b"conns":
            return limits.user_connections_full(reply[1], self.config.max_connections_per_user)
        if verdict == b"keys":
            return limits.state_keys_over(reply[1], self.config.max_state_keys)
        full = _state(reply[1])
        return {"state": full, "public_state": _public(full, args["public_keys"])}

    def user_public(self: RedisOwner, args: dict) -> asyncio.Future:
        return asyncio.ensure_future(self._guarded(self._user_public(args["user"])))

    async def _user_public(self: RedisOwner, name: str) -> dict:
        state, public_keys = await asyncio.gather(
            self.redis.call("HGETALL", self.keys.state(name)),
            self.redis.call("HGET", self.keys.user(name), "public_keys"))
        return {"public_state": _public(_state(state), orjson.loads(public_keys or b"[]"))}

    def user_state(self: RedisOwner, args: dict) -> asyncio.Future:
        return asyncio.ensure_future(self._guarded(self._user_state(args)))

    async def _user_state(self: RedisOwner, args: dict) -> dict:
        name, keys = args["user"], self.keys
        public_keys = orjson.dumps(args["public_keys"]) if "public_keys" in args else b""
        reply = await self.scripts.call(
            self.redis, "user_state", [keys.user(name), keys.state(name), keys.user_conns(name)],
            [self.config.max_state_keys, public_keys, time.time(), *_pairs(args["state"])])
        if reply[0] == b"unknown":
            return UNKNOWN_USER
        if reply[0] == b"keys":
            return limits.state_keys_over(reply[1], self.config.max_state_keys)
        _, before, after, old_keys, new_keys, changed_pairs, conns = reply
        old_keys, new_keys = orjson.loads(old_keys or b"[]"), orjson.loads(new_keys or b"[]")
        state = _state(after)
        public = _public(state, new_keys)
        changed = [{"key": changed_pairs[i].decode(), "value": orjson.loads(changed_pairs[i + 1])}
                   for i in range(0, len(changed_pairs), 2)]
        return {
            "user_state": state,
            "changed_state": changed,
            "public_keys": new_keys,
            "public_state": public,
            "changed_public": [item for item in changed if item["key"] in new_keys],
            "refresh": bool(changed) or public != _public(_state(before), old_keys),
            "conns": sorted(conn.decode() for conn in conns),
        }

    def user_states(self: RedisOwner, args: dict) -> asyncio.Future:
        return asyncio.ensure_future(self._guarded(self._user_states(args)))

    async def _user_states(self: RedisOwner, args: dict) -> list[dict]:
        keys, call = self.keys, self.redis.call
        wanted = [(name, call("EXISTS", keys.user(name)), call("HGETALL", keys.state(name)),
                   call("HGET", keys.user(name), "public_keys"),
                   call("HKEYS", keys.user_conns(name)) if args.get("connections") else None)
                  for name in args["users"]]
        found = []
        for name, exists, state, public_keys, conns in wanted:
            if not await exists:
                continue
            full = _state(await state)
            entry = {"user": name, "state": (_public(full, orjson.loads(await public_keys or b"[]"))
                                             if args["public"] else full)}
            if conns is not None:
                entry["connections"] = sorted(conn.decode() for conn in await conns)
            found.append(entry)
        return found

    async def forget_conns(self: RedisOwner, conn_ids: list[str], registry: str,
                           run: str | None = None) -> None:
        """``forget_conn`` for each, pipelined a batch at a time (a shard may have held
        100,000: all at once would hold a coroutine and its futures for each)."""
        for start in range(0, len(conn_ids), FORGET_BATCH):
            await asyncio.gather(*(self.forget_conn(conn_id, registry, run)
                                   for conn_id in conn_ids[start:start + FORGET_BATCH]))

    async def forget_conn(self: RedisOwner, conn_id: str, registry: str,
                          run: str | None = None) -> None:
        """A connection whose shard is gone (or never told Redis): parted from its channels
        and user, its keys removed, as its shard does when it ends normally. With ``run``,
        only if that run of its node made it: a later one, back under the node's id, may
        already have registered connections again."""
        keys, call = self.keys, self.redis.call
        (user, made_by), channels = await asyncio.gather(
            call("HMGET", keys.conn(conn_id), "user", "run"),
            call("SMEMBERS", keys.conn_channels(conn_id)))
        if run is not None and made_by is not None and made_by.decode() != run:
            return
        for name in channels:
            self.leave({"channel": name.decode(), "conn_id": conn_id})
        if user is not None:
            self.user_conn_gone({"user": user.decode(), "conn_id": conn_id})
        await asyncio.gather(call("DEL", keys.conn(conn_id)), call("SREM", registry, conn_id))

    def user_conn_gone(self: RedisOwner, args: dict) -> None:
        name, keys = args["user"], self.keys
        self.scripts.send(self.redis, "user_conn_gone",
                          [keys.user(name), keys.state(name), keys.user_conns(name), keys.online],
                          [name, args["conn_id"], int(self.config.gc_users_after * 1000)],
                          callback=self._check)


def _pairs(state: dict) -> list:
    """A state dict as key, JSON value, ... for the scripts."""
    return [part for key, value in state.items() for part in (key, orjson.dumps(value))]


def _state(flat: list[bytes]) -> dict:
    return {flat[i].decode(): orjson.loads(flat[i + 1]) for i in range(0, len(flat), 2)}


def _public(state: dict, public_keys: list[str]) -> dict:
    return {key: state[key] for key in public_keys if key in state}

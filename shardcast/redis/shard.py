"""A shard of a cluster node: it hosts its connections exactly as on one node, while the
channels and users it owns live in Redis (``owner.RedisOwner``) and publications reach it on
its own Redis subscription (``subscriber.Subscriber``), in Redis' order.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from ..config import Config
from ..connection import Connection
from ..shard import Net, Shard
from .keys import Keys
from .owner import REDIS_DOWN, RedisOwner
from .resp import Redis, RedisError, RedisUnavailable
from .scripts import Scripts
from .subscriber import Subscriber

log = logging.getLogger("shardcast.shard")
RECONCILING = {"error": {"error": "this shard is clearing the connections it no longer holds "
                                  "from Redis; retry in a moment"}, "status": 503}
OWNER_COMMANDS = ("join", "leave", "configure", "info", "publish", "edit", "delete", "direct",
                  "state_change", "user_connect", "user_public", "user_state", "user_states",
                  "user_conn_gone")


class ClusterShard(Shard):
    def __init__(self, index: int, shards: int, config: Config, net: Net, node_id: str,
                 run: str) -> None:
        super().__init__(index, shards, config, net)
        self.node_id = node_id
        self.run = run
        self.keys = keys = Keys(config.redis_prefix)
        self.my_conns = keys.shard_conns(node_id, index)
        self.scripts = scripts = Scripts()
        self.redis = Redis(config.redis_url, config.redis_timeout, f"shard {index}",
                           on_ready=self._connected)
        self.synced = False     # Redis lists no connection of this shard that it does not hold
        self.owner = RedisOwner(config, node_id, index, shards, self.redis, scripts, keys)
        self.subscriber = Subscriber(config.redis_url, config.redis_timeout,
                                     config.redis_timeout + 1.0, keys,
                                     keys.shard_inbox(node_id, index), self.redis,
                                     self.deliver, self.activate)

    def start(self) -> None:
        self.redis.start()
        self.subscriber.start()

    def _connected(self, redis: Redis) -> None:
        self.scripts.load(redis)
        self.synced = False
        asyncio.ensure_future(self.reconcile())

    async def reconcile(self) -> None:
        """On every connection to Redis, before this shard takes a connection: forget those
        Redis lists for it that it does not hold (a predecessor's, killed with its shard or
        its whole node, or those that ended while Redis was away), and tell Redis again about
        those it lost (a Redis restarted empty, or a janitor that took this node for dead):
        their users and channels come back, with default settings where the channels
        themselves were lost. Until then the shard takes no connection: a conn_id reused
        meanwhile would be forgotten after its join."""
        try:
            known = {conn_id.decode()
                     for conn_id in await self.redis.call("SMEMBERS", self.my_conns)}
            await self.owner.forget_conns(list(known - self.conns.keys()), self.my_conns)
        except RedisUnavailable:
            return          # Redis went away again: the next connection reconciles
        except RedisError as error:
            log.error("shard %d could not reconcile its connections with Redis: %s",
                      self.index, error)
        else:
            for conn_id in self.conns.keys() - known:
                self._register(self.conns[conn_id])
        self.synced = True

    def _register(self, conn: Connection) -> None:
        keys, send, now = self.keys, self.redis.send, time.time()
        self._registration(conn.id, conn.user)
        send("HSET", keys.user_conns(conn.user), conn.id, self.owner.inbox(conn.id))
        send("HSETNX", keys.user(conn.user), "public_keys", "[]")
        send("PERSIST", keys.user_conns(conn.user))
        send("ZADD", keys.users, now, conn.user)
        send("SADD", keys.online, conn.user)
        self.owner.join({"joins": [[name, None, conn.id, conn.user, {}]
                                   for name in conn.channels]})

    def handlers(self) -> dict[str, Any]:
        table = super().handlers()
        table.update({name: getattr(self.owner, name) for name in OWNER_COMMANDS})
        return table

    def history(self, name: str, offset: int) -> asyncio.Future:
        """What came after ``offset`` in ``name``: read from Redis by this shard itself."""
        return asyncio.ensure_future(self._history(name, offset))

    async def _history(self, name: str, offset: int) -> dict | None:
        """Redis answers the read before the messages it returns may have come down this
        shard's subscription: wait (a little) until they have, so that they are held for the
        resuming connection and none of them follows the catch-up live again."""
        answer = await self.owner.history_after(name, offset)
        if answer is not None:
            reach = max([answer["top"], *(found for found, _ in answer["entries"])])
            arrival = self.subscriber.reached(name, answer["epoch"].encode(), reach)
            if arrival is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(arrival, self.config.redis_timeout)
        return answer

    def peer_restarted(self, args: dict) -> None:
        """Nothing to rebuild: what the dead shard owned lives in Redis, and its successor
        forgets its connections there (``reconcile``)."""

    # -- connections hosted here ------------------------------------------------------------

    def conn_open(self, args: dict) -> Any:
        return self._hosted(super().conn_open, args)

    def conn_subscribe(self, args: dict) -> Any:
        return self._hosted(super().conn_subscribe, args)

    def _hosted(self, command: Any, args: dict) -> Any:
        """A connection joining channels (a new one: made): refused while Redis is away, and
        answered once Redis knows a new connection and this shard's subscriptions to its new
        channels are confirmed, so that their activations reach it."""
        if not (self.redis.ready and self.subscriber.redis.ready):
            return REDIS_DOWN
        if not self.synced:
            return RECONCILING
        reply = command(args)
        if "error" in reply:
            return reply
        waits = self._registration(args["conn_id"], args["user"]) if reply.get("created") else []
        subscribed = self.subscriber.when_ready(reply["new"])
        if subscribed is not None:
            waits.append(subscribed)
        if not waits:
            return reply
        return asyncio.ensure_future(self._answer(asyncio.gather(*waits), reply))

    def _registration(self, conn_id: str, user: str) -> list[asyncio.Future]:
        """Tell Redis where the connection lives (for other nodes, and for janitors)."""
        return [self.redis.call("HSET", self.keys.conn(conn_id), "user", user,
                                "node", self.node_id, "shard", self.index, "run", self.run),
                self.redis.call("SADD", self.my_conns, conn_id)]

    async def _answer(self, waiting: asyncio.Future, reply: dict) -> dict:
        try:
            await asyncio.wait_for(waiting, self.config.redis_timeout)
        except (asyncio.TimeoutError, ConnectionError, RuntimeError):
            return REDIS_DOWN
        return reply

    def _subscribe(self, conn: Connection, names: list[str]) -> list[str]:
        new = super()._subscribe(conn, names)
        for name in new:
            self.subscriber.add(name)
        return new

    def _unsubscribe(self, conn: Connection, name: str) -> None:
        if name in conn.channels:
            self.subscriber.remove(name)
        super()._unsubscribe(conn, name)

    def remove_conn(self, conn: Connection) -> None:
        if conn.id not in self.conns:
            return
        super().remove_conn(conn)
        self.redis.send("DEL", self.keys.conn(conn.id))
        self.redis.send("SREM", self.my_conns, conn.id)

    def stats(self, args: Any = None) -> dict:
        figures = super().stats(args)
        users = {conn.user for conn in self.conns.values()}
        figures.update(self.subscriber.stats())
        figures.update({
            "channels": len(self.subscriber.wanted), "users": len(users),
            "users_connected": len(users), "messages_published": self.owner.published,
            "redis_latency": self.redis.latency, "redis_reconnects": self.redis.reconnects,
            "redis_failures": self.owner.failures, "node": self.node_id})
        return figures

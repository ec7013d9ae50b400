"""Nodes in the cluster: where things are, as any process of a node asks (``Directory``), and
this node itself, as its supervisor runs it (``Node``).

* **Registration**: every ``node_timeout / 5`` the node reports itself (a key that expires,
  and its entry in the nodes hash: address, shards, connections, counters).
* **Janitor**: a node whose key expired is dead; one live node (a lock in Redis) removes its
  connections, which parts them from their channels (presence) and users. A node only acts as
  janitor once it has itself been connected for ``node_timeout``: after a Redis outage the
  live nodes get the time to report again first.
* **Directory**: where a connection lives, and the connection commands (/subscribe,
  /unsubscribe, /disconnect, /listen, /connect with a live conn_id) forwarded through Redis to
  the node that holds it, which answers as if it had been called itself.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

import msgspec
import orjson

from ..api_tier import START_TIMEOUT
from ..shards import Shards
from ..commands import GONE
from ..config import Config
from ..schemas import ConnectBody, Invalid, SubscribeBody
from .keys import Keys
from .owner import REDIS_DOWN, RedisOwner
from .resp import Redis, RedisUnavailable
from .scripts import CLAIM, Scripts

if TYPE_CHECKING:
    from ..commands import Commands

log = logging.getLogger("shardcast.node")
FORWARD_TIMEOUT = 10.0      # seconds a forwarded command may take (a long poll: more)
REPORTS_PER_TIMEOUT = 5     # reports per node_timeout; a node key lives 3 of them
FORGET_PAGE, FORGET_PAGES = 1000, 10    # names looked at a query, queries a report
UNAVAILABLE = Invalid(REDIS_DOWN["error"], 503)
HOST = socket.gethostname()     # in the reports: a node's last run was on its host


def address(config: Config) -> str:
    """The API address a node reports."""
    return f"{config.host}:{config.port}"


async def why_not_join(config: Config) -> str | None:
    """Why this node cannot join its cluster (None: it can, and its node_id is claimed), as
    the live nodes report:
    * a node with its node_id on another host or address (a configuration copied between
      hosts) would answer this node's forwarded commands and overwrite its reports and
      registries; on this host and address, it is this node's own last run, restarting;
    * a node with another secret is another broker on this Redis and redis_prefix: the two
      would share channels and users while refusing each other's backends.
    A node killed a moment ago still has a live key: one in conflict counts once it reports
    again, within a report interval and a half. Unchecked while Redis is unreachable."""
    redis = Redis(config.redis_url, config.redis_timeout, "startup check")
    redis.start()
    try:
        if not await redis.wait_up(config.redis_timeout):
            return None
        keys = Keys(config.redis_prefix)
        conflicts = _strangers(config, await node_reports(redis, keys, alive=True))
        holder = await _claim(redis, keys, config, b"")
        if holder is not None and orjson.loads(holder).get("starting"):
            return _taken(config, holder)   # started at the same moment, elsewhere
        if holder is None and not conflicts:
            return None
        await asyncio.sleep(config.node_timeout / REPORTS_PER_TIMEOUT * 1.5)
        if holder is not None:
            holder = await _claim(redis, keys, config, holder)
            if holder is not None:
                return _taken(config, holder)
        again = await node_reports(redis, keys, alive=True)
    except (RedisUnavailable, ConnectionError):
        return None
    finally:
        redis.close()
    for node, (report, refusal) in conflicts.items():
        if again.get(node, report)["last_seen"] != report["last_seen"]:
            return refusal
    return None


async def _claim(redis: Redis, keys: Keys, config: Config, seen: bytes) -> bytes | None:
    """Claim this node's id for its start: None once claimed, else the report of the node on
    another host or address that holds it (other than ``seen``, one that has not reported
    since). The claim lasts until the node's first report, START_TIMEOUT at most."""
    claim = {"node_id": config.node, "host": HOST, "address": address(config),
             "cluster": cluster_mark(config), "starting": True, "last_seen": time.time()}
    ttl = int((START_TIMEOUT + config.node_timeout) * 1000)
    return await redis.call("EVAL", CLAIM, 1, keys.node(config.node), seen,
                            orjson.dumps(claim), ttl, HOST, address(config))


def _taken(config: Config, holder: bytes) -> str:
    report = orjson.loads(holder)
    doing = "is starting" if report.get("starting") else "reports"
    return (f"node_id {config.node!r} is taken: a live node on {report['host']} at "
            f"{report['address']} {doing} under it; give each node a node_id of its own")


async def node_reports(redis: Redis, keys: Keys, alive: bool) -> dict[str, dict]:
    """The last report of each node whose key is live (``alive``: it reported lately) or,
    with ``alive`` false, has expired (it is dead)."""
    reports = await redis.call("HGETALL", keys.nodes)
    ids = [reports[i].decode() for i in range(0, len(reports), 2)]
    live = await asyncio.gather(*(redis.call("EXISTS", keys.node(node)) for node in ids))
    return {node: orjson.loads(reports[2 * index + 1])
            for index, node in enumerate(ids) if bool(live[index]) == alive}


def _strangers(config: Config, reports: dict[str, dict]) -> dict[str, tuple[dict, str]]:
    """The nodes of another broker on this Redis and prefix (another secret), with why this
    node cannot join beside them."""
    mark = cluster_mark(config)
    return {node: (report, f"node {node!r} on {report.get('host', HOST)} at "
                           f"{report['address']} uses this Redis and redis_prefix with another "
                           f"secret: give each cluster a redis_prefix of its own, or every node "
                           f"the same secret")
            for node, report in reports.items() if report.get("cluster", mark) != mark}


def cluster_mark(config: Config) -> str:
    """Names the broker a node belongs to, in its reports: derived from the secret, which it
    does not reveal."""
    return hmac.new(config.secret.encode(), b"shardcast cluster", hashlib.sha256).hexdigest()[:16]


class Directory:
    """Where things are in the cluster, as one process of a node asks (an API process, or the
    supervisor): Redis answers; connection commands go to the node holding the connection, and
    its answers come back to this process's own inbox."""

    def __init__(self, config: Config, process: str) -> None:
        self.config = config
        self.id = config.node
        self.keys = keys = Keys(config.redis_prefix)
        self.scripts = Scripts()
        self.redis = Redis(config.redis_url, config.redis_timeout, process,
                           on_ready=self.scripts.load)
        self.inbox = keys.node_inbox(f"{self.id}:{process}")
        self.listener = Redis(config.redis_url, config.redis_timeout, f"{process} inbox",
                              on_push=self.on_push, on_ready=self._listen)
        self.pending: dict[bytes, asyncio.Future] = {}
        self.ids = itertools.count()

    async def start(self) -> None:
        self.redis.start()
        self.listener.start()
        if not await self.redis.wait_up(self.config.redis_timeout * 5):
            log.warning("Redis at %s is not reachable yet; calls answer 503 until it is",
                        self.redis.address)     # host:port, not the password

    def down(self) -> bool:
        return not self.redis.ready

    # -- directory ------------------------------------------------------------------------

    async def holder(self, conn_id: str) -> str | None:
        """The node holding ``conn_id`` if it is another one."""
        try:
            node = await self.redis.call("HGET", self.keys.conn(conn_id), "node")
        except (RedisUnavailable, RuntimeError):
            raise UNAVAILABLE from None
        return node.decode() if node is not None and node.decode() != self.id else None

    async def forward(self, node: str, op: str, args: dict, timeout: float = FORWARD_TIMEOUT):
        """``op`` run by ``node``; GONE when no such node listens any more."""
        request_id = str(next(self.ids)).encode()
        future = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        try:
            receivers = await self.redis.call(
                "PUBLISH", self.keys.node_inbox(node),
                b"Q %s %s\n%s" % (request_id, self.inbox.encode(), orjson.dumps([op, args])))
            if not receivers:
                return GONE
            status, body = await asyncio.wait_for(future, timeout)
        except (RedisUnavailable, RuntimeError, asyncio.TimeoutError):
            raise UNAVAILABLE from None
        finally:
            self.pending.pop(request_id, None)
        if status == b"raw":
            return body or None
        answer = orjson.loads(body)
        if status == b"invalid":
            raise Invalid(answer["errors"], answer["status"])
        return answer

    async def conn_channels(self, conn_ids: list[str]) -> list[str]:
        try:
            names = await self.redis.call("SUNION", *(self.keys.conn_channels(c)
                                                      for c in conn_ids))
        except (RedisUnavailable, RuntimeError):
            raise UNAVAILABLE from None
        return sorted(name.decode() for name in names)

    async def channel_names(self) -> list[str]:
        try:
            names = await self.redis.call("ZRANGE", self.keys.channels, 0, -1)
        except (RedisUnavailable, RuntimeError):
            raise UNAVAILABLE from None
        return [name.decode() for name in names]

    async def figures(self, shards: list[dict]) -> dict:
        """admin.json's totals, over the whole cluster, and its nodes."""
        call = self.redis.call
        try:
            reports, channels, users, online = await asyncio.gather(
                call("HGETALL", self.keys.nodes), call("ZCARD", self.keys.channels),
                call("ZCARD", self.keys.users), call("SCARD", self.keys.online))
            nodes = [orjson.loads(reports[i + 1]) for i in range(0, len(reports), 2)]
        except (RedisUnavailable, RuntimeError):
            raise UNAVAILABLE from None
        nodes.sort(key=lambda node: node["node_id"])
        return {
            "remembered_user_count": users,
            "unique_user_count": online,
            "total_connections": sum(node["connections"] for node in nodes),
            "total_channels": channels,
            "total_messages": sum(node["messages_delivered"] for node in nodes),
            "total_unique_messages": sum(node["messages_published"] for node in nodes),
            "nodes": nodes,
        }

    def _listen(self, listener: Redis) -> None:
        listener.send_unanswered("SUBSCRIBE", self.inbox)

    def on_push(self, reply: Any) -> None:
        if not (isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message"):
            return
        head, _, body = reply[2].partition(b"\n")
        kind, request_id, extra = head.split(b" ")
        if kind == b"R":
            future = self.pending.get(request_id)
            if future is not None and not future.done():
                future.set_result((extra, body))
        elif kind == b"Q":
            self.serve(request_id, extra, body)

    def serve(self, request_id: bytes, reply_to: bytes, body: bytes) -> None:
        """Requests come to the node's inbox, which only its supervisor (``Node``) reads."""

    def close(self) -> None:
        self.redis.close()
        self.listener.close()


class Node(Directory):
    """This node in the cluster, as its supervisor runs it: its registration, the janitor, and
    the connection commands other nodes forward to it."""

    def __init__(self, config: Config, shards: Shards, run: str) -> None:
        super().__init__(config, "supervisor")
        self.shards = shards
        self.run = run          # this run of the node (``ipc.run_id``), in its reports
        self.requests = self.keys.node_inbox(self.id)
        self.owner = RedisOwner(config, self.id, 0, shards.count, self.redis, self.scripts,
                                self.keys)
        self.commands: Commands | None = None       # set once made (they use this node)
        self.interval = config.node_timeout / REPORTS_PER_TIMEOUT
        self.up_since: float | None = None

    async def start(self) -> None:
        await super().start()
        asyncio.ensure_future(self._keep_reporting())

    def _listen(self, listener: Redis) -> None:
        listener.send_unanswered("SUBSCRIBE", self.inbox, self.requests)

    # -- serving other nodes -----------------------------------------------------------------

    def serve(self, request_id: bytes, reply_to: bytes, body: bytes) -> None:
        op, args = orjson.loads(body)
        asyncio.ensure_future(self._serve(request_id, reply_to, op, args))

    async def _serve(self, request_id: bytes, reply_to: bytes, op: str, args: dict) -> None:
        try:
            answer = await self._run(op, args)
            status, body = (b"raw", answer or b"") if op == "listen" else (b"ok",
                                                                            orjson.dumps(answer))
        except Invalid as error:
            status, body = b"invalid", orjson.dumps({"errors": error.errors,
                                                     "status": error.status})
        except Exception:
            log.exception("a forwarded %s failed", op)
            status, body = b"invalid", orjson.dumps({"errors": {"error": "the node holding "
                                                                "the connection failed"},
                                                     "status": 503})
        self.redis.send("PUBLISH", reply_to, b"R %s %s\n%s" % (request_id, status, body))

    def _run(self, op: str, args: dict) -> Awaitable:
        commands = self.commands
        runs: dict[str, Callable[[], Awaitable]] = {
            "connect": lambda: commands.connect(msgspec.convert(args["body"], ConnectBody),
                                                args["host"]),
            "subscribe": lambda: commands.subscribe(msgspec.convert(args, SubscribeBody)),
            "unsubscribe": lambda: commands.unsubscribe(msgspec.convert(args, SubscribeBody)),
            "disconnect": lambda: commands.disconnect(args["conn_id"]),
            "listen": lambda: commands.listen(args["conn_id"], args["offsets"], args["since"]),
        }
        return runs[op]()

    # -- registration and the janitor ---------------------------------------------------

    async def _keep_reporting(self) -> None:
        while True:
            try:
                if self.up_since is None:
                    await self._clear_dropped_shards()
                await self._report()
                await self._bury_the_dead()
                await self._forget_gone(self.keys.users, self.keys.user,
                                        self.config.gc_users_after)
                await self._forget_gone(self.keys.channels, self.keys.meta,
                                        self.config.history_ttl)
            except (RedisUnavailable, RuntimeError, ConnectionError) as error:
                log.debug("node report failed: %s", error)
                self.up_since = None
            except Exception:
                log.exception("node report failed")
            await asyncio.sleep(self.interval)

    async def _report(self) -> None:
        stats = await self.shards.call_many(dict.fromkeys(range(self.shards.count)), "stats")
        report = {
            "node_id": self.id,
            "host": HOST,
            "address": address(self.config),
            "cluster": cluster_mark(self.config),
            "shards": self.shards.count,
            "run": self.run,
            "connections": sum(s["connections"] for s in stats),
            "messages_published": sum(s["messages_published"] for s in stats),
            "messages_delivered": sum(s["messages_delivered"] for s in stats),
            "last_seen": time.time(),
        }
        body = orjson.dumps(report)
        ttl = int(self.interval * 3 * 1000)
        await asyncio.gather(self.redis.call("SET", self.keys.node(self.id), body, "PX", ttl),
                             self.redis.call("HSET", self.keys.nodes, self.id, body))
        self.redis.ping()
        if self.up_since is None:
            self.up_since = time.monotonic()

    async def _clear_dropped_shards(self) -> None:
        """Back under its id with fewer shards than its last report says: each shard clears
        what an earlier run left in its own registry (ClusterShard.reconcile), and this clears
        the registries of the shards it no longer has."""
        last = await self.redis.call("HGET", self.keys.nodes, self.id)
        shards = orjson.loads(last)["shards"] if last is not None else 0
        if shards > self.shards.count:
            await self.remove_connections(self.id, range(self.shards.count, shards), None)

    async def _bury_the_dead(self) -> None:
        if self.up_since is None or time.monotonic() - self.up_since < self.config.node_timeout:
            return
        for node in await node_reports(self.redis, self.keys, alive=False):
            if node != self.id and await self.redis.call(
                    "SET", self.keys.janitor(node), self.id, "NX", "PX",
                    int(self.config.node_timeout * 3000)):
                await self._bury(node)

    async def _bury(self, node: str) -> None:
        """Remove what a dead node held. It may be back under the same id (restarted): then
        its new run reports again, and its shards, which may take connections before it
        does, have already cleared what the dead run held (ClusterShard.reconcile)."""
        report = orjson.loads(await self.redis.call("HGET", self.keys.nodes, node))
        if await self.redis.call("EXISTS", self.keys.node(node)):
            return      # back since it was found dead, and this report may be the new run's
        log.warning("node %s stopped reporting; removing its connections", node)
        await self.remove_connections(node, range(report["shards"]), report.get("run"))
        if not await self.redis.call("EXISTS", self.keys.node(node)):
            await self.redis.call("HDEL", self.keys.nodes, node)

    async def _forget_gone(self, zset: str, key: Callable[[str], str], after: float) -> None:
        """Drop from ``zset`` (users or channels, by last use) the names whose ``key`` has
        expired: a user's keys ``gc_users_after`` its last connection, a channel's
        ``history_ttl`` after its last use without members. Else it would keep every name
        ever seen, for admin.json to count and an unfiltered /info to look up. Every node
        prunes (the script makes that safe), a few pages a report."""
        call = self.redis.call
        for _ in range(FORGET_PAGES):
            page = await call("ZRANGEBYSCORE", zset, "-inf", time.time() - after,
                              "WITHSCORES", "LIMIT", 0, FORGET_PAGE)
            names = page[0::2]
            found = await asyncio.gather(*(call("EXISTS", key(name.decode())) for name in names))
            if names:
                await self.scripts.call(self.redis, "forget_gone", [zset], [
                    time.time(), *(part for name, score, exists in zip(names, page[1::2], found)
                                   for part in (name, score, "0" if exists else "1"))])
            if len(names) < FORGET_PAGE:
                return

    async def remove_connections(self, node: str, shards: range, run: str | None) -> None:
        """Part the connections of a dead run of a node (``run``; None: whatever run made
        them) from their channels and users, as their own shards would have."""
        for shard in shards:
            key = self.keys.shard_conns(node, shard)
            conn_ids = await self.redis.call("SMEMBERS", key)
            await self.owner.forget_conns([conn_id.decode() for conn_id in conn_ids], key, run)

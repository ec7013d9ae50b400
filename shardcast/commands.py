"""What each API call does across the shards: the API process's side of every command."""
from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Any

import msgspec
import orjson
from msgspec import UNSET

from . import __version__, envelopes, info
from .ipc import Link
from .shards import ShardBehind, Shards, ShardUnavailable
from .config import Config
from .info import checked
from .schemas import (ConnectBody, DeleteItem, EditItem, InfoFlags, MessageItem,
                      SubscribeBody, UserStateBody, encode_checked)


NOT_ELSEWHERE = object()    # _elsewhere(): this node answers
GONE = object()             # a directory's forward(): the holding node is gone
READY_TIMEOUT = 1.0     # seconds a shard has to answer /ready; its answer is kept as long


class LocalDirectory:
    """Where things are on one node: every connection here, every channel owned by one of its
    shards. A cluster node uses ``redis.node.Node``, which answers the same questions."""

    def __init__(self, shards: Shards) -> None:
        self.shards = shards

    def down(self) -> bool:
        return False

    async def holder(self, conn_id: str) -> str | None:
        """The node holding ``conn_id`` if it is another one: never, here."""
        return None

    async def forward(self, node: str, op: str, args: dict, timeout: float = 0) -> Any:
        raise AssertionError("one node has no other node to forward to")

    async def conn_channels(self, conn_ids: list[str]) -> list[str]:
        calls = {shard: {"conn_ids": ids} for shard, ids in self.shards.group(conn_ids).items()}
        return sorted({name for found in await self.shards.call_many(calls, "conn_channels")
                       for name in found})

    async def channel_names(self) -> list[str] | None:
        """None: each shard lists the channels it owns."""
        return None

    async def figures(self, shards: list[dict]) -> dict:
        return {
            "remembered_user_count": sum(s["users"] for s in shards),
            "unique_user_count": sum(s["users_connected"] for s in shards),
            "total_connections": sum(s["connections"] for s in shards),
            "total_channels": sum(s["channels"] for s in shards),
            "total_messages": sum(s["messages_delivered"] for s in shards),
            "total_unique_messages": sum(s["messages_published"] for s in shards),
        }


class Commands:
    def __init__(self, shards: Shards, config: Config, directory: Any = None) -> None:
        self.shards = shards
        self.config = config
        self.directory = directory or LocalDirectory(shards)
        self.started = time.time()
        self.readiness: asyncio.Future | None = None    # the last round of /ready questions
        self.readiness_until = 0.0

    async def _elsewhere(self, conn_id: str, op: str, args: dict,
                         timeout: float | None = None) -> Any:
        """The answer of the node holding ``conn_id`` when that is another node, else
        NOT_ELSEWHERE (then this node answers: it holds the connection, or nobody does)."""
        node = await self.directory.holder(conn_id)
        if node is None:
            return NOT_ELSEWHERE
        extra = {} if timeout is None else {"timeout": timeout}
        answer = await self.directory.forward(node, op, args, **extra)
        return NOT_ELSEWHERE if answer is GONE else answer

    # -- connections ----------------------------------------------------------------

    async def connect(self, body: ConnectBody, host: str) -> dict:
        if body.conn_id:
            answer = await self._elsewhere(str(body.conn_id), "connect",
                                           {"body": msgspec.to_builtins(body), "host": host})
            if answer is not NOT_ELSEWHERE:
                return answer
        conn_id = str(body.conn_id) if body.conn_id else self.new_conn_id(body.username)
        shard = self.shards.owner(conn_id)
        connected = checked(await self.shards.call(shard, "connect", {
            "conn_id": conn_id, "user": body.username, "channels": body.channels,
            "fresh_state": body.fresh_user_state, "state": body.user_state,
            "public_keys": body.state_public_keys,
            "channel_configs": msgspec.to_builtins(body.channel_configs),
            "info": msgspec.to_builtins(body.info)}))
        return {
            "conn_id": conn_id,
            "username": body.username,
            "state": connected["state"],
            "public_state": connected["public_state"],
            "channels": sorted(set(body.channels)),
            "channels_info": connected["channels_info"],
            "ws_url": self.ws_url(host, shard, conn_id),
        }

    def new_conn_id(self, user: str) -> str:
        """A random connection id owned by the user's shard (one in as many tries as there are
        shards): that shard settles the user's side of /connect without asking another."""
        shard = self.shards.owner(user)
        while True:
            conn_id = envelopes.new_uuid()
            if self.shards.owner(conn_id) == shard:
                return conn_id

    async def down_shards(self) -> dict[str, str]:
        """Shards that cannot serve now, by index, with why. /ready needs no signature: the
        shards are asked once per READY_TIMEOUT at most, however often it is called."""
        now = time.monotonic()
        if self.readiness is None or now >= self.readiness_until:
            self.readiness_until = now + READY_TIMEOUT
            self.readiness = asyncio.ensure_future(self._ask_shards())
        return await asyncio.shield(self.readiness)

    async def _ask_shards(self) -> dict[str, str]:
        down, asked = {}, {}
        for shard in range(self.shards.count):
            try:
                asked[shard] = self.shards.request(shard, "ready", None, timeout=READY_TIMEOUT)
            except ShardBehind:
                down[str(shard)] = "behind"
            except ShardUnavailable:
                down[str(shard)] = "restarting"
        for shard, answer in asked.items():
            try:
                await answer
            except (ShardUnavailable, ConnectionError):
                down[str(shard)] = "not answering"
        return down

    def ws_url(self, host: str, shard: int, conn_id: str) -> str:
        base = self.config.websocket_url_template.format(
            host=host, port=self.config.ws_port_base + shard, shard=shard)
        return f"{base}?conn_id={conn_id}"

    async def subscribe(self, body: SubscribeBody) -> dict:
        args = msgspec.to_builtins(body)
        answer = await self._elsewhere(args["conn_id"], "subscribe", args)
        if answer is not NOT_ELSEWHERE:
            return answer
        joined = checked(await self.shards.call(self.shards.owner(args["conn_id"]), "subscribe",
                                                args))
        return {"channels": joined["all"], "channels_info": joined["channels_info"],
                "subscribed_to": joined["new"]}

    async def unsubscribe(self, body: SubscribeBody) -> dict:
        args = msgspec.to_builtins(body)
        answer = await self._elsewhere(args["conn_id"], "unsubscribe", args)
        if answer is not NOT_ELSEWHERE:
            return answer
        left = checked(await self.shards.call(self.shards.owner(args["conn_id"]), "unsubscribe",
                                              args))
        return {"channels": left["all"], "channels_info": left["channels_info"],
                "unsubscribed_from": left["left"]}

    async def disconnect(self, conn_id: str) -> bool:
        answer = await self._elsewhere(conn_id, "disconnect", {"conn_id": conn_id})
        if answer is not NOT_ELSEWHERE:
            return answer
        return await self.shards.call(self.shards.owner(conn_id), "conn_close",
                                       {"conn_id": conn_id})

    async def listen(self, conn_id: str, offsets: bool = False,
                     since: dict | None = None) -> bytes | None:
        """The next batch of envelopes as a JSON array; None for an unknown connection.
        ``offsets``: with each message's position; ``since``: resume from these positions."""
        wait = self.config.wake_connections_after + 10
        args = {"conn_id": conn_id, "offsets": offsets, "since": since}
        answer = await self._elsewhere(conn_id, "listen", args, wait)
        if answer is not NOT_ELSEWHERE:
            return answer
        frames = await self.shards.call(self.shards.owner(conn_id), "listen", args, raw=True,
                                         timeout=self.config.wake_connections_after + 10)
        if frames.startswith(b"{"):     # a refusal; envelopes come as a JSON array
            checked(orjson.loads(frames))
        return frames or None

    # -- messages -------------------------------------------------------------------

    def publish(self, items: list[MessageItem]) -> tuple[bytes, list[Link]]:
        """The accepted items as the JSON answer, and the links they went on; they are sent on
        once their messages pass."""
        now = envelopes.now_iso()
        accepted = [_message(item, now) for item in items if item.channel or item.pm_users]
        answer = encode_checked(items, accepted, self.config.max_message_size)
        return answer, self._route(accepted, "publish", envelopes.message)

    def edit(self, items: list[EditItem]) -> tuple[bytes, list[Link]]:
        accepted = [_edit(item) for item in items if item.channel or item.pm_users]
        answer = encode_checked(items, accepted, self.config.max_message_size)
        return answer, self._route(accepted, "edit", envelopes.edit)

    def delete(self, items: list[DeleteItem]) -> tuple[bytes, list[Link]]:
        accepted = [_routing(item) for item in items if item.channel or item.pm_users]
        return orjson.dumps(accepted), self._route(accepted, "delete", envelopes.delete)

    def _route(self, items: list[dict], command: str, envelope) -> list[Link]:
        """Channel items to their channel's owner (in order); direct ones to the users' owners;
        returns the links they went on. Each carries a ``stamp`` of when it was posted:
        catch-up replays in that order whichever way the items travel (the channel owner takes
        it off before keeping the item)."""
        by_owner: dict[int, list[dict]] = {}
        casts = []
        for item in items:
            item["stamp"] = envelopes.publication_stamp()
            if item["channel"] is not None:
                by_owner.setdefault(self.shards.owner(item["channel"]), []).append(item)
            else:
                direct = envelope(item)
                casts.extend((shard, "direct", {"users": users, "envelope": direct,
                                                "stamp": item["stamp"]})
                             for shard, users in self.shards.group(item["pm_users"]).items())
        casts.extend((shard, command, group) for shard, group in by_owner.items())
        return self.shards.cast_each(casts)

    # -- users and channels ---------------------------------------------------------

    async def user_state(self, body: UserStateBody) -> tuple[dict, list[Link]]:
        """The answer, and the links the state change went on (see ``publish``)."""
        args: dict[str, Any] = {"user": body.user, "state": body.user_state}
        if body.state_public_keys is not UNSET:
            args["public_keys"] = body.state_public_keys
        result = checked(await self.shards.call(self.shards.owner(body.user), "user_state",
                                                 args))
        links = []
        if result["refresh"] and result["conns"]:
            links = await self._spread_state(body.user, result)
        return {key: result[key] for key in ("user_state", "changed_state", "public_keys")}, links

    async def _spread_state(self, user: str, result: dict) -> list[Link]:
        """Refresh the user's public state in its channels; notify where configured."""
        names = await self.directory.conn_channels(result["conns"])
        return self.shards.cast_each([(shard, "state_change", {
            "channels": group, "user": user, "public_state": result["public_state"],
            "changed": result["changed_public"], "notify": bool(result["changed_state"])})
            for shard, group in self.shards.group(names).items()])

    async def channel_config(self, configs: dict) -> dict:
        calls = {shard: {"configs": {name: msgspec.structs.asdict(configs[name]) for name in names}}
                 for shard, names in self.shards.group(configs).items()}
        channels: dict = {}
        for found in await self.shards.call_many(calls, "configure"):
            channels.update(checked(found))
        return {"channels": channels, "users": []}

    async def info(self, flags: InfoFlags, names: list[str] | None = None,
                   match: str | None = None) -> dict:
        """The Info object; ``names`` None means every channel (see info.gather)."""
        if names is None:
            names = await self.directory.channel_names()
        return await info.gather(self.shards.call_many, self.shards.count, flags, names, match)

    async def admin(self) -> dict:
        shards = await self.shards.call_many(dict.fromkeys(range(self.shards.count)), "stats")
        for figures, restarts in zip(shards, self.shards.restarts):
            figures["restarts"] = restarts
        page = await self.info(InfoFlags(include_history=False, include_connections=True,
                                         limit=self.config.admin_channels_limit or None))
        return {
            **await self.directory.figures(shards),
            "channels": list(page["channels"].values()),
            "channels_left_out": page.get("remaining", 0),
            "users": page["users"],
            "uptime": str(timedelta(seconds=int(time.time() - self.started))),
            "version": __version__,
            "shards": shards,
        }


def _routing(item: EditItem | DeleteItem) -> dict:
    return {"uuid": str(item.uuid), "channel": item.channel, "pm_users": item.pm_users,
            "exclude_users": item.exclude_users}


def _message(item: MessageItem, now: str) -> dict:
    normal = {
        "pm_users": item.pm_users,
        "exclude_users": item.exclude_users,
        "channel": item.channel,
        "no_history": item.no_history,
        "uuid": str(item.uuid) if item.uuid else envelopes.new_uuid(),
        "timestamp": envelopes.format_time(item.timestamp) if item.timestamp else now,
        "user": item.user,
        "edited": None,
    }
    if item.message is not UNSET:
        normal["message"] = item.message
    return normal


def _edit(item: EditItem) -> dict:
    normal = _routing(item)
    if item.message is not UNSET:
        normal["message"] = item.message
    if item.user is not UNSET:
        normal["user"] = item.user
    if item.timestamp is not UNSET:
        normal["timestamp"] = envelopes.format_time(item.timestamp)
    normal["edited"] = envelopes.format_time(item.edited) if item.edited else envelopes.now_iso()
    return normal

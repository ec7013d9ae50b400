"""The shard actor: every state change of one shard, free of I/O.

Commands arrive as ``(name, args)`` from the API processes or from peer shards and
are answered with plain values; everything that must travel goes through ``net``.
"""
from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any, Awaitable, Iterable, Protocol

import msgspec

from . import envelopes, info, limits
from .channel import Channel, ChannelOwner
from .config import Config
from .connection import HEARTBEAT, Batch, Connection, Transport, joined
from .recovery import Recovery
from .resume import Resume
from .routing import by_owner, owner
from .schemas import InfoFlags, Invalid
from .shards import ShardUnavailable, answers
from .user import User, UserOwner
from .websocket import NORMAL, TOO_SLOW

UNKNOWN_CONNECTION = {"error": {"conn_id": ["Unknown connection"]}}
USER_SIDE = ("user", "fresh_state", "state", "public_keys", "conn_id")


async def _settled(answer: Any) -> Any:
    """An answer that may still be on its way (a cluster node's: once Redis knows)."""
    return await answer if isinstance(answer, asyncio.Future) else answer


class Net(Protocol):
    """What the actor sends; the worker process implements it with IPC links."""

    def cast(self, shard: int, command: str, args: Any) -> None: ...
    def request(self, shard: int, command: str, args: Any) -> asyncio.Future: ...
    def deliver(self, shard: int, route: list, frame: bytes) -> None: ...
    def schedule_flush(self) -> None: ...


class Shard(ChannelOwner, UserOwner, Recovery, Resume):
    COMMANDS = (
        "connect", "subscribe", "unsubscribe", "conn_close", "conn_channels",
        "user_connect", "user_public", "user_state", "user_states", "user_conn_gone",
        "join", "activate", "leave", "configure", "info", "publish", "edit", "delete", "direct",
        "state_change", "stats", "peer_restarted", "conn_info", "history_after", "lagged",
    )

    def __init__(self, index: int, shards: int, config: Config, net: Net) -> None:
        self.index = index
        self.shards = shards
        self.config = config
        self.net = net
        self.channels: dict[str, Channel] = {}
        self.users: dict[str, User] = {}
        self.conns: dict[str, Connection] = {}
        # local channel -> connections as keys: over most sizes a dict takes two thirds of a
        # set's memory (a third at 5 to 10), and iterates as fast
        self.subscribers: dict[str, dict[Connection, None]] = {}
        self.dirty: list[Connection] = []
        self.batches: dict[str, Batch] = {}      # open ones, per channel, since the last flush
        self.published = 0
        self.delivered = 0
        self.delivered_before = 0       # at the last flush
        self.bytes_sent = 0             # to clients, counted per flush
        self.slow_consumers = 0         # websockets dropped for not keeping up
        self.started = time.time()

    def handlers(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.COMMANDS}

    def start(self) -> None:
        """Called once the shard's loop runs: on one node there is nothing else to open."""

    # -- connections owned here -------------------------------------------------

    def connect(self, args: dict) -> asyncio.Future:
        """/connect on the connection's shard: its side here, the user's on the user's owner,
        the joins and the Info object; the API process waits for one round trip."""
        return asyncio.ensure_future(self._connect(args))

    async def _connect(self, args: dict) -> dict:
        opened = await _settled(self.conn_open(args))
        if "error" in opened:
            return opened
        user = await self._request(owner(args["user"], self.shards), "user_connect",
                                   {key: args[key] for key in USER_SIDE})
        if "error" in user:     # refused (a user limit) or unanswered: undo this side
            if opened["created"]:
                self.conn_close(args)
            elif opened["new"]:
                self.conn_unsubscribe({"conn_id": args["conn_id"], "channels": opened["new"]})
            return user
        return await self._join(args, args["user"], user["public_state"], {**opened, **user},
                                sorted(set(args["channels"])))

    def subscribe(self, args: dict) -> asyncio.Future:
        """/subscribe on the connection's shard, in one round trip as ``connect``."""
        return asyncio.ensure_future(self._subscribe_conn(args))

    async def _subscribe_conn(self, args: dict) -> dict:
        joined = await _settled(self.conn_subscribe(args))
        if "error" in joined:
            return joined
        user = joined["user"]
        public = await self._request(owner(user, self.shards), "user_public", {"user": user})
        if "error" in public:
            return public
        return await self._join(args, user, public["public_state"], joined, joined["all"])

    async def _join(self, args: dict, user: str, public_state: dict, reply: dict,
                    listed: list[str]) -> dict:
        """Join the connection's new channels at their owners, then describe ``listed``."""
        configs = args["channel_configs"]
        for shard, names in by_owner(reply["new"], self.shards).items():
            self.net.cast(shard, "join", {"joins": [
                [name, configs.get(name), args["conn_id"], user, public_state]
                for name in names]})
        return await self._described(args, reply, listed)

    def unsubscribe(self, args: dict) -> asyncio.Future:
        """/unsubscribe on the connection's shard, in one round trip as ``connect``."""
        return asyncio.ensure_future(self._unsubscribe_conn(args))

    async def _unsubscribe_conn(self, args: dict) -> dict:
        left = self.conn_unsubscribe(args)
        if "error" in left:
            return left
        for name in left["left"]:
            self.net.cast(owner(name, self.shards), "leave",
                          {"channel": name, "conn_id": args["conn_id"]})
        # The channels left are asked for too, and excluded: so their owners answer as well,
        # after the leaves.
        args["info"]["exclude_channels"] = [*args["info"]["exclude_channels"], *left["left"]]
        return await self._described(args, left, left["all"] + left["left"])

    async def _described(self, args: dict, reply: dict, listed: list[str]) -> dict:
        """``reply`` with the Info object of ``listed``: asked of the channels' owners on the
        links that carried this connection's joins and leaves (or here, in order), it shows
        them applied."""
        try:
            reply["channels_info"] = await info.gather(
                self._ask, self.shards, msgspec.convert(args["info"], InfoFlags), listed)
        except Invalid as refusal:
            return {"error": refusal.errors, "status": refusal.status}
        except ShardUnavailable as away:
            return {"error": away.errors(), "status": 503}
        return reply

    def _ask(self, calls: dict[int, Any], command: str) -> Awaitable[list]:
        """info.Ask over the shard mesh; this shard's own part is answered here."""
        return answers({shard: self.net.request(shard, command, args)
                        for shard, args in calls.items()})

    async def _request(self, shard: int, command: str, args: dict) -> dict:
        """A shard's answer; a lost link or no answer in time is a 503 refusal."""
        try:
            return await self.net.request(shard, command, args)
        except (ConnectionError, ShardUnavailable):
            return {"error": ShardUnavailable(shard).errors(), "status": 503}

    def conn_open(self, args: dict) -> dict:
        """``created`` tells ``connect`` what to undo if the user's shard refuses."""
        conn = self.conns.get(args["conn_id"])
        if conn is not None and conn.user != args["user"]:
            return {"error": {"conn_id": ["Connection id belongs to another user"]}}
        refusal = limits.channels(conn.channels if conn else {}, args["channels"],
                                  self.config.max_channels_per_connection)
        if conn is None and refusal is None:
            refusal = limits.shard_connections(self.index, len(self.conns),
                                               self.config.max_connections_per_shard)
        if refusal is not None:
            return refusal
        created = conn is None
        if created:
            conn = Connection(args["conn_id"], args["user"], self.config.catchup_size)
            self.conns[conn.id] = conn
        return {"new": self._subscribe(conn, args["channels"]), "created": created}

    def conn_subscribe(self, args: dict) -> dict:
        conn = self.conns.get(args["conn_id"])
        if conn is None:
            return UNKNOWN_CONNECTION
        refusal = limits.channels(conn.channels, args["channels"],
                                  self.config.max_channels_per_connection)
        if refusal is not None:
            return refusal
        new = self._subscribe(conn, args["channels"])
        return {"user": conn.user, "new": new, "all": sorted(conn.channels)}

    def conn_unsubscribe(self, args: dict) -> dict:
        conn = self.conns.get(args["conn_id"])
        if conn is None:
            return UNKNOWN_CONNECTION
        left = sorted(set(args["channels"]) & conn.channels.keys())
        for name in left:
            self._unsubscribe(conn, name)
        return {"user": conn.user, "left": left, "all": sorted(conn.channels)}

    def conn_close(self, args: dict) -> bool:
        conn = self.conns.get(args["conn_id"])
        if conn is None:
            return False
        self.remove_conn(conn)
        return True

    def lagged(self, args: dict) -> None:
        """A peer dropped deliveries to these channels' and connections' subscribers here,
        this shard having left too much of its link unread (Worker.behind): they are closed
        as slow consumers, so that their clients reconnect and catch up."""
        conns = {self.conns[conn_id] for conn_id in args["conns"] if conn_id in self.conns}
        for name in args["channels"]:
            conns.update(self.subscribers.get(name, ()))
        for conn in conns:
            self.slow_consumers += 1
            self.remove_conn(conn, TOO_SLOW)

    def conn_channels(self, args: dict) -> list[str]:
        names: set[str] = set()
        for conn_id in args["conn_ids"]:
            conn = self.conns.get(conn_id)
            if conn is not None:
                names.update(conn.channels)
        return sorted(names)

    def _subscribe(self, conn: Connection, names: list[str]) -> list[str]:
        """Record the channels; delivery starts when their owners ``activate`` them."""
        new = sorted(set(names).difference(conn.channels))
        for name in new:
            conn.channels[sys.intern(name)] = None   # one copy per channel, not per connection
        return new

    def activate(self, args: dict) -> None:
        """Sent by a channel owner after a join, on the link its frames travel: frames
        posted before the join precede this and are never delivered to the newcomer."""
        for name, conn_id in args["pairs"]:
            conn = self.conns.get(conn_id)
            if conn is not None and name in conn.channels:
                self.subscribers.setdefault(name, {})[conn] = None
                self.batches.pop(name, None)

    def _unsubscribe(self, conn: Connection, name: str) -> None:
        conn.channels.pop(name, None)
        self.batches.pop(name, None)
        local = self.subscribers.get(name)
        if local is not None:
            local.pop(conn, None)
            if not local:
                del self.subscribers[name]

    def remove_conn(self, conn: Connection, code: int = NORMAL) -> None:
        """Forget a connection and tell the owners of its channels and user."""
        if self.conns.pop(conn.id, None) is None:
            return
        for name in sorted(conn.channels):
            self._unsubscribe(conn, name)
            self.net.cast(owner(name, self.shards), "leave", {"channel": name, "conn_id": conn.id})
        self.net.cast(owner(conn.user, self.shards), "user_conn_gone",
                      {"user": conn.user, "conn_id": conn.id})
        transport, conn.transport = conn.transport, None
        if transport is not None:
            transport.close(code)

    def attach(self, conn: Connection, transport: Transport) -> None:
        """A websocket or long poll takes over delivery; catch-up goes first (for a client
        that came back with positions, its recovery: see resume.py)."""
        previous, conn.transport = conn.transport, None
        if previous is not None and previous is not transport:
            previous.close(1000)
        conn.last_active = time.monotonic()
        if transport.since is not None and self.resume(conn, transport):
            self._changed(conn)     # no transport while it recovers: its frames are held
            return
        conn.transport = transport
        catchup = conn.take_catchup(transport.offsets)
        if catchup is not None:
            self.bytes_sent += len(catchup)
            transport.send(catchup)

    def detach(self, conn: Connection, transport: Transport) -> bytes | None:
        """A long poll is answering: what was queued for it since the last flush, which it
        takes along (later frames are held for the next poll)."""
        if conn.transport is not transport:
            return None
        self._changed(conn)
        conn.transport = None
        conn.last_active = time.monotonic()
        out, conn.out = conn.out, None
        return None if out is None else joined(out)

    # -- delivery to local connections -------------------------------------------

    def deliver(self, route: list, frame: bytes) -> None:
        was_clean = not self.dirty
        if route[0] == "u":
            targets = [self.conns[c] for c in route[1] if c in self.conns]
            self._queue(targets, frame, None, True, route[2], route[3], None)
        else:
            _, channel, exclude, pm, replay, amend, stamp, position = route
            targets = self.subscribers.get(channel) or ()
            if exclude or pm:       # a batch's sharers that get this frame leave it
                skip, only = set(exclude), set(pm)
                targets = [c for c in targets
                           if c.user not in skip and (not only or c.user in only)]
                self._queue(targets, frame, channel, replay, amend, stamp, position)
            elif (batch := self.batches.get(channel)) is not None:
                batch.frames.append(frame)      # the hot path: once for all its sharers
                if batch.loose:
                    self._queue(batch.loose, frame, channel, replay, amend, stamp, position)
            elif targets:
                self.batches[channel] = batch = Batch(frame)
                self._queue(self._share(batch, targets), frame, channel, replay, amend, stamp,
                            position)
        self.delivered += len(targets)
        if was_clean and self.dirty:
            self.net.schedule_flush()

    def _share(self, batch: Batch, conns: dict[Connection, None]) -> list[Connection]:
        """The connections that take ``batch`` as all they have queued; the others (queued
        already, without a transport, or wanting positions) are its loose ones."""
        dirty, loose = self.dirty, batch.loose
        for conn in conns:
            transport = conn.transport
            if conn.out is None and transport is not None and not transport.offsets:
                conn.out = batch
                dirty.append(conn)
            else:
                loose.append(conn)
        return loose

    def _queue(self, conns: Iterable[Connection], frame: bytes, channel: str | None,
               replay: bool, amend: list | None, stamp: int, position: list | None) -> None:
        """Queue a frame for each connection, or hold it for one without a transport."""
        dirty = self.dirty
        with_position = None        # the frame for clients that asked for positions
        for conn in conns:          # each line here costs per delivery
            transport = conn.transport
            if transport is None:
                conn.hold(frame, channel, replay, amend, stamp, position)
                continue
            data = frame
            if position is not None and transport.offsets:
                if with_position is None:
                    with_position = envelopes.positioned(frame, position)
                data = with_position
            out = conn.out
            if out is None:
                conn.out = data
                dirty.append(conn)
            elif out.__class__ is list:
                out.append(data)
            elif out.__class__ is bytes:
                conn.out = [out, data]
            else:                   # it leaves a batch: later frames of that channel come
                conn.out = [*out.frames, data]      # to it one by one (a closed batch's
                out.loose.append(conn)              # loose ones are never served again)

    def _changed(self, conn: Connection) -> None:
        """Who gets the frames of ``conn``'s channels changed: their batches take no more."""
        for name in conn.channels:
            self.batches.pop(name, None)

    def flush(self) -> float:
        """Send what each connection queued since the last flush as one frame. ``memo`` is
        shared by the connections flushed together: a channel's subscribers mostly queued the
        same frames, encoded once for all of them (the hot loop: a call less is measurable).
        Returns the messages a frame it sent: past one, messages come faster than this shard
        flushes."""
        dirty, self.dirty = self.dirty, []
        self.batches = {}
        per_frame = (self.delivered - self.delivered_before) / max(len(dirty), 1)
        self.delivered_before = self.delivered
        now = time.monotonic()      # a frame sent counts as activity
        sent = 0
        memo: dict = {}
        for conn in dirty:
            conn.last_active = now
            out, conn.out = conn.out, None
            transport = conn.transport
            if out is not None and transport is not None:
                sent += transport.send_frames(out, memo)
        self.bytes_sent += sent
        return per_frame

    def heartbeat(self) -> None:
        now = time.monotonic()
        memo: dict = {}
        for conn in self.conns.values():
            if conn.transport is not None:
                conn.last_active = now
                self.bytes_sent += conn.transport.send_frames(HEARTBEAT, memo)

    # -- housekeeping ---------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Drop idle connections and users; ``now`` is monotonic."""
        idle_conn = now - self.config.gc_conns_after
        for conn in [c for c in self.conns.values() if c.last_active < idle_conn]:
            self.remove_conn(conn)
        idle_user = now - self.config.gc_users_after
        for user in [u for u in self.users.values() if not u.conns and u.last_active < idle_user]:
            del self.users[user.name]

    def conn_info(self, args: dict) -> dict:
        """For the admin lookup: user, channels, transport and idle seconds of each id known."""
        now = time.monotonic()
        return {conn_id: {"user": conn.user, "channels": sorted(conn.channels),
                          "transport": type(conn.transport).__name__ if conn.transport else None,
                          "idle": round(now - conn.last_active, 1)}
                for conn_id in args["conn_ids"] if (conn := self.conns.get(conn_id))}

    def stats(self, args: Any = None) -> dict:
        return {
            "shard": self.index,
            "pid": os.getpid(),
            "connections": len(self.conns),
            "channels": len(self.channels),
            "users": len(self.users),
            "users_connected": sum(1 for u in self.users.values() if u.conns),
            "messages_published": self.published,
            "messages_delivered": self.delivered,
            "bytes_sent": self.bytes_sent,
            "slow_consumer_disconnects": self.slow_consumers,
            "uptime": time.time() - self.started,
        }

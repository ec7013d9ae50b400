"""A channel as its owning shard sees it: settings, history, positions and the member view.

Every message posted to a channel gets the next ``offset``; ``epoch`` names this life of the
channel's history (made anew when the channel is made again, e.g. after its shard restarted),
so a client that kept (epoch, offset) can ask for what came after it (``history_after``).
``ChannelOwner`` is what a shard answers for the channels it owns."""
from __future__ import annotations

import heapq
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import msgspec
import orjson

from . import envelopes
from .envelopes import history_entry, iso_time, new_epoch, new_uuid
from .routing import owner
from .schemas import ChannelConfig

if TYPE_CHECKING:
    from .config import Config
    from .shard import Net

DEFAULT_SETTINGS: dict[str, Any] = msgspec.structs.asdict(ChannelConfig())


class Channel:
    """Members are tracked per connection so joins and leaves are idempotent."""

    __slots__ = ("name", "uuid", "settings", "history", "last_active", "conns",
                 "user_conns", "shard_conns", "fanout", "public_states", "epoch", "offset",
                 "deleted")

    def __init__(self, name: str, settings: dict[str, Any] | None, shards: int) -> None:
        self.name = name
        self.uuid = new_uuid()
        # (offset, entry), made at the first entry kept: an empty deque takes 0.75 KB.
        self.history: deque[tuple[int, dict]] | None = None
        self.epoch: str | None = None       # made with the first message
        self.offset = 0
        self.deleted: set[int] | None = None    # offsets of deleted entries still in reach
        self.configure(settings or {})
        self.last_active = time.time()
        self.conns: dict[str, str] = {}            # conn_id -> username
        self.user_conns: dict[str, int] = {}       # username -> connections here
        self.shard_conns = [0] * shards            # connections per shard
        self.fanout: list[int] | None = None       # shards with connections; None: recount
        # username -> public state, for user lists; only non-empty ones (most users have none)
        self.public_states: dict[str, dict] = {}

    def configure(self, settings: dict[str, Any]) -> None:
        # Replaced, never changed in place: so channels on the defaults share their dict (and
        # ``forgettable`` knows them by it).
        merged = {**DEFAULT_SETTINGS, **settings}
        self.settings = DEFAULT_SETTINGS if merged == DEFAULT_SETTINGS else merged
        if self.history is not None:
            self.history = deque(self.history, maxlen=self.settings["history_size"])

    def join(self, conn_id: str, user: str, shard: int, public_state: dict) -> bool:
        """Add a connection; True when it is the user's first one here."""
        self.set_public_state(user, public_state)
        if conn_id in self.conns:
            return False
        self.conns[conn_id] = user
        self.shard_conns[shard] += 1
        self.fanout = None
        count = self.user_conns.get(user, 0)
        self.user_conns[user] = count + 1
        self.touch()
        return count == 0

    def leave(self, conn_id: str, shard: int) -> str | None:
        """Remove a connection; the username when that was its last one here."""
        user = self.conns.pop(conn_id, None)
        if user is None:
            return None
        self.shard_conns[shard] -= 1
        self.fanout = None
        count = self.user_conns[user] - 1
        self.touch()
        if count:
            self.user_conns[user] = count
            return None
        del self.user_conns[user]
        self.public_states.pop(user, None)
        return user

    def set_public_state(self, user: str, state: dict) -> None:
        if state:
            self.public_states[user] = state
        else:
            self.public_states.pop(user, None)

    def touch(self) -> None:
        self.last_active = time.time()

    def forgettable(self, before: float) -> bool:
        """Nothing to keep and untouched since ``before``: no members (on any shard), no
        history, default settings. Forgotten, it is as if it had never been made."""
        return (self.last_active < before and not self.conns and not self.history
                and self.settings is DEFAULT_SETTINGS)

    def member_list(self) -> list[dict]:
        return [{"user": user, "state": self.public_states.get(user) or {}}
                for user in sorted(self.user_conns)]

    def targets(self) -> list[int]:
        """Shards holding at least one connection of this channel (kept between changes)."""
        if self.fanout is None:
            self.fanout = [shard for shard, count in enumerate(self.shard_conns) if count]
        return self.fanout

    def record(self, item: dict) -> list:
        """Count a message (and keep it if the channel keeps history); its [epoch, offset]."""
        if self.epoch is None:
            self.epoch = new_epoch()
        self.offset += 1
        if self.settings["store_history"] and not item["no_history"]:
            if self.history is None:
                self.history = deque(maxlen=self.settings["history_size"])
            self.history.append((self.offset, history_entry(item)))
        self.touch()
        return [self.epoch, self.offset]

    def edit(self, item: dict) -> None:
        for _, entry in self.history or ():
            if entry["uuid"] == item["uuid"]:
                for key in ("message", "user", "timestamp", "edited"):
                    if key in item:
                        entry[key] = item[key]
                return

    def delete(self, uuid: str) -> None:
        """Remove the entry, remembering its offset: a deleted message is not a hole."""
        if self.history is None:
            return
        for kept in self.history:
            if kept[1]["uuid"] == uuid:
                self.history.remove(kept)
                oldest = self.history[0][0] if self.history else kept[0]
                self.deleted = {o for o in self.deleted or () if o >= oldest} | {kept[0]}
                return

    def history_after(self, offset: int) -> dict:
        """What a client at ``offset`` of this epoch missed, as far as history reaches."""
        return {"epoch": self.epoch, "top": self.offset,
                "entries": [[o, entry] for o, entry in self.history or () if o > offset],
                "deleted": sorted(o for o in self.deleted or () if o > offset)}

    def info(self, include_history: bool, include_users: bool) -> dict[str, Any]:
        history = [entry for _, entry in self.history or ()] if include_history else []
        return describe(self.name, self.uuid, self.settings, history, self.last_active,
                        len(self.conns), sorted(self.user_conns) if include_users else [])


def describe(name: str, uuid: str, settings: dict, history: list, last_active: float,
             connections: int, users: list[str]) -> dict[str, Any]:
    """A channel's Info entry (API.md); ``last_active`` in unix seconds."""
    return {
        "uuid": uuid,
        "name": name,
        "long_name": None,
        "settings": dict(settings),
        "history": history,
        "last_active": iso_time(last_active),
        "total_connections": connections,
        "total_users": len(users),
        "users": users,
    }


class ChannelOwner:
    """The commands a shard answers for the channels it owns (a part of the ``Shard`` actor):
    members, settings, history, and the fan-out of what is posted to them."""

    channels: dict[str, Channel]
    index: int
    shards: int
    published: int
    net: Net
    config: Config
    user_states: Callable[[dict], list[dict]]

    def join(self, args: dict) -> None:
        activations: dict[int, list] = {}
        announce = []
        for name, settings, conn_id, user, public_state in args["joins"]:
            conn_id, user = self._own_copies(conn_id, user)
            channel = self.channels.get(name)
            if channel is None:
                channel = self.channels[name] = Channel(name, settings, self.shards)
            shard = owner(conn_id, self.shards)
            activations.setdefault(shard, []).append([name, conn_id])
            if channel.join(conn_id, user, shard, public_state):
                if channel.settings["notify_presence"]:
                    announce.append((channel, user, public_state))
        for shard, pairs in activations.items():
            self.net.cast(shard, "activate", {"pairs": pairs})
        for channel, user, public_state in announce:
            self._presence(channel, user, public_state)

    def leave(self, args: dict) -> None:
        channel = self.channels.get(args["channel"])
        if channel is None:
            return
        user = channel.leave(args["conn_id"], owner(args["conn_id"], self.shards))
        if user is not None and channel.settings["notify_presence"]:
            self._presence(channel, user, None)

    def _presence(self, channel: Channel, user: str, state: dict | None) -> None:
        """``state`` is the joiner's public state, or None for a part."""
        users = (channel.member_list()
                 if channel.settings["broadcast_presence_with_user_lists"] else [])
        envelope = envelopes.presence(channel.name, user, state is not None, state, users)
        self._fanout(channel, envelope, [user], [], envelopes.publication_stamp())

    def configure(self, args: dict) -> dict:
        result = {}
        for name, settings in args["configs"].items():
            channel = self.channels.get(name)
            if channel is None:
                channel = self.channels[name] = Channel(name, settings, self.shards)
            else:
                channel.configure(settings)
            result[name] = channel.info(False, False)
        return result

    def info(self, args: dict) -> dict:
        """Infos of the chosen channels owned here, and how many were chosen: all of them, or
        with ``limit`` the first ones by name (info.gather merges the shards' pages).
        ``match`` (the admin panel's filter) keeps names holding it, whatever the case."""
        names = args["channels"]
        exclude = set(args["exclude"])
        after, match = args.get("after"), args.get("match")
        chosen = [name for name in (self.channels if names is None else names)
                  if name in self.channels and name not in exclude
                  and (after is None or name > after)
                  and (not match or match in name.casefold())]
        count = len(chosen)
        if args.get("limit") is not None:
            chosen = heapq.nsmallest(args["limit"], chosen)
        infos = {name: self.channels[name].info(args["history"], args["users"])
                 for name in chosen}
        result: dict[str, Any] = {"channels": infos, "chosen": count}
        if args["users"] and args.get("limit") is None:
            # The states of the members whose users are owned here go along: info.gather
            # then asks only the other users' owners (for /connect at two shards, a round
            # trip fewer). Not for a page (``limit``): gather may cut its channels further.
            mine = {user for info in infos.values() for user in info["users"]
                    if owner(user, self.shards) == self.index}
            result["states"] = self.user_states({
                "users": list(mine), "public": args["public"],
                "connections": args["connections"]})
        return result

    def publish(self, items: list[dict]) -> None:
        for item in items:
            stamp = item.pop("stamp")
            channel = self.channels.get(item["channel"])
            if channel is None:
                continue
            self.published += 1
            position = channel.record(item)
            self._fanout(channel, envelopes.message(item), item["exclude_users"],
                         item["pm_users"], stamp, position=position)

    def edit(self, items: list[dict]) -> None:
        for item in items:
            self._amend(item, envelopes.edit(item), "edit")

    def delete(self, items: list[dict]) -> None:
        for item in items:
            self._amend(item, envelopes.delete(item), "delete")

    def _amend(self, item: dict, envelope: dict, operation: str) -> None:
        """Change the history entry (when kept), then tell the members."""
        stamp = item.pop("stamp")
        channel = self.channels.get(item["channel"])
        if channel is None:
            return
        if operation == "edit":
            channel.edit(item)
        else:
            channel.delete(item["uuid"])
        self._fanout(channel, envelope, item["exclude_users"], item["pm_users"], stamp,
                     [operation, item["uuid"]])

    def state_change(self, args: dict) -> None:
        for name in args["channels"]:
            channel = self.channels.get(name)
            if channel is None or args["user"] not in channel.user_conns:
                continue
            channel.set_public_state(args["user"], args["public_state"])
            if args["notify"] and channel.settings["notify_state"]:
                envelope = envelopes.state_change(name, args["user"], args["public_state"],
                                                  args["changed"])
                self._fanout(channel, envelope, [], [], envelopes.publication_stamp())

    def _fanout(self, channel: Channel, envelope: dict, exclude: list, pm: list, stamp: int,
                amend: list | None = None, position: list | None = None) -> None:
        """Serialize once; one frame per shard that has subscribers (none: nothing to do).
        ``stamp`` orders the frame among those a connection holds for catch-up; a message's
        ``position`` ([epoch, offset]) goes along for the clients that asked for it."""
        targets = channel.targets()
        if not targets:
            return
        frame = orjson.dumps([envelope])
        route = ["c", channel.name, exclude, pm, channel.settings["store_frames"], amend, stamp,
                 position]
        for shard in targets:
            self.net.deliver(shard, route, frame)

    def forget_channels(self, now: float) -> None:
        """Forget the channels owned here that have nothing to keep and were untouched for
        gc_channels_after; ``now`` is wall-clock time, as channels' last_active."""
        before = now - self.config.gc_channels_after
        for name in [name for name, channel in self.channels.items()
                     if channel.forgettable(before)]:
            del self.channels[name]

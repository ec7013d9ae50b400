"""A channel as its owning shard sees it: settings, history, positions and the member view.

Every message posted to a channel gets the next ``offset``; ``epoch`` names this life of the
channel's history (made anew when the channel is made again, e.g. after its shard restarted),
so a client that kept (epoch, offset) can ask for what came after it (``history_after``)."""
from __future__ import annotations

import time
from collections import deque
from datetime import datetime, timezone
from typing import Any

import msgspec

from .envelopes import TIME_FORMAT, history_entry, new_epoch, new_uuid
from .schemas import ChannelConfig

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
    stamp = datetime.fromtimestamp(last_active, timezone.utc)
    return {
        "uuid": uuid,
        "name": name,
        "long_name": None,
        "settings": dict(settings),
        "history": history,
        "last_active": stamp.strftime(TIME_FORMAT),
        "total_connections": connections,
        "total_users": len(users),
        "users": users,
    }

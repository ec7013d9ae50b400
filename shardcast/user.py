"""A user as its owning shard sees it: state, public keys and live connections; ``UserOwner``
is what a shard answers for the users it owns (direct messages too)."""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import orjson

from . import limits
from .routing import owner

if TYPE_CHECKING:
    from .config import Config
    from .connection import Connection

UNKNOWN_USER = {"error": {"user": ["Unknown user"]}}
AMENDS = {"message:edit": "edit", "message:delete": "delete"}


def _same(old: Any, new: Any) -> bool:
    # 1, 1.0 and True compare equal in Python but are different JSON values.
    return type(old) is type(new) and old == new


class User:
    __slots__ = ("name", "state", "public_keys", "conns", "last_active")

    def __init__(self, name: str, state: dict[str, Any]) -> None:
        self.name = name
        self.state = dict(state)
        self.public_keys: tuple[str, ...] = ()     # a tuple: an empty one costs nothing
        self.conns: dict[str, None] = {}   # conn ids as keys: a dict of one is 184 B, a set 216
        self.last_active = time.monotonic()

    def public_state(self) -> dict[str, Any]:
        return {key: self.state[key] for key in self.public_keys if key in self.state}

    def merge(self, updates: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply ``updates``; the changed ``{key, value}`` pairs in request order."""
        changed = []
        for key, value in updates.items():
            old = self.state.get(key)
            self.state[key] = value
            if not _same(old, value):
                changed.append({"key": key, "value": value})
        self.last_active = time.monotonic()
        return changed


class UserOwner:
    """The commands a shard answers for the users it owns (a part of the ``Shard`` actor)."""

    users: dict[str, User]
    conns: dict[str, Connection]
    config: Config

    def _own_copies(self, conn_id: str, name: str) -> tuple[str, str]:
        """This shard's own strings equal to a connection id and username, where it has them:
        IPC decodes new ones per message, and a connection's shard, its user's and its
        channels' each keep both (about 0.15 KB per connection less at 2 shards)."""
        conn = self.conns.get(conn_id)
        if conn is not None:
            conn_id = conn.id
            if conn.user == name:
                return conn_id, conn.user
        user = self.users.get(name)
        return conn_id, user.name if user is not None else name

    def user_connect(self, args: dict) -> dict:
        conn_id, name = self._own_copies(args["conn_id"], args["user"])
        user = self.users.get(name)
        refusal = (limits.user_connections(user.conns if user else {}, conn_id,
                                           self.config.max_connections_per_user)
                   or limits.state_keys(user.state if user else args["fresh_state"],
                                        args["state"], self.config.max_state_keys))
        if refusal is not None:
            return refusal
        if user is None:
            user = self.users[name] = User(name, args["fresh_state"])
        user.merge(args["state"])
        user.public_keys = tuple(args["public_keys"])
        user.conns[conn_id] = None
        return {"state": user.state, "public_state": user.public_state()}

    def user_public(self, args: dict) -> dict:
        """Wrapped: a public state may hold a key named "error"."""
        user = self.users.get(args["user"])
        return {"public_state": user.public_state() if user is not None else {}}

    def user_state(self, args: dict) -> dict:
        user = self.users.get(args["user"])
        if user is None:
            return UNKNOWN_USER
        refusal = limits.state_keys(user.state, args["state"], self.config.max_state_keys)
        if refusal is not None:
            return refusal
        before = user.public_state()
        changed = user.merge(args["state"])
        if "public_keys" in args:
            user.public_keys = tuple(args["public_keys"])
        public = user.public_state()
        return {
            "user_state": user.state,
            "changed_state": changed,
            "public_keys": user.public_keys,
            "public_state": public,
            "changed_public": [item for item in changed if item["key"] in user.public_keys],
            "refresh": bool(changed) or public != before,
            "conns": sorted(user.conns),
        }

    def user_states(self, args: dict) -> list[dict]:
        found = []
        for name in args["users"]:
            user = self.users.get(name)
            if user is None:
                continue
            state = user.public_state() if args["public"] else user.state
            entry = {"user": name, "state": state}
            if args.get("connections"):
                entry["connections"] = sorted(user.conns)
            found.append(entry)
        return found

    def user_conn_gone(self, args: dict) -> None:
        user = self.users.get(args["user"])
        if user is not None:
            user.conns.pop(args["conn_id"], None)
            user.last_active = time.monotonic()

    def direct(self, args: dict) -> None:
        """Direct envelopes to every connection of the named users owned here."""
        envelope = args["envelope"]
        frame = orjson.dumps([envelope])
        amend = AMENDS.get(envelope["type"])
        if amend is None:
            self.published += 1
        else:
            amend = [amend, envelope["uuid"]]
        by_shard: dict[int, list[str]] = {}
        for name in set(args["users"]):     # a user listed twice still gets one copy
            user = self.users.get(name)
            if user is not None:
                for conn_id in user.conns:
                    by_shard.setdefault(owner(conn_id, self.shards), []).append(conn_id)
        for shard, conn_ids in by_shard.items():
            self.net.deliver(shard, ["u", conn_ids, amend, args["stamp"]], frame)

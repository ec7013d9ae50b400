"""A user as its owning shard sees it: state, public keys and live connections."""
from __future__ import annotations

import time
from typing import Any

def _same(old: Any, new: Any) -> bool:
    # 1, 1.0 and True compare equal in Python but are different JSON values.
    return type(old) is type(new) and old == new


class User:
    __slots__ = ("name", "state", "public_keys", "conns", "last_active")

    def __init__(self, name: str, state: dict[str, Any]) -> None:
        self.name = name
        self.state = dict(state)
        self.public_keys: list[str] = []
        self.conns: set[str] = set()
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

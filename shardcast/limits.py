"""Configured limits on what one connection, user or shard may hold.

Each check returns None when the limit holds, else the error reply a shard sends back:
``{"error": {field: [message]}}`` (a 422), with ``"status"`` when another status fits
better (503: the shard is full, a retry may land elsewhere or later). A limit of 0 is no limit.
"""
from __future__ import annotations

from typing import Any, Collection, Iterable

SHARD_FULL = 503


def over(count: int, limit: int) -> bool:
    return 0 < limit < count


def _refusal(field: str, message: str, status: int | None = None) -> dict:
    reply: dict[str, Any] = {"error": {field: [message]}}
    if status is not None:
        reply["status"] = status
    return reply


def channels(current: Collection[str], names: Iterable[str], limit: int) -> dict | None:
    total = len({*current, *names})
    if not over(total, limit):
        return None
    return _refusal("channels", f"A connection may be in {limit} channels at most "
                    f"(max_channels_per_connection); this would make {total}")


def user_connections(conns: Collection[str], conn_id: str, limit: int) -> dict | None:
    if conn_id in conns or not over(len(conns) + 1, limit):
        return None
    return user_connections_full(len(conns), limit)


def user_connections_full(held: int, limit: int) -> dict:
    return _refusal("username", f"This user holds {held} connections, the most allowed "
                    "(max_connections_per_user); disconnect one first")


def state_keys(state: dict, updates: dict, limit: int) -> dict | None:
    total = len(state.keys() | updates.keys())
    if not over(total, limit):
        return None
    return state_keys_over(total, limit)


def state_keys_over(total: int, limit: int) -> dict:
    return _refusal("user_state", f"A user's state may hold {limit} keys at most "
                    f"(max_state_keys); this would make {total}")


def shard_connections(shard: int, count: int, limit: int) -> dict | None:
    if not over(count + 1, limit):
        return None
    return _refusal("shard", f"Shard {shard} holds {count} connections, its most "
                    "(max_connections_per_shard); retry with another conn_id, or later",
                    SHARD_FULL)


def long_polls(shard: int, count: int, limit: int) -> dict | None:
    if not over(count + 1, limit):
        return None
    return _refusal("listen", f"Shard {shard} holds {count} long polls, its most "
                    "(max_long_polls); retry in a moment, or use the websocket", SHARD_FULL)

"""Which shard owns a channel, a user or a connection."""
from typing import Iterable
from zlib import crc32


def owner(key: str, shards: int) -> int:
    """Stable across processes and restarts (unlike the builtin ``hash``)."""
    return crc32(key.encode()) % shards


def by_owner(keys: Iterable[str], shards: int) -> dict[int, list[str]]:
    """Keys by owning shard, order kept."""
    groups: dict[int, list[str]] = {}
    for key in keys:
        groups.setdefault(owner(key, shards), []).append(key)
    return groups

"""Which shard owns a channel, a user or a connection."""
from zlib import crc32


def owner(key: str, shards: int) -> int:
    """Stable across processes and restarts (unlike the builtin ``hash``)."""
    return crc32(key.encode()) % shards

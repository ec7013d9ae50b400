"""The supervisor's view of its own shards: owner routing and request/cast over IPC links."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Iterable

from .ipc import Link, socket_path
from .routing import by_owner, owner

REQUEST_TIMEOUT = 10.0
log = logging.getLogger("shardcast.api")


class ShardUnavailable(Exception):
    """A shard did not answer (it is restarting, or overloaded)."""

    def __init__(self, shard: int) -> None:
        super().__init__(shard)
        self.shard = shard

    def errors(self) -> dict:
        return {"shard": [f"Shard {self.shard} is unavailable; retry"]}


class ShardBehind(ShardUnavailable):
    """A shard has not read what this process already queued for it (max_shard_backlog)."""

    def __init__(self, shard: int, limit: int) -> None:
        super().__init__(shard)
        self.limit = limit

    def errors(self) -> dict:
        return {"shard": [f"Shard {self.shard} is behind: more than {self.limit} bytes wait "
                          "for it (max_shard_backlog); retry"]}


RECONNECT_EVERY = 0.05     # seconds between tries to reach a (restarting) shard


class Shards:
    def __init__(self, shards: int, max_backlog: int) -> None:
        self.count = shards
        self.max_backlog = max_backlog   # bytes queued for a shard that does not read them
        self.links: list[Link | None] = [None] * shards
        self.restarts = [0] * shards        # counted by the supervisor, shown by admin.json

    async def keep_connected(self, ipc_dir: str) -> None:
        """Links to every shard (an API process's), made again whenever one is lost: a shard
        that died comes back on the same socket path. Returns once all are linked."""
        await asyncio.gather(*(self._connect(index, ipc_dir) for index in range(self.count)))

    async def _connect(self, index: int, ipc_dir: str) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, link = await loop.create_unix_connection(
                    lambda: Link(_unexpected, lambda lost: self._lost(index, lost, ipc_dir)),
                    socket_path(ipc_dir, index))
            except OSError:
                await asyncio.sleep(RECONNECT_EVERY)
                continue
            self.links[index] = link
            return

    def _lost(self, index: int, link: Link, ipc_dir: str) -> None:
        if self.links[index] is link:
            asyncio.ensure_future(self._connect(index, ipc_dir))

    def owner(self, key: str) -> int:
        return owner(key, self.count)

    def group(self, keys: Iterable[str]) -> dict[int, list[str]]:
        return by_owner(keys, self.count)

    def link(self, shard: int) -> Link:
        """The link to ``shard``, if it can take more: a stalled shard's link would otherwise
        buffer everything sent its way in this process."""
        link = self.links[shard]
        if link is None or link.closed:
            raise ShardUnavailable(shard)
        if link.backlog() > self.max_backlog:
            raise ShardBehind(shard, self.max_backlog)
        return link

    def request(self, shard: int, command: str, args: Any, raw: bool = False,
                timeout: float = REQUEST_TIMEOUT) -> asyncio.Future:
        """The shard's answer; fails with ShardUnavailable after ``timeout``, or with
        ConnectionError on link loss."""
        return expiring(self.link(shard).request(command, args, raw), shard, timeout)

    async def call(self, shard: int, command: str, args: Any, raw: bool = False,
                   timeout: float = REQUEST_TIMEOUT) -> Any:
        try:
            return await self.request(shard, command, args, raw, timeout)
        except ConnectionError:
            raise ShardUnavailable(shard) from None

    async def call_many(self, calls: dict[int, Any], command: str) -> list[Any]:
        """The same command to several shards at once, one argument each."""
        return await answers({shard: self.request(shard, command, args)
                              for shard, args in calls.items()})

    def cast_each(self, casts: list[tuple[int, str, Any]]) -> list[Link]:
        """Each (shard, command, args) cast, or none: ShardUnavailable (a 503) when a shard
        cannot take its part. The links they went on."""
        links = [self.link(shard) for shard, _, _ in casts]
        for link, (_, command, args) in zip(links, casts):
            link.cast(command, args)
        return links

    def flush(self) -> None:
        """Send what is queued for every shard now."""
        for link in self.links:
            if link is not None and link.outgoing:
                link.flush()

    @staticmethod
    def in_sockets(links: Iterable[Link]) -> asyncio.Future | None:
        """Flush ``links``: done once what they were handed is in their sockets; None when it
        already is."""
        waits = []
        for link in dict.fromkeys(links):      # each once
            link.flush()
            wait = link.in_socket()
            if wait is not None:
                waits.append(wait)
        if not waits:
            return None
        return waits[0] if len(waits) == 1 else asyncio.gather(*waits)

    def cast_all(self, command: str, args: Any) -> None:
        for link in self.links:
            if link is not None and not link.closed:
                link.cast(command, args)


async def answers(asked: dict[int, asyncio.Future]) -> list[Any]:
    """The answers of the shards asked, in order, once all are in (each request has its
    timer); at once when they already are (a shard's own part), without a trip through the
    loop. A lost link fails as ShardUnavailable, naming the first shard whose link was lost."""
    futures = list(asked.values())
    if not all(future.done() for future in futures):
        await asyncio.wait(futures)
    lost = [shard for shard, future in asked.items() if _lost(future)]   # reads every failure
    if lost:
        raise ShardUnavailable(lost[0])
    return [future.result() for future in futures]


def _lost(future: asyncio.Future) -> bool:
    done = future.done() and not future.cancelled()
    return done and isinstance(future.exception(), ConnectionError)


def expiring(future: asyncio.Future, shard: int, timeout: float) -> asyncio.Future:
    """``future``, failed with ShardUnavailable if ``shard`` has not answered within
    ``timeout`` (a timer, not a task per request as asyncio.wait_for would make)."""
    timer = future.get_loop().call_later(timeout, _expire, future, shard)
    future.add_done_callback(lambda _: timer.cancel())
    return future


def _expire(future: asyncio.Future, shard: int) -> None:
    if not future.done():
        future.set_exception(ShardUnavailable(shard))


def _unexpected(link: Link, kind: int, request_id: int, body: bytes) -> None:
    log.warning("ignoring an unsolicited frame from a shard (kind %d)", kind)

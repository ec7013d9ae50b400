"""Fixtures: real shardcast servers, shared per session, and websocket clients.

Every test drives a real ``python -m shardcast serve`` process (a supervisor plus its shard
processes) over real sockets. Tests sharing a server keep out of each other's way by using
channel and user names of their own (``contract.unique``).
"""

from __future__ import annotations

import contextlib
import uuid
from typing import Any, Callable, Iterator

import pytest

from contract import unique
import harness
from harness import (ADMIN_PASSWORD, GC_CONNS_AFTER, GC_HEARTBEAT_INTERVAL, SILENT_HEARTBEAT_INTERVAL, ClusterNodes,
                     Server, ServerPool)
from redisserver import RedisServer
from wsclient import WsClient, open_websocket

LOG_TAIL = 6000     # characters of a server's log shown with a failure


def pytest_runtest_setup(item: pytest.Item) -> None:
    harness.STARTED.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    """A failed test's report carries the log tail of every server it used, fixtures and those
    it started itself (stopped or not): a flake on a busy CI host is then explained by what
    the server said, not guessed at."""
    report = yield
    if report.failed:
        named = {id(value): name for name, value in getattr(item, "funcargs", {}).items()
                 if isinstance(value, Server)}
        servers = {id(server): server for server in harness.STARTED}
        servers.update({key: item.funcargs[name] for key, name in named.items()})
        for key, server in servers.items():
            label = named.get(key, f"started on port {server.api_port}")
            report.sections.append((f"log of server {label}", server.output()[-LOG_TAIL:]))
    return report


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    pool = ServerPool()
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session", params=[1, 3, "cluster"], ids=["1shard", "3shards", "cluster"])
def server(request: pytest.FixtureRequest, server_pool: ServerPool) -> Server:
    """The contract server: one node with one shard, with three, and a node of the session's
    cluster (API.md § Cluster: every endpoint answers for the whole cluster on any node)."""
    if request.param == "cluster":
        return request.getfixturevalue("cluster")[0]
    return server_pool.get(request.param)


@pytest.fixture(scope="session")
def server3(server_pool: ServerPool) -> Server:
    """A three-shard server for cross-shard behaviour."""
    return server_pool.get(3)


@pytest.fixture(scope="session")
def gc_server(server_pool: ServerPool) -> Server:
    """A three-shard server that collects idle connections after 2 s and heartbeats every 1 s."""
    return server_pool.get(
        3,
        SHARDCAST_GC_CONNS_AFTER=GC_CONNS_AFTER,
        SHARDCAST_HEARTBEAT_INTERVAL=GC_HEARTBEAT_INTERVAL,
    )


@pytest.fixture(scope="session")
def silent_gc_server(server_pool: ServerPool) -> Server:
    """Like ``gc_server``, but the server sends no heartbeats: an attached websocket is idle
    unless its client talks."""
    return server_pool.get(
        3,
        SHARDCAST_GC_CONNS_AFTER=GC_CONNS_AFTER,
        SHARDCAST_HEARTBEAT_INTERVAL=SILENT_HEARTBEAT_INTERVAL,
    )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the session's clusters (each uses a key prefix of its own)."""
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="session")
def cluster(redis_server: RedisServer) -> Iterator[ClusterNodes]:
    """Three nodes of two shards each over one Redis: one broker."""
    nodes = ClusterNodes(redis_server.url(), SHARDCAST_ADMIN_SECRET=ADMIN_PASSWORD).start()
    yield nodes
    nodes.stop()


@pytest.fixture(scope="session")
def channel_gc_server(server_pool: ServerPool) -> Server:
    """A three-shard server that forgets channels with nothing to keep after 1 s."""
    return server_pool.get(3, SHARDCAST_GC_CHANNELS_AFTER=1)


@pytest.fixture
def open_ws() -> Iterator[Callable[[str | dict], WsClient]]:
    """Open websockets (from a URL or a /connect reply) that close when the test ends."""
    with contextlib.ExitStack() as stack:

        def _open(target: str | dict) -> WsClient:
            url = target["ws_url"] if isinstance(target, dict) else target
            return stack.enter_context(open_websocket(url))

        yield _open


@pytest.fixture
def witness(open_ws: Callable) -> Callable[[Server, dict], WsClient]:
    """``witness(server, reply)``: another attached connection of the same user, in the same
    channels, owned by the same shard as the connection of ``reply``.

    Delivery is asynchronous: /message answers before fan-out. A shard takes each fan-out frame
    in one piece, so once the witness has received a message, that shard has handled it for the
    witnessed connection too. Tests of catch-up wait on a witness before they attach, so that what
    they posted is certainly "posted before the websocket opened".
    """

    def _witness(server: Server, reply: dict) -> WsClient:
        for _ in range(60):
            twin = server.connect(reply["username"], reply["channels"], conn_id=str(uuid.uuid4()))
            if twin["ws_url"].split("/ws")[0] == reply["ws_url"].split("/ws")[0]:
                return open_ws(twin)
            server.ok("POST", "/disconnect", {"conn_id": twin["conn_id"]}, sign=False)
        raise AssertionError("no connection landed on the witnessed connection's shard")

    return _witness


@pytest.fixture
def join(open_ws: Callable) -> Callable[..., tuple[dict, WsClient]]:
    """Connect a user and attach its websocket at once: ``join(server, username, channels)``
    returns (connect reply, client)."""

    def _join(server: Server, username: str, channels: list[str] = (), **body: Any) -> tuple[dict, WsClient]:
        reply = server.connect(username, channels, **body)
        return reply, open_ws(reply)

    return _join


@pytest.fixture
def crowd(join: Callable) -> Callable[..., tuple[str, list[tuple[str, WsClient]]]]:
    """``crowd(server, count=3, **config)``: a fresh channel with ``config`` and ``count``
    attached users in it; returns (channel, [(username, client), ...])."""

    def _crowd(server: Server, count: int = 3, **config: Any) -> tuple[str, list[tuple[str, WsClient]]]:
        channel = unique("ch")
        server.channel_config({channel: config})
        members = []
        for _ in range(count):
            username = unique("m")
            _, client = join(server, username, [channel])
            members.append((username, client))
        return channel, members

    return _crowd

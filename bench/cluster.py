"""A cluster under test: a redis-server of the bench's own and N shardcast nodes sharing it.

Redis runs in a temporary directory on a free loopback port, without persistence (never a
system service); node i is ``shardcast serve --redis-url ... --node-id node<i>`` with its own
API and websocket ports. Clients connect through the nodes' APIs in turn (``apis``), so the
subscribers spread over the nodes; ``api`` (node 0) takes the calls that need one node. Like
every target, the cluster starts fresh for each scenario, Redis included.

The server's CPU and memory are the nodes' and Redis' together; ``probe().parts()`` names the
two, so each scenario also reports Redis' CPU next to the nodes'.
"""
from __future__ import annotations

import secrets
import shutil
import tempfile
from typing import NamedTuple

from .resources import ServerProbe
from .targets import HOST, LocalServer, ShardcastServer, Target, free_port

REDIS_DIR_PREFIX = "shardcast-bench-redis-"   # the working directory of the bench's Redis


class Shape(NamedTuple):
    """What one shardcast target is: ``workers`` shards on one node alone (``nodes`` None), or
    on each of ``nodes`` nodes sharing a Redis."""

    workers: int
    nodes: int | None = None


def parse_shapes(text: str) -> list[Shape]:
    """``--workers``: "1,2" (one node of 1, then of 2 shards), "3x1" (3 nodes of 1 shard)."""
    shapes = []
    for part in text.split(","):
        nodes, times, workers = part.strip().lower().rpartition("x")
        if not workers.isdigit() or (times and not nodes.isdigit()):
            raise ValueError(f"not a shard count (W) or nodes × shards (NxW): {part!r}")
        shapes.append(Shape(int(workers), int(nodes) if nodes else None))
    if any(shape.workers < 1 or (shape.nodes is not None and shape.nodes < 1)
           for shape in shapes):
        raise ValueError("shard and node counts start at 1")
    return shapes


class RedisServer(LocalServer):
    """``redis-server`` on a free loopback port, in a temporary directory, no persistence."""

    name = "redis-server"

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self.dir: str | None = None

    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def allocate_ports(self) -> None:
        self.port = free_port()

    def ports(self) -> list[int]:
        return [self.port]

    def command(self) -> list[str]:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server); "
                               "--redis starts one for the nodes")
        self.dir = tempfile.mkdtemp(prefix=REDIS_DIR_PREFIX)
        return [server, "--port", str(self.port), "--bind", HOST, "--dir", self.dir,
                "--save", "", "--appendonly", "no", "--protected-mode", "no",
                "--loglevel", "warning"]

    def answers(self) -> bool:
        """Nothing to load (no persistence): it serves once its port accepts."""
        return True

    def stop(self) -> None:
        super().stop()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class ClusterNode(ShardcastServer):
    """One node of the cluster: ``shardcast serve`` with the Redis URL and a node id, on
    ports no other node of the cluster took."""

    def __init__(self, workers: int, index: int, redis: RedisServer, secret: str,
                 taken: set[int]) -> None:
        super().__init__(workers)
        self.name = self.node_id = f"node{index}"
        self.redis = redis
        self.secret = secret
        self.taken = taken

    def allocate_ports(self) -> None:
        while True:
            super().allocate_ports()
            ports = set(self.ports())
            if not ports & self.taken:
                self.taken |= ports
                return

    def command(self) -> list[str]:
        return [*super().command(), "--redis-url", self.redis.url(), "--node-id", self.node_id]


class ProbeGroup(ServerProbe):
    """Several servers' processes read as one; ``parts`` names each."""

    def __init__(self, named: dict[str, ServerProbe]) -> None:
        super().__init__(None)
        self.named = named

    def processes(self) -> list:
        return [process for probe in self.named.values() for process in probe.processes()]

    def parts(self) -> dict[str, ServerProbe]:
        return self.named


class ClusterServer(Target):
    """``nodes`` nodes of ``workers`` shards each, over one Redis, all started here."""

    def __init__(self, nodes: int, workers: int) -> None:
        self.nodes = nodes
        self.workers = workers
        self.name = f"shardcast {nodes} nodes × w={workers}"
        self.secret = secrets.token_urlsafe(16)
        self.redis = RedisServer()
        self.taken: set[int] = set()
        self.members = [ClusterNode(workers, index, self.redis, self.secret, self.taken)
                        for index in range(nodes)]

    @property
    def apis(self) -> list[str]:
        return [node.api for node in self.members]

    def start(self, settings: dict[str, object] | None = None) -> None:
        self.taken.clear()
        try:
            self.redis.start()
            for node in self.members:   # all start at once, then each is waited for
                node.launch(settings)
            for node in self.members:
                node.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.api = self.members[0].api

    def stop(self) -> None:
        for node in self.members:
            node.stop()
        self.redis.stop()

    def probe(self) -> ServerProbe:
        nodes = ProbeGroup({node.name: node.probe() for node in self.members})
        return ProbeGroup({"nodes": nodes, "redis": self.redis.probe()})

    def output(self) -> str:
        return "".join(f"--- {target.name}\n{target.output()}\n"
                       for target in [*self.members, self.redis])

    def logged_errors(self) -> list[str]:
        return [f"{node.name}: {line}" for node in self.members for line in node.logged_errors()]

    def slow_consumer_closes(self) -> int | None:
        counts = [node.slow_consumer_closes() for node in self.members]
        return None if None in counts else sum(counts)


def cluster_target(shape: Shape) -> Target:
    """The target of a shape: one node alone, or a cluster over Redis."""
    if shape.nodes is None:
        return ShardcastServer(shape.workers)
    return ClusterServer(shape.nodes, shape.workers)

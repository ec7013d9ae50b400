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
import socket
import subprocess
import tempfile
import time
from typing import Any, NamedTuple

import hiredis

from .resources import ServerProbe
from .targets import HOST, ShardcastServer, Target, free_port

REDIS_START_TIMEOUT = 10.0
REDIS_STOP_TIMEOUT = 10.0


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


class RedisProcess:
    """``redis-server`` on a free loopback port, in a temporary directory, no persistence."""

    def __init__(self, log: Any) -> None:
        self.log = log
        self.port = 0
        self.dir: str | None = None
        self.process: subprocess.Popen | None = None

    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server); "
                               "--redis starts one for the nodes")
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="shardcast-bench-redis-")
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", HOST, "--dir", self.dir, "--save", "",
             "--appendonly", "no", "--protected-mode", "no", "--loglevel", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while not self.answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            return self.call("PING") == b"PONG"
        except OSError:
            return False

    def call(self, *args: str) -> Any:
        """One command on a connection of its own; the decoded reply."""
        with socket.create_connection((HOST, self.port), timeout=2) as sock:
            sock.sendall(hiredis.pack_command(args))
            reader = hiredis.Reader()
            while (reply := reader.gets()) is False:
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("redis-server closed the connection")
                reader.feed(chunk)
        return reply

    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(REDIS_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


class ClusterNode(ShardcastServer):
    """One node of the cluster: ``shardcast serve`` with the Redis URL and a node id, on
    ports no other node of the cluster took."""

    def __init__(self, workers: int, index: int, redis: RedisProcess, secret: str,
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
        self.log = tempfile.TemporaryFile()
        self.redis = RedisProcess(self.log)
        self.taken: set[int] = set()
        self.members = [ClusterNode(workers, index, self.redis, self.secret, self.taken)
                        for index in range(nodes)]

    @property
    def apis(self) -> list[str]:
        return [node.api for node in self.members]

    def start(self, settings: dict[str, object] | None = None) -> None:
        self.taken.clear()
        self.log.seek(0)
        self.log.truncate()
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
        return ProbeGroup({"nodes": nodes, "redis": ServerProbe(self.redis.pid())})

    def output(self) -> str:
        self.log.seek(0)
        redis = self.log.read().decode(errors="replace")[-2000:]
        return "".join(f"--- {node.name}\n{node.output()}\n" for node in self.members) + \
            (f"--- redis\n{redis}" if redis else "")

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

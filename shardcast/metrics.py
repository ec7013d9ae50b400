"""``/metrics`` in the Prometheus text format: per-shard figures, shard restarts, IPC queues,
and the API's request counts and latencies by endpoint.

Shard figures are asked of the shards at scrape time (their ``stats`` command); the API figures
are counted in the supervisor as requests are answered.
"""
from __future__ import annotations

import asyncio
import itertools
from bisect import bisect_left
from time import perf_counter
from typing import TYPE_CHECKING, Awaitable, Callable, Iterator

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)

from . import http_api
from .shards import ShardUnavailable
from .http_server import Request, Response, json_response
from .schemas import Invalid

if TYPE_CHECKING:
    from .supervisor import Supervisor

SCRAPE_TIMEOUT = 2.0
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})
STATIC = "/static/"
# stats() key -> (metric name, help, kind)
SHARD_FIGURES = {
    "connections": ("shardcast_connections", "Connections owned by the shard", "gauge"),
    "channels": ("shardcast_channels", "Channels owned by the shard", "gauge"),
    "users": ("shardcast_users", "Users remembered by the shard", "gauge"),
    "users_connected": ("shardcast_users_connected", "Users of the shard with a connection",
                        "gauge"),
    "messages_published": ("shardcast_messages_published",
                           "Messages published to the shard's channels and users", "counter"),
    "messages_delivered": ("shardcast_messages_delivered",
                           "Messages handed to the shard's connections", "counter"),
    "bytes_sent": ("shardcast_bytes_sent", "Bytes sent to the shard's clients", "counter"),
    "slow_consumer_disconnects": ("shardcast_slow_consumer_disconnects",
                                  "Websockets dropped for not keeping up", "counter"),
    # a cluster node's shards only
    "redis_latency": ("shardcast_redis_latency_seconds",
                      "Round trip of the shard's Redis command connection (smoothed PING)",
                      "gauge"),
    "redis_reconnects": ("shardcast_redis_reconnects",
                         "Times the shard's Redis command connection was made again", "counter"),
    "redis_failures": ("shardcast_redis_failures",
                       "Redis commands of the shard that failed or found no connection",
                       "counter"),
    "subscriptions": ("shardcast_redis_subscriptions",
                      "Channels the shard is subscribed to in Redis", "gauge"),
    "subscription_lag": ("shardcast_redis_subscription_lag_seconds",
                         "Time the last probe took to come back through the subscription",
                         "gauge"),
    "subscription_reconnects": ("shardcast_redis_subscription_reconnects",
                                "Times the shard's Redis subscription was made again", "counter"),
    "subscription_stalls": ("shardcast_redis_subscription_stalls",
                            "Subscriptions found silent by the probe and rebuilt", "counter"),
    "gaps_repaired": ("shardcast_redis_gaps_repaired",
                      "Messages missed by the subscription and read back from history",
                      "counter"),
    "gaps_lost": ("shardcast_redis_gaps_lost",
                  "Messages missed by the subscription that history no longer held", "counter"),
    "duplicates_dropped": ("shardcast_redis_duplicates_dropped",
                           "Publications received twice and dropped", "counter"),
}
CLUSTER_TOTALS = (
    ("total_channels", "shardcast_cluster_channels", "Channels known to the cluster"),
    ("remembered_user_count", "shardcast_cluster_users", "Users remembered by the cluster"),
    ("unique_user_count", "shardcast_cluster_users_connected",
     "Users with a connection on some node"),
)
Handler = Callable[[Request], "Response | Awaitable[Response]"]
disable_created_metrics()   # no *_created series: this process is the supervisor, ours alone


class Metrics:
    def __init__(self, api: "http_api.HttpApi", supervisor: "Supervisor") -> None:
        self.api = api
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ShardCollector(self))
        self.registry.register(_RequestCollector(self))
        self.registry.register(_ClusterCollector(self))
        self.stats: list[dict | None] = []
        self.cluster_figures: dict = {}     # a cluster node: the last scrape's nodes, totals
        # Plain numbers, made metric families at scrape time: prometheus-client's own
        # metrics take a lock per update, a measured microsecond of each request.
        self.counts: dict[tuple[str, str, str], list[int]] = {}        # [answers]
        self.latencies: dict[tuple[str, str], list[float]] = {}      # [sum, per bucket...]
        self._cells: dict[tuple, tuple[list[int], list[float]]] = {}

    # -- API requests -------------------------------------------------------------------

    def instrument(self, handle: Handler) -> Handler:
        """``handle``, counting and timing each answer under its route's path."""
        def timed(request: Request) -> Response | Awaitable[Response]:
            start = perf_counter()
            result = handle(request)
            if isinstance(result, Response):
                self._observe(request, result.status, start)
                return result
            return self._finish(request, result, start)
        return timed

    async def _finish(self, request: Request, pending: Awaitable[Response],
                      start: float) -> Response:
        try:
            response = await pending
        except BaseException:
            self._observe(request, 500, start)
            raise
        self._observe(request, response.status, start)
        return response

    def _observe(self, request: Request, status: int, start: float) -> None:
        seconds = perf_counter() - start
        cells = self._cells.get((request.path, request.method, status))
        if cells is None:
            cells = self._new_cells(request, status)
        cells[0][0] += 1
        latency = cells[1]
        latency[0] += seconds
        latency[1 + bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def _new_cells(self, request: Request, status: int) -> tuple[list[int], list[float]]:
        endpoint = self._endpoint(request.path)
        method = request.method if request.method in METHODS else "other"
        cells = (self.counts.setdefault((endpoint, method, str(status)), [0]),
                 self.latencies.setdefault((endpoint, method),
                                           [0.0] * (len(LATENCY_BUCKETS) + 2)))
        if endpoint != "other":   # unknown paths do not grow the cache
            self._cells[(request.path, request.method, status)] = cells
        return cells

    def _endpoint(self, path: str) -> str:
        if path.startswith(STATIC):
            return STATIC + "*"
        return path if path in self.api.routes else "other"

    # -- scrape -------------------------------------------------------------------------

    async def render(self, request: Request) -> Response:
        """Served to the addresses that may call the API (``allow_posting_from``)."""
        if not http_api._client_allowed(request.client, self.api.allowed):
            return json_response({"request": f"IP {request.client} may not read metrics: "
                                  "add it to allow_posting_from"}, 403)
        shards = self.supervisor.shards
        self.stats = await asyncio.gather(*(self._shard_stats(shard)
                                            for shard in range(shards.count)))
        self.cluster_figures = await self._cluster_figures()
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    async def _cluster_figures(self) -> dict:
        node = self.supervisor.node
        if node is None:
            return {}
        try:
            return await node.figures([])
        except Invalid:         # Redis is away: shardcast_redis_up says so
            return {"redis_up": 0}

    async def _shard_stats(self, shard: int) -> dict | None:
        try:
            return await self.supervisor.shards.call(shard, "stats", None,
                                                      timeout=SCRAPE_TIMEOUT)
        except ShardUnavailable:
            return None


class _RequestCollector:
    """The API's request counts and latency histograms, from the supervisor's plain numbers."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        counts = CounterMetricFamily("shardcast_api_requests", "API requests answered",
                                     labels=["endpoint", "method", "status"])
        for labels, (answered,) in self.metrics.counts.items():
            counts.add_metric(list(labels), answered)
        latency = HistogramMetricFamily("shardcast_api_request_duration_seconds",
                                        "Time from a request's arrival to its answer",
                                        labels=["endpoint", "method"])
        for labels, (total, *per_bucket) in self.metrics.latencies.items():
            cumulative = list(itertools.accumulate(per_bucket))
            bounds = [str(bound) for bound in LATENCY_BUCKETS] + ["+Inf"]
            latency.add_metric(list(labels), list(zip(bounds, cumulative)), total)
        yield from (counts, latency)


class _ClusterCollector:
    """A cluster node's view of its cluster: Redis reachable, the nodes and what they hold."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        figures = self.metrics.cluster_figures
        if not figures:
            return
        yield GaugeMetricFamily("shardcast_redis_up", "1 if this node's supervisor reached "
                                "Redis at this scrape", value=figures.get("redis_up", 1))
        if "nodes" not in figures:
            return
        nodes = figures["nodes"]
        yield GaugeMetricFamily("shardcast_cluster_nodes", "Nodes reporting to the cluster",
                                value=len(nodes))
        connections = GaugeMetricFamily("shardcast_node_connections",
                                        "Connections each node held at its last report",
                                        labels=["node"])
        seen = GaugeMetricFamily("shardcast_node_last_seen_seconds",
                                 "Unix time of each node's last report", labels=["node"])
        for node in nodes:
            connections.add_metric([node["node_id"]], node["connections"])
            seen.add_metric([node["node_id"]], node["last_seen"])
        yield from (connections, seen)
        for key, name, help_text in CLUSTER_TOTALS:
            yield GaugeMetricFamily(name, help_text, value=figures[key])


class _ShardCollector:
    """Metric families from the last scrape's shard figures and the supervisor's state."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        stats = self.metrics.stats
        up = GaugeMetricFamily("shardcast_shard_up", "1 if the shard answered this scrape",
                               labels=["shard"])
        for index, figures in enumerate(stats):
            up.add_metric([str(index)], 0 if figures is None else 1)
        yield up
        for key, (name, help_text, kind) in SHARD_FIGURES.items():
            family = (CounterMetricFamily if kind == "counter" else GaugeMetricFamily)(
                name, help_text, labels=["shard"])
            for index, figures in enumerate(stats):
                if figures is not None and key in figures:
                    family.add_metric([str(index)], figures[key])
            if family.samples:
                yield family
        yield from self._supervisor_families()

    def _supervisor_families(self) -> Iterator[Metric]:
        supervisor = self.metrics.supervisor
        restarts = CounterMetricFamily("shardcast_shard_restarts",
                                       "Times the supervisor restarted the shard",
                                       labels=["shard"])
        requests = GaugeMetricFamily("shardcast_ipc_pending_requests",
                                     "Requests to the shard awaiting its answer", labels=["shard"])
        queued = GaugeMetricFamily("shardcast_ipc_queued_bytes",
                                   "Bytes written to the shard's IPC link, not yet sent",
                                   labels=["shard"])
        for index, link in enumerate(supervisor.shards.links):
            label = [str(index)]
            restarts.add_metric(label, supervisor.restarts[index])
            if link is None:
                continue
            requests.add_metric(label, len(link.requests))
            transport = link.transport
            buffered = transport.get_write_buffer_size() if transport is not None else 0
            queued.add_metric(label, buffered + sum(len(frame) for frame in link.outgoing))
        yield from (restarts, requests, queued)


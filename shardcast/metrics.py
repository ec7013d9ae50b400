"""``/metrics`` in the Prometheus text format: per-shard figures, shard restarts, IPC queues,
and the API's request counts and latencies by endpoint.

Rendered by the supervisor: shard figures are asked of the shards at scrape time (their
``stats`` command), and the request counts of every API process (``api_counts``).
"""
from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Iterator

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, disable_created_metrics,
                               generate_latest)
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)

from . import api_counts, http_api
from .shards import ShardUnavailable
from .http_messages import Request, Response, json_response
from .schemas import Invalid

if TYPE_CHECKING:
    from .supervisor import Supervisor

SCRAPE_TIMEOUT = 2.0
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
disable_created_metrics()   # no *_created series: this process is the supervisor, ours alone


class Metrics:
    """``/metrics``, rendered by the supervisor: it asks the shards and the API processes."""

    def __init__(self, api: "http_api.HttpApi", supervisor: "Supervisor") -> None:
        self.api = api
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ShardCollector(self))
        self.registry.register(_RequestCollector(self))
        self.registry.register(_ClusterCollector(self))
        self.stats: list[dict | None] = []
        self.cluster_figures: dict = {}     # a cluster node: the last scrape's nodes, totals
        self.processes: list[dict | None] = []      # the API processes' snapshots
        self.counts: api_counts.Counts = {}
        self.latencies: api_counts.Latencies = {}

    async def render(self, request: Request) -> Response:
        """Served to the addresses that may call the API (``allow_posting_from``)."""
        if not http_api._client_allowed(request.client, self.api.allowed):
            return json_response({"request": f"IP {request.client} may not read metrics: "
                                  "add it to allow_posting_from"}, 403)
        shards = self.supervisor.shards
        self.stats, self.processes = await asyncio.gather(
            asyncio.gather(*(self._shard_stats(shard) for shard in range(shards.count))),
            self.supervisor.api.gather("counts"))
        self.counts, self.latencies = api_counts.merge([p for p in self.processes if p])
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
    """The API's request counts and latency histograms, over all API processes."""

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
            bounds = [str(bound) for bound in api_counts.LATENCY_BUCKETS] + ["+Inf"]
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
        supervisor, processes = self.metrics.supervisor, self.metrics.processes
        restarts = CounterMetricFamily("shardcast_shard_restarts",
                                       "Times the supervisor restarted the shard",
                                       labels=["shard"])
        for index, count in enumerate(supervisor.restarts):
            restarts.add_metric([str(index)], count)
        requests = GaugeMetricFamily("shardcast_ipc_pending_requests",
                                     "Requests to the shard awaiting its answer (all API "
                                     "processes)", labels=["shard"])
        queued = GaugeMetricFamily("shardcast_ipc_queued_bytes",
                                   "Bytes written to the shard's IPC links, not yet sent",
                                   labels=["shard"])
        for index in range(supervisor.shards.count):
            links = [p["links"][index] for p in processes if p and p["links"][index]]
            requests.add_metric([str(index)], sum(link[0] for link in links))
            queued.add_metric([str(index)], sum(link[1] for link in links))
        up = GaugeMetricFamily("shardcast_api_process_up", "1 if the API process answered "
                               "this scrape", labels=["process", "pid"])
        answered = CounterMetricFamily("shardcast_api_process_requests",
                                       "Requests the API process answered", labels=["process"])
        replaced = CounterMetricFamily("shardcast_api_process_restarts",
                                       "Times the supervisor restarted the API process",
                                       labels=["process"])
        for index, snapshot in enumerate(processes):
            label = [str(index)]
            up.add_metric([*label, str(supervisor.api.pids[index])], 0 if snapshot is None else 1)
            replaced.add_metric(label, supervisor.api.restarts[index])
            if snapshot is not None:
                answered.add_metric(label, snapshot["answered"])
        yield from (restarts, requests, queued, up, answered, replaced)

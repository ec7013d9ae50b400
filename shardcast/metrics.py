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
from .cluster import ShardUnavailable
from .http_server import Request, Response, json_response

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
}
Handler = Callable[[Request], "Response | Awaitable[Response]"]
disable_created_metrics()   # no *_created series: this process is the supervisor, ours alone


class Metrics:
    def __init__(self, api: "http_api.HttpApi", supervisor: "Supervisor") -> None:
        self.api = api
        self.supervisor = supervisor
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_ShardCollector(self))
        self.registry.register(_RequestCollector(self))
        self.stats: list[dict | None] = []
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
        cluster = self.supervisor.cluster
        self.stats = await asyncio.gather(*(self._shard_stats(shard)
                                            for shard in range(cluster.shards)))
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    async def _shard_stats(self, shard: int) -> dict | None:
        try:
            return await self.supervisor.cluster.call(shard, "stats", None,
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
        for index, link in enumerate(supervisor.cluster.links):
            label = [str(index)]
            restarts.add_metric(label, supervisor.restarts[index])
            if link is None:
                continue
            requests.add_metric(label, len(link.requests))
            transport = link.transport
            buffered = transport.get_write_buffer_size() if transport is not None else 0
            queued.add_metric(label, buffered + sum(len(frame) for frame in link.outgoing))
        yield from (restarts, requests, queued)


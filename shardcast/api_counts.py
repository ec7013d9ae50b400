"""The requests an API process answers, counted by endpoint, method and status, and timed.

Each API process counts its own in plain numbers (prometheus-client's metrics take a lock per
update, a measured microsecond of each request); the supervisor asks every process for a
``snapshot`` when ``/metrics`` is scraped and ``merge``s them.
"""
from __future__ import annotations

from bisect import bisect_left
from time import perf_counter
from typing import Awaitable, Callable, Iterable

from .http_messages import Request, Response
from .ipc import Link

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})
STATIC = "/static/"
Handler = Callable[[Request], "Response | Awaitable[Response]"]
Counts = dict[tuple[str, str, str], list[int]]           # (endpoint, method, status): [answers]
Latencies = dict[tuple[str, str], list[float]]           # (endpoint, method): [sum, buckets...]


class RequestCounts:
    def __init__(self, known: Callable[[str], bool]) -> None:
        self.known = known          # whether a path is an endpoint (else counted as "other")
        self.counts: Counts = {}
        self.latencies: Latencies = {}
        self.answered = 0
        self._cells: dict[tuple, tuple[list[int], list[float]]] = {}

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
        self.answered += 1
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
        return path if self.known(path) else "other"

    def snapshot(self, links: Iterable[Link | None]) -> dict:
        """What the supervisor merges: the counts, and this process's IPC queues per shard."""
        return {"counts": [[*key, value[0]] for key, value in self.counts.items()],
                "latencies": [[*key, value] for key, value in self.latencies.items()],
                "answered": self.answered,
                "links": [_queued(link) for link in links]}


def merge(snapshots: list[dict]) -> tuple[Counts, Latencies]:
    counts: Counts = {}
    latencies: Latencies = {}
    for snapshot in snapshots:
        for endpoint, method, status, answered in snapshot["counts"]:
            counts.setdefault((endpoint, method, status), [0])[0] += answered
        for endpoint, method, cells in snapshot["latencies"]:
            total = latencies.setdefault((endpoint, method), [0.0] * len(cells))
            for index, value in enumerate(cells):
                total[index] += value
    return counts, latencies


def _queued(link: Link | None) -> list[int] | None:
    """[requests awaiting the shard's answer, bytes written to it not yet sent]."""
    if link is None:
        return None
    transport = link.transport
    buffered = transport.get_write_buffer_size() if transport is not None else 0
    return [len(link.requests), buffered + sum(len(frame) for frame in link.outgoing)]

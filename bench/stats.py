"""Counting what arrives: mergeable latency histograms and per-stream sequence checks."""
from __future__ import annotations

import math

BUCKETS_PER_E = 100          # log-spaced buckets, each about 1 % wide
MAX_BUCKET = int(math.log(600e6) * BUCKETS_PER_E)   # 10 minutes, in microseconds


class Histogram:
    """Latencies in log-spaced buckets: cheap to fill, exact to merge across processes."""

    __slots__ = ("counts", "count", "total", "max")

    def __init__(self) -> None:
        self.counts = [0] * (MAX_BUCKET + 1)
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.add_many((seconds,))

    def add_many(self, values: "list[float] | tuple[float, ...]") -> None:
        counts, log, top = self.counts, math.log, MAX_BUCKET
        for seconds in values:
            micros = seconds * 1e6
            index = int(log(micros) * BUCKETS_PER_E) if micros > 1.0 else 0
            counts[index if index < top else top] += 1
        self.count += len(values)
        self.total += sum(values)
        self.max = max(self.max, *values)

    def percentile(self, fraction: float) -> float | None:
        """The latency (seconds) below which ``fraction`` of the samples fall."""
        if not self.count:
            return None
        rank = fraction * self.count
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if count and seen >= rank:
                return min(math.exp((index + 0.5) / BUCKETS_PER_E) / 1e6, self.max)
        return self.max

    def dump(self) -> dict:
        """A compact picklable form (only the filled buckets)."""
        filled = {index: count for index, count in enumerate(self.counts) if count}
        return {"buckets": filled, "count": self.count, "total": self.total, "max": self.max}

    def merge(self, dumped: dict) -> None:
        for index, count in dumped["buckets"].items():
            self.counts[int(index)] += count
        self.count += dumped["count"]
        self.total += dumped["total"]
        self.max = max(self.max, dumped["max"])

    def summary_ms(self, prefix: str) -> dict[str, float | None]:
        """``{prefix}_p50_ms``, p90, p99 and max, in milliseconds."""
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1e3, 3)

        return {f"{prefix}_p50_ms": ms(self.percentile(0.50)),
                f"{prefix}_p90_ms": ms(self.percentile(0.90)),
                f"{prefix}_p99_ms": ms(self.percentile(0.99)),
                f"{prefix}_max_ms": ms(self.max if self.count else None)}


class Sequence:
    """What one client saw of one publisher's numbered messages on one channel."""

    __slots__ = ("next", "gaps", "unique", "duplicated", "out_of_order")

    def __init__(self) -> None:
        self.next = 0
        self.gaps: set[int] = set()
        self.unique = 0
        self.duplicated = 0
        self.out_of_order = 0

    def see(self, seq: int) -> None:
        if seq == self.next:
            self.next += 1
            self.unique += 1
        elif seq > self.next:
            self.gaps.update(range(self.next, seq))
            self.next = seq + 1
            self.unique += 1
        elif seq in self.gaps:
            self.gaps.discard(seq)
            self.unique += 1
            self.out_of_order += 1
        else:
            self.duplicated += 1


def add_counts(into: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    for key, value in more.items():
        into[key] = into.get(key, 0) + value
    return into

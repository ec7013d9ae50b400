"""The PNG: one bar chart per headline figure, one bar per target."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

FIGURES = [   # (scenario, metric, title)
    ("fanout", "delivered_msgs_per_s", "fan-out: delivered msg/s ↑"),
    ("fanout", "server_cpu_us_per_msg", "fan-out: server CPU µs/msg ↓"),
    ("fanout", "server_cpu_us_per_frame", "fan-out: server CPU µs/frame ↓"),
    ("channels", "delivered_msgs_per_s", "channels: delivered msg/s ↑"),
    ("latency", "lat_p50_ms", "latency: p50 ms ↓"),
    ("latency", "lat_p99_ms", "latency: p99 ms ↓"),
    ("connect", "conn_per_s", "connect: connections/s ↑"),
    ("connect", "rss_kb_per_conn", "connect: RSS KiB per idle conn ↓"),
    ("api", "req_per_s", "api: POST /message req/s ↑"),
    ("api", "server_cpu_us_per_msg", "api: server CPU µs/msg ↓"),
    ("churn", "churn_per_s", "churn: join+leave cycles/s ↑"),
    ("overload", "sustainable_msgs_per_s", "fan-out: sustainable msg/s ↑"),
    ("overload", "delivered_msgs_per_s", "overload (2× sustainable): delivered msg/s ↑"),
]
COLUMNS = 3


def plot(results: list[dict], path: str) -> None:
    panels = [(scenario, metric, title) for scenario, metric, title in FIGURES
              if any(r["scenario"] == scenario and r.get(metric) is not None for r in results)]
    if not panels:
        panels = [("", "", "no figures")]
    rows = -(-len(panels) // COLUMNS)
    figure, axes = plt.subplots(rows, COLUMNS, figsize=(4.2 * COLUMNS, 3.2 * rows),
                                squeeze=False)
    targets = list(dict.fromkeys(result["target"] for result in results))
    colours = {target: f"C{index}" for index, target in enumerate(targets)}
    for axis, (scenario, metric, title) in zip(axes.flat, panels):
        runs = [r for r in results if r["scenario"] == scenario and r.get(metric) is not None]
        names = [run["target"] for run in runs]
        values = [run[metric] for run in runs]
        bars = axis.bar(range(len(runs)), values, color=[colours[n] for n in names])
        axis.bar_label(bars, labels=[_label(value) for value in values], fontsize=8)
        axis.set_xticks(range(len(runs)), [n.replace(" ", "\n", 1) for n in names], fontsize=8)
        axis.set_title(title, fontsize=10)
        axis.margins(y=0.15)
    for axis in list(axes.flat)[len(panels):]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _label(value: float) -> str:
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"

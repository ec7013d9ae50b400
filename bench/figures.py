"""A run's figures: what the load generators' results and the server's readings add up to.

Messages are accounted for one by one: ``expected`` counts the deliveries owed (see
``owed_deliveries``), ``delivered`` the distinct ones that arrived, ``lost`` the difference.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .resources import SATURATED_PCT
from .stats import Histogram, add_counts

if TYPE_CHECKING:
    from .scenarios import Run

SUBSCRIBERS = ("clients", "resumers")   # the roles whose results count deliveries


def expected_deliveries(published: dict, fanout: dict[str, int]) -> int:
    """Σ over accepted messages of the subscribers of their channel."""
    return sum(count * fanout.get(channel, 0) for channel, _, count in published["published"])


def owed_deliveries(published: dict, clients: list[dict]) -> tuple[int, int]:
    """The deliveries owed: every accepted message to every client of its channel that
    connected (a failed /connect expects nothing), but to a client that closed early only the
    messages up to the last it received; and the deliveries those early closes cut off."""
    joined: dict[str, int] = {}
    early: dict[str, int] = {}
    for result in clients:
        add_counts(joined, result["joined"])
        add_counts(early, result["early_joined"])
    cut_off = (expected_deliveries(published, early)
               - sum(result["early_reached"] for result in clients))
    return expected_deliveries(published, joined) - cut_off, cut_off


def closes(clients: list[dict]) -> dict:
    """Clients closed before the end: for a bad frame, as slow consumers (3008), otherwise."""
    return {key: sum(result[field] for result in clients)
            for key, field in (("protocol_errors", "protocol_errors"),
                               ("slow_consumer_closes", "slow_consumer_closes"),
                               ("dropped_connections", "dropped"))}


def flow_figures(run: Run, published: dict, results: list[dict],
                 churn_seconds: float | None = None) -> dict:
    """The figures of a message flow; ``churn_seconds`` (default: the duration) is how long
    connections churned."""
    clients = [result for result in results if result["role"] in SUBSCRIBERS]
    expected, cut_off = owed_deliveries(published, clients)
    latency = Histogram()
    for result in clients:
        latency.merge(result["latency"])
    delivered = sum(result["unique"] for result in clients)
    frames = sum(result["frames"] for result in clients)
    sent = sum(count for _, _, count in published["published"])
    first_tx = published["first_tx"] or published["last_tx"]
    last_rx = max([result["last_rx"] for result in clients] + [first_tx])
    seconds = published["seconds"]     # publishing, not the waits between soak phases
    figures = {
        "clients_open": sum(result["opened"] for result in clients),
        "clients_by_node": by_node(clients),
        "connect_errors": sum(result["error_count"] for result in clients),
        "published": sent,
        "publish_errors": published["error_count"],
        "target_msgs_per_s": run.options.rate or None,   # an open loop's schedule, and
        "offered_msgs_per_s": per(published["sent"], seconds) if run.options.rate else None,
        "published_msgs_per_s": per(sent, seconds),
        "expected": expected,
        "delivered": delivered,
        "lost": max(expected - delivered, 0),
        "duplicated": sum(result["duplicated"] for result in clients),
        "out_of_order": sum(result["out_of_order"] for result in clients),
        "cut_off": cut_off,
        **closes(clients),
        "delivered_msgs_per_s": per(delivered, last_rx - first_tx),
        "msgs_per_frame": per(sum(r["received"] for r in clients), frames),
        **latency.summary_ms("lat"),
        **server_figures(run, delivered, "msg", sent),
        "server_cpu_us_per_frame": run.cpu.per_unit_us(frames),
        **loadgen_figures(run, results),
        "errors": error_samples(results),
    }
    figures.update(resume_figures(run, results))
    churn = [result for result in results if result["role"] == "churn"]
    if churn:
        cycles = sum(result["cycles"] for result in churn)
        cycle_latency = Histogram()
        for result in churn:
            cycle_latency.merge(result["cycle_latency"])
        figures.update(churn_cycles=cycles,
                       churn_per_s=per(cycles, churn_seconds or run.options.duration),
                       churn_errors=sum(result["error_count"] for result in churn),
                       presence_events=sum(result["presence"] for result in clients),
                       **cycle_latency.summary_ms("churn_cycle"))
    return figures


def resume_figures(run: Run, results: list[dict]) -> dict:
    """How the resumers of ``churn --resume`` fared (nothing without resumers)."""
    resumers = [result for result in results if result["role"] == "resumers"]
    if not resumers:
        return {}
    latency = Histogram()
    for result in resumers:
        latency.merge(result["resume_latency"])
    resumes = sum(result["resumes"] for result in resumers)
    return {"resumers": sum(result["opened"] for result in resumers), "resumes": resumes,
            "resumes_per_s": per(resumes, run.options.duration),
            **{key: sum(result[key] for result in resumers)
               for key in ("resume_failures", "position_errors", "caught_up")},
            **latency.summary_ms("resume")}


def resume_cost(figures: dict, steady: dict) -> dict:
    """The server's CPU (and its parts') per resume: what a run with drops used beyond the
    steady run without, divided by the resumes."""
    cost = {"steady_server_cpu_s": steady.get("server_cpu_s")}
    for part in ("server", "nodes", "redis"):
        used, base = figures.get(f"{part}_cpu_s"), steady.get(f"{part}_cpu_s")
        if used is not None and base is not None and figures.get("resumes"):
            cost[f"{part}_cpu_us_per_resume"] = round((used - base) * 1e6 / figures["resumes"])
    return cost


def by_node(clients: list[dict]) -> list[int]:
    """Clients opened through each node's API (one count for a server of one node)."""
    return [sum(counts) for counts in zip(*(result["opened_by_node"] for result in clients))]


def connect_figures(run: Run, results: list[dict], rss_before: int | None,
                    rss_after: int | None) -> dict:
    opened = sum(result["opened"] for result in results)
    seconds = max(result["open_seconds"] or 0 for result in results)
    latency = Histogram()
    for result in results:
        latency.merge(result["open_latency"])
    rss = None
    if rss_before is not None and rss_after is not None and opened:
        rss = round((rss_after - rss_before) / opened / 1024, 2)
    return {"connections": opened, "clients_by_node": by_node(results),
            "connect_errors": sum(r["error_count"] for r in results),
            "conn_per_s": per(opened, seconds), **latency.summary_ms("conn"),
            "rss_kb_per_conn": rss, "server_rss_mb": mib(rss_after), **closes(results),
            **server_figures(run, opened, "conn"), **loadgen_figures(run, results),
            "errors": error_samples(results)}


def api_figures(run: Run, results: list[dict]) -> dict:
    requests = sum(result["requests"] for result in results)
    errors = sum(result["error_count"] for result in results)
    accepted = sum(count for result in results for _, _, count in result["published"])
    first = min(result["first_tx"] or result["last_tx"] for result in results)
    seconds = max(result["last_tx"] for result in results) - first
    latency = Histogram()
    for result in results:
        latency.merge(result["request_latency"])
    return {"requests": requests, "request_errors": errors, "messages": accepted,
            "req_per_s": per(requests - errors, seconds), "msgs_per_s": per(accepted, seconds),
            **latency.summary_ms("req"), **closes([]),
            **server_figures(run, accepted, "msg", accepted),
            **loadgen_figures(run, results), "errors": error_samples(results)}


def server_figures(run: Run, units: int, unit: str, publishes: int = 0) -> dict:
    """The server's CPU per ``unit``; for each of its parts (a cluster's nodes and Redis)
    the same, and per accepted publish."""
    cpu = run.cpu
    figures = {"server_cpu_s": None if cpu.cpu is None else round(cpu.cpu, 3),
               "server_cores": cpu.cores(),
               f"server_cpu_us_per_{unit}": cpu.per_unit_us(units)}
    for part, seconds in cpu.parts.items():
        figures[f"{part}_cpu_s"] = round(seconds, 3)
        figures[f"{part}_cores"] = cpu.cores(seconds)
        figures[f"{part}_cpu_us_per_{unit}"] = cpu.per_unit_us(units, seconds)
        figures[f"{part}_cpu_us_per_publish"] = cpu.per_unit_us(publishes, seconds)
    return figures


def loadgen_figures(run: Run, results: list[dict]) -> dict:
    """The generators' own CPU use, and what the rest of the machine did meanwhile."""
    processes = [{"role": result["role"], "pid": result["pid"], "cpu_pct": result["cpu_pct"]}
                 for result in results]
    busiest = max((process["cpu_pct"] for process in processes), default=0.0)
    loadgen_cpu = sum(result["cpu_s"] for result in results)
    return {"loadgen": processes, "loadgen_cpu_max_pct": busiest,
            "loadgen_cores": round(loadgen_cpu / run.cpu.wall, 2) if run.cpu.wall else None,
            "loadgen_saturated": busiest > SATURATED_PCT,
            "other_cores": run.cpu.others_cores(loadgen_cpu)}


def error_samples(results: list[dict]) -> list[str]:
    return [error for result in results for error in result.get("errors", [])][:10]


def difference(after: int | None, before: int | None) -> int | None:
    return None if after is None or before is None else after - before


def per(count: int, per: float) -> float | None:
    """count / per (a rate when ``per`` is seconds), or None when either is zero."""
    return round(count / per, 1) if per > 0 and count else None


def mib(value: int | None) -> float | None:
    """Bytes in MiB (the ``_mb`` figures), one decimal."""
    return None if value is None else round(value / 2**20, 1)

"""The targets a node and a cluster are held to, one line per target saying plainly whether it
is met: a node's against each of its runs, a cluster's against a run that measured it and one
node side by side (``python -m bench cluster --workers 2,3x1 --redis``).
"""
from __future__ import annotations

from typing import Callable

FANOUT_SHARE = 0.5        # a cluster's fan-out: at least this share of one node's
LATENCY_ADDED_MS = 2.0    # the most Redis may add to the latency p99
HISTORY_RATE = 10_000     # publishes/s with history, through one node
MUST_BE_ZERO = ("lost", "duplicated", "out_of_order", "position_errors", "resume_failures")


# One node's targets: per scenario, (figure, most it may be, what it is).
NODE_TARGETS: dict[str, list[tuple[str, float, str]]] = {
    "fanout": [("server_cpu_us_per_frame", 4.0, "µs of server CPU per websocket frame written"),
               ("server_cpu_us_per_msg", 0.5, "µs of server CPU per delivery")],
    "latency": [("lat_p99_ms", 2.0, "ms latency p99")],
    "api": [("server_cpu_us_per_msg", 20.0, "µs of server CPU per POST /message")],
    "connect": [("server_cpu_us_per_conn", 200.0,
                 "µs of server CPU per /connect with its websocket opened"),
                ("rss_kb_per_conn", 6.0, "KB of RSS per idle websocket")],
}


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def fanout_goal(cluster: dict, node: dict | None) -> str:
    rate = cluster["delivered_msgs_per_s"] or 0
    head = (f"Fan-out to {cluster['options']['clients']:,} subscribers spread over the nodes: "
            f"{rate:,.0f} delivered msg/s")
    if node is None or not node.get("delivered_msgs_per_s"):
        return f"{head}; no run of one node to compare with."
    share = rate / node["delivered_msgs_per_s"]
    return (f"{head}, {share:.2f}× one node's {node['delivered_msgs_per_s']:,.0f} "
            f"({node['target']}); target ≥ {FANOUT_SHARE:g}×: {verdict(share >= FANOUT_SHARE)}.")


def latency_goal(cluster: dict, node: dict | None) -> str:
    p99 = cluster["lat_p99_ms"]
    head = f"Latency p99 at {cluster['options']['clients']:,} clients × " \
           f"{cluster['options']['rate']:g} msg/s: {p99:.2f} ms"
    if node is None or node.get("lat_p99_ms") is None or p99 is None:
        return f"{head}; no run of one node to compare with."
    added = p99 - node["lat_p99_ms"]
    return (f"{head} against {node['lat_p99_ms']:.2f} ms on one node ({node['target']}): "
            f"Redis adds {added:+.2f} ms; target ≤ {LATENCY_ADDED_MS:g} ms: "
            f"{verdict(added <= LATENCY_ADDED_MS)}.")


def history_goal(cluster: dict, node: dict | None) -> str:
    rate = cluster["msgs_per_s"] or 0
    alone = f" (one node alone, {node['target']}: {node['msgs_per_s']:,.0f}/s)" \
        if node is not None and node.get("msgs_per_s") else ""
    return (f"Publishes with history through one node: {rate:,.0f}/s{alone}; target ≥ "
            f"{HISTORY_RATE:,}/s: {verdict(rate >= HISTORY_RATE)}.")


def resume_goal(cluster: dict, node: dict | None) -> str:
    faults = {key: cluster.get(key) or 0 for key in MUST_BE_ZERO}
    counts = ", ".join(f"{key.replace('_', ' ')} {value:,}" for key, value in faults.items())
    cost, redis = cluster.get("server_cpu_us_per_resume"), cluster.get("redis_cpu_us_per_resume")
    costs = "" if cost is None else f"; a resume cost the server {cost:,} µs of CPU"
    costs += "" if redis is None else f", {redis:,} µs of it in Redis"
    return (f"Resume: {cluster.get('resumes', 0):,} resumes, {counts} (all must be 0): "
            f"{verdict(not any(faults.values()))}{costs}.")


GOALS: dict[str, Callable[[dict, dict | None], str]] = {
    "fanout": fanout_goal, "latency": latency_goal, "api --history": history_goal,
    "churn --resume": resume_goal}
EVERY_TARGET = {"churn --resume"}   # judged on one node too, not only on a cluster
PUBLISHING = {"fanout", "latency", "api --history"}   # Redis' CPU there is for publishes


def alone(result: dict) -> bool:
    """Whether ``result`` is a finished run of one shardcast node (not a cluster, not a
    compared server)."""
    return (result.get("nodes") is None and "failed" not in result
            and result["target"].startswith("shardcast"))


def one_node(results: list[dict], scenario: str) -> dict | None:
    """shardcast's run of one node alone (the most shards, if several) of ``scenario``; a
    compared server (Channelstream, Nchan) is never the baseline."""
    runs = [r for r in results if r["scenario"] == scenario and alone(r)]
    return max(runs, key=lambda r: r.get("workers") or 0, default=None)


def goal_lines(results: list[dict]) -> list[str]:
    """One line per cluster target met or not, and Redis' CPU per publish."""
    lines = []
    for result in results:
        if "failed" in result or not (result.get("nodes")
                                      or result["scenario"] in EVERY_TARGET):
            continue
        judge = GOALS.get(result["scenario"])
        if judge is None:
            continue
        line = f"{result['target']}: {judge(result, one_node(results, result['scenario']))}"
        if result["scenario"] in PUBLISHING and result.get("redis_cpu_us_per_publish"):
            rate = result.get("published_msgs_per_s") or result.get("msgs_per_s") or 0
            line += (f" Redis: {result['redis_cpu_us_per_publish']:,.1f} µs of CPU per publish "
                     f"(at {rate:,.0f}/s), {result['redis_cores']} cores.")
        lines.append(line)
    return lines


def node_goal_lines(results: list[dict]) -> list[str]:
    """One line per target of one node met or not, for each shardcast run of one node."""
    lines = []
    for result in filter(alone, results):
        for figure, bound, what in NODE_TARGETS.get(result["scenario"], ()):
            value = result.get(figure)
            if value is not None:
                shown = float(f"{value:.3g}")     # three digits, without an exponent
                lines.append(f"{result['target']}, {result['scenario']}: {shown:,g} {what}; "
                             f"target ≤ {bound:g}: {verdict(value <= bound)}.")
    return lines

"""Results out: the side-by-side table (terminal and Markdown), the JSON file, the docs page.

``python -m bench.report RESULTS.json [--markdown FILE] [--plot FILE.png]`` renders a saved run
again without re-measuring.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .goals import goal_lines, node_goal_lines

UP, DOWN = "↑", "↓"   # higher is better, lower is better
CPU = [("server_cpu_us_per_msg", DOWN), ("server_cpu_us_per_frame", DOWN), ("server_cores", None),
       ("msgs_per_frame", None)]   # of a scenario whose subscribers receive messages
METRICS = {
    "fanout": [("target_msgs_per_s", None), ("offered_msgs_per_s", None),
               ("delivered_msgs_per_s", UP), ("published_msgs_per_s", UP), ("lat_p50_ms", DOWN),
               ("lat_p99_ms", DOWN), *CPU],
    "channels": [("delivered_msgs_per_s", UP), ("published_msgs_per_s", UP),
                 ("lat_p50_ms", DOWN), ("lat_p99_ms", DOWN), *CPU],
    "latency": [("lat_p50_ms", DOWN), ("lat_p90_ms", DOWN), ("lat_p99_ms", DOWN),
                ("lat_max_ms", DOWN), ("delivered_msgs_per_s", UP), *CPU],
    "connect": [("conn_per_s", UP), ("conn_p50_ms", DOWN), ("conn_p99_ms", DOWN),
                ("rss_kb_per_conn", DOWN), ("server_cpu_us_per_conn", DOWN)],
    "api": [("req_per_s", UP), ("msgs_per_s", UP), ("req_p50_ms", DOWN), ("req_p99_ms", DOWN),
            ("server_cpu_us_per_msg", DOWN), ("server_cores", None)],
    "churn": [("churn_per_s", UP), ("churn_cycle_p50_ms", DOWN), ("delivered_msgs_per_s", UP),
              ("lat_p50_ms", DOWN), ("lat_p99_ms", DOWN), *CPU, ("presence_events", None),
              ("churn_errors", None)],
    "churn --resume": [("resumes_per_s", UP), ("resume_p50_ms", DOWN), ("resume_p99_ms", DOWN),
                       ("server_cpu_us_per_resume", DOWN), ("nodes_cpu_us_per_resume", DOWN),
                       ("redis_cpu_us_per_resume", DOWN), ("caught_up", None),
                       ("delivered_msgs_per_s", UP), ("lat_p99_ms", DOWN),
                       ("resume_failures", None), ("position_errors", None)],
    "overload": [("sustainable_msgs_per_s", UP), ("unsustainable_msgs_per_s", None),
                 ("target_msgs_per_s", None), ("offered_msgs_per_s", None),
                 ("published_msgs_per_s", UP), ("delivered_msgs_per_s", UP),
                 ("lat_p50_ms", DOWN), ("lat_p90_ms", DOWN), ("lat_p99_ms", DOWN),
                 ("lat_max_ms", DOWN), *CPU],
    "soak": [("churn_cycles", None), ("churn_per_s", UP), ("delivered", None),
             ("lat_p99_ms", DOWN), ("rss_start_mb", None), ("rss_end_mb", None),
             ("rss_growth_mb", DOWN), ("fds_start", None), ("fds_end", None),
             ("returned_to_baseline", None), ("errors_logged", None), ("churn_errors", None)],
}
# A node's parts (bench.targets.NodeProbe) and a cluster's (bench.cluster): shown where a run
# has them.
PARTS = [("api_cpu_us_per_msg", DOWN), ("shards_cpu_us_per_msg", DOWN),
         ("api_cpu_us_per_conn", DOWN), ("shards_cpu_us_per_conn", DOWN),
         ("nodes_cores", None), ("redis_cores", None), ("redis_cpu_us_per_publish", DOWN)]
INTEGRITY = ["lost", "duplicated", "out_of_order", "protocol_errors", "slow_consumer_closes",
             "server_slow_consumer_closes", "dropped_connections", "cut_off", "connect_errors",
             "publish_errors", "request_errors", "loadgen_cores", "loadgen_cpu_max_pct",
             "loadgen_saturated", "other_cores"]   # shown without ratios
NOISY_CORES = 0.25   # other processes busier than this during a run make its figures suspect
SCHEDULE_SHARE = 0.95   # an open-loop publisher that sent less of its schedule ran late
BASELINES = {"channelstream": "cs", "nchan": "nchan"}   # other servers, short names


# ---------------------------------------------------------------------------- the rows


def scenario_rows(results: list[dict], scenario: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of one scenario's table: a column per target, then ratios: each
    shardcast run to each other server's, and the last shardcast run to the first."""
    runs = [result for result in results if result["scenario"] == scenario]
    others = [run for run in runs if _baseline(run["target"])]
    ours = [run for run in runs if not _baseline(run["target"])]
    ratios = [(run, other) for other in others for run in ours]
    if len(ours) >= 2:   # e.g. w=2 / w=1: what one more shard buys
        ratios.append((ours[-1], ours[0]))
    header = ["metric", *(run["target"] for run in runs),
              *(f"{_short(run['target'])} / {_short(base['target'])}" for run, base in ratios)]
    rows = []
    base = METRICS.get(scenario) or METRICS.get(scenario.split()[0], [])   # api --history: api
    for metric, better in base + PARTS + [(name, None) for name in INTEGRITY]:
        if all(run.get(metric) is None for run in runs):
            continue
        label = f"{metric} {better}" if better else metric
        row = [label, *(_format(run.get(metric)) for run in runs)]
        row += [_ratio(run.get(metric), base.get(metric)) if better else ""
                for run, base in ratios]
        rows.append(row)
    return header, rows


def _baseline(target: str) -> str | None:
    """The short name of another server (the one ratios divide by), None for shardcast."""
    return next((short for name, short in BASELINES.items() if target.startswith(name)), None)


def _short(target: str) -> str:
    return _baseline(target) or target.replace("shardcast ", "")


def _format(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _ratio(value: object, base: object) -> str:
    if not isinstance(value, (int, float)) or not isinstance(base, (int, float)) or not base:
        return "–"
    return f"{value / base:.3g}×"


def warnings(results: list[dict]) -> list[str]:
    found = []
    for result in results:
        where = f"{result['scenario']} @ {result['target']}"
        if (result.get("other_cores") or 0) > NOISY_CORES:
            found.append(f"{where}: other processes kept {result['other_cores']} cores busy "
                         f"during the run; its figures are noisy")
        if result.get("target_msgs_per_s") and not on_schedule(result):
            found.append(f"{where}: the publisher sent {result['offered_msgs_per_s']} of "
                         f"{result['target_msgs_per_s']:g} msg/s; it could not keep up")
        if result.get("loadgen_saturated"):
            found.append(f"{where}: a load generator used {result['loadgen_cpu_max_pct']:.0f}% "
                         f"of a core; the figures may measure it rather than the server")
        for key in ("lost", "duplicated", "out_of_order", "protocol_errors",
                    "slow_consumer_closes", "dropped_connections",
                    "publish_errors", "connect_errors", "request_errors", "churn_errors",
                    "resume_failures", "position_errors"):
            if result.get(key):
                found.append(f"{where}: {key} = {result[key]:,}")
        for error in result.get("errors", [])[:3]:
            found.append(f"{where}: {error}")
        found += [f"{where}: {note}" for note in result.get("baseline_warnings", [])]
    return found


def on_schedule(result: dict) -> bool:
    """An open-loop publisher sent (nearly) all of its schedule."""
    return (result.get("offered_msgs_per_s") or 0) >= SCHEDULE_SHARE * result["target_msgs_per_s"]


def search_lines(results: list[dict]) -> list[str]:
    """How ``overload`` found each target's sustainable rate: the rates tried, in order."""
    lines = []
    for result in results:
        if result.get("search"):
            tried = ", ".join(f"{step['rate']:,g} " + ("✓" if step["sustained"] else
                                                       f"✗ ({'; '.join(step['faults'])})")
                              for step in result["search"])
            lines.append(f"{result['target']}: {tried} ({result['search_seconds']:g} s)")
    return lines


def scenarios_of(results: list[dict]) -> list[str]:
    return list(dict.fromkeys(result["scenario"] for result in results))


# ---------------------------------------------------------------------------- outputs


def print_tables(results: list[dict], console: Console | None = None) -> None:
    console = console or Console()
    for scenario in scenarios_of(results):
        header, rows = scenario_rows(results, scenario)
        table = Table(title=scenario, title_justify="left")
        for index, name in enumerate(header):
            table.add_column(name, justify="left" if index == 0 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        for line in search_lines([r for r in results if r["scenario"] == scenario]):
            console.print(f"sustainable-rate search, {line}", highlight=False)
    for line in node_goal_lines(results) + goal_lines(results):
        console.print(f"target: {line}", highlight=False)
    for line in warnings(results):
        console.print(f"[yellow]warning:[/] {line}", highlight=False)


def markdown_tables(results: list[dict], heading: str = "###") -> str:
    parts = []
    for scenario in scenarios_of(results):
        header, rows = scenario_rows(results, scenario)
        lines = [f"{heading} {scenario}", "", "| " + " | ".join(header) + " |",
                 "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        searches = search_lines([r for r in results if r["scenario"] == scenario])
        if searches:
            lines += ["", "Rates tried by the sustainable-rate search (msg/s; ✓ sustained):", ""]
            lines += [f"* {line}" for line in searches]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def metadata(argv: list[str]) -> dict:
    from shardcast import __version__

    return {"command": "python -m bench " + " ".join(argv),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(),
                        "memory_gb": _memory_gb(), "system": platform.platform()},
            "python": platform.python_version(), "shardcast": __version__,
            "source": _git_state()}


def _git_state() -> str | None:
    """The commit measured, marked dirty when the work tree has changes."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                              text=True, timeout=10, cwd=Path(__file__).resolve().parent)
    except OSError:
        return None
    return done.stdout.strip() or None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def write_json(path: str, meta: dict, results: list[dict]) -> None:
    Path(path).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")


def read_json(path: str) -> tuple[dict, list[dict]]:
    data = json.loads(Path(path).read_text())
    return data["meta"], data["results"]


def write_markdown(path: str, meta: dict, results: list[dict], plot: str | None,
                   cluster: str | None = None) -> None:
    """The page; ``cluster``: the JSON file of a cluster run, for its section."""
    from .docs import render_cluster, render_page

    section = ""
    if cluster:
        cluster_meta, cluster_results = read_json(cluster)
        section = render_cluster(cluster_meta, cluster_results,
                                 markdown_tables(cluster_results, "####"),
                                 warnings(cluster_results))
    text = render_page(meta, results, markdown_tables(results), warnings(results),
                       os.path.relpath(plot, Path(path).parent) if plot else None, section)
    Path(path).write_text(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("json_file")
    parser.add_argument("--markdown", metavar="FILE")
    parser.add_argument("--plot", metavar="FILE.png")
    parser.add_argument("--cluster", metavar="FILE.json",
                        help="a saved cluster run, for the page's cluster section")
    args = parser.parse_args(argv)
    meta, results = read_json(args.json_file)
    print_tables(results)
    if args.plot:
        from .plot import plot

        plot(results, args.plot)
    if args.markdown:
        write_markdown(args.markdown, meta, results, args.plot, args.cluster)


if __name__ == "__main__":
    main(sys.argv[1:])

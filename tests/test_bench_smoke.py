"""The load-test suite (bench/) runs end to end on a tiny load and accounts for every message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

for _module in ("psutil", "rich", "matplotlib"):
    pytest.importorskip(_module, reason="the bench extra is not installed (pip install '.[bench]')")

import psutil  # noqa: E402

from bench.cluster import REDIS_DIR_PREFIX  # noqa: E402
from bench.nchan import LOADGEN_PROCS as NCHAN_LOADGEN_PROCS  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_TIMEOUT = 180
FLOW_FIELDS = ("delivered_msgs_per_s", "published_msgs_per_s", "lat_p50_ms", "lat_p99_ms",
               "server_cpu_us_per_msg", "server_cpu_us_per_frame", "delivered", "expected",
               "lost", "duplicated", "out_of_order", "protocol_errors", "slow_consumer_closes",
               "server_slow_consumer_closes", "cut_off", "loadgen_cpu_max_pct",
               "loadgen_saturated")
OVERLOAD_FIELDS = ("target_msgs_per_s", "offered_msgs_per_s", "lat_p90_ms", "lat_max_ms")
CLOSES = ("protocol_errors", "slow_consumer_closes", "server_slow_consumer_closes",
          "dropped_connections", "cut_off")
API_FIELDS = ("req_per_s", "msgs_per_s", "req_p50_ms", "req_p99_ms", "server_cpu_us_per_msg",
              "request_errors")
RESUME_FAULTS = ("lost", "duplicated", "out_of_order", "position_errors", "resume_failures",
                 "connect_errors", "publish_errors")
SOAK_FIELDS = ("rss_start_mb", "rss_end_mb", "rss_growth_mb", "fds_start", "fds_end",
               "errors_logged", "churn_cycles", "delivered", "lost", "duplicated",
               "out_of_order", "returned_to_baseline", "baseline_warnings")


def run_bench(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> list[dict]:
    """The results of a bench run; ``env`` adds to the environment of the bench and its
    server (``SHARDCAST_<KEY>`` sets a setting)."""
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--json", str(output), "--no-progress"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=BENCH_TIMEOUT,
        env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(output.read_text())["results"]


def test_fanout_delivers_every_message_once_and_in_order(tmp_path: Path) -> None:
    (result,) = run_bench(tmp_path, "fanout", "--workers", "2", "--clients", "20",
                          "--duration", "2")
    assert result["scenario"] == "fanout" and result["workers"] == 2
    for field in FLOW_FIELDS:
        assert field in result, field
    assert result["published"] > 0
    assert result["delivered"] == result["expected"] == result["published"] * 20
    assert result["lost"] == result["duplicated"] == result["out_of_order"] == 0
    assert result["publish_errors"] == 0
    assert [result[field] for field in CLOSES] == [0] * len(CLOSES)


def test_fanout_against_nchan_checks_each_frame_is_the_body_published(tmp_path: Path) -> None:
    shardcast, nchan = run_bench(tmp_path, "fanout", "--workers", "1", "--compare", "nchan",
                                 "--clients", "20", "--duration", "1")
    assert nchan["target"].startswith("nchan")
    assert nchan["options"]["loadgen_procs"] == NCHAN_LOADGEN_PROCS["fanout"]
    for field in FLOW_FIELDS:
        assert field in nchan, field
    assert nchan["delivered"] == nchan["expected"] == nchan["published"] * 20 > 0
    assert nchan["msgs_per_frame"] == 1   # a frame per message, each checked byte for byte
    assert nchan["lost"] == nchan["duplicated"] == nchan["out_of_order"] == 0
    assert nchan["publish_errors"] == 0 and nchan["server_slow_consumer_closes"] is None
    assert [nchan[field] for field in CLOSES if field != "server_slow_consumer_closes"] == [0] * 4
    assert nchan["server_cpu_us_per_frame"] == nchan["server_cpu_us_per_msg"] > 0
    assert shardcast["server_cpu_us_per_frame"] >= shardcast["server_cpu_us_per_msg"] > 0


def test_overload_at_a_given_rate_publishes_on_schedule_and_checks_every_frame(
        tmp_path: Path) -> None:
    (result,) = run_bench(tmp_path, "overload", "--workers", "2", "--clients", "20",
                          "--duration", "2", "--rate", "300")
    for field in FLOW_FIELDS + OVERLOAD_FIELDS:
        assert field in result, field
    assert "search" not in result   # --rate: no search for the sustainable rate
    assert result["target_msgs_per_s"] == 300
    assert result["offered_msgs_per_s"] >= 0.95 * 300
    assert result["delivered"] == result["expected"] == result["published"] * 20 > 0
    assert result["lost"] == result["duplicated"] == result["out_of_order"] == 0
    assert [result[field] for field in CLOSES] == [0] * len(CLOSES)


def test_api_reports_post_message_throughput(tmp_path: Path) -> None:
    (result,) = run_bench(tmp_path, "api", "--workers", "2", "--publishers", "2",
                          "--duration", "1")
    for field in API_FIELDS:
        assert field in result, field
    assert result["req_per_s"] > 0 and result["request_errors"] == 0
    assert result["protocol_errors"] == result["slow_consumer_closes"] == 0
    assert result["server_cpu_us_per_msg"] > 0
    # where the CPU went: the API processes parse and answer, the shards take each message
    assert result["api_cpu_us_per_msg"] > 0 and result["shards_cpu_us_per_msg"] > 0
    # each figure is rounded to the millisecond
    parts = result["api_cpu_s"] + result["shards_cpu_s"] + result["supervisor_cpu_s"]
    assert abs(result["server_cpu_s"] - parts) <= 0.003


def redis_servers() -> set[int]:
    """The bench's own (another suite on the machine may run redis-servers of its own)."""
    return {process.pid for process in psutil.process_iter(["name", "cwd"])
            if process.info["name"] == "redis-server"
            and REDIS_DIR_PREFIX in (process.info["cwd"] or "")}


def test_nodes_over_redis_share_the_subscribers_and_stop_with_the_run(tmp_path: Path) -> None:
    before = redis_servers()
    (result,) = run_bench(tmp_path, "fanout", "--nodes", "2", "--redis", "--workers", "1",
                          "--clients", "20", "--duration", "2")
    assert (result["nodes"], result["workers"]) == (2, 1)
    assert result["clients_by_node"] == [10, 10]
    assert result["delivered"] == result["expected"] == result["published"] * 20 > 0
    assert result["lost"] == result["duplicated"] == result["out_of_order"] == 0
    assert [result[field] for field in CLOSES] == [0] * len(CLOSES)
    assert result["redis_cpu_us_per_publish"] > 0 and result["nodes_cores"] > 0
    # each figure is rounded to the millisecond
    assert abs(result["server_cpu_s"] - result["nodes_cpu_s"] - result["redis_cpu_s"]) <= 0.002
    assert redis_servers() <= before, "the bench left its redis-server running"


@pytest.mark.parametrize("where", [["--workers", "2"],
                                   ["--workers", "1", "--nodes", "2", "--redis"]],
                         ids=["one node", "two nodes"])
def test_churn_resume_recovers_every_message_once_and_in_place(tmp_path: Path,
                                                                where: list[str]) -> None:
    (result,) = run_bench(tmp_path, "churn", "--resume", *where, "--clients", "10",
                          "--duration", "1.5")
    assert result["scenario"] == "churn --resume"
    assert result["resumes"] > 0 and result["caught_up"] > 0
    assert result["delivered"] == result["expected"] > 0
    for field in RESUME_FAULTS + CLOSES:
        assert result[field] == 0, field
    assert result["server_cpu_us_per_resume"] is not None
    assert result["resume_p50_ms"] > 0


def test_soak_returns_fds_to_baseline_and_loses_nothing(tmp_path: Path) -> None:
    # The server closes connections idle for 5 s (60 s by default), here between the two
    # readings: the subscribers' idle /connect connections once went then, read as files going.
    (result,) = run_bench(tmp_path, "soak", "--workers", "2", "--clients", "20",
                          "--duration", "4", env={"SHARDCAST_HTTP_KEEP_ALIVE_TIMEOUT": "5"})
    for field in SOAK_FIELDS:
        assert field in result, field
    assert result["churn_cycles"] > 0
    assert result["fds_end"] == result["fds_start"] > 0
    assert result["rss_start_mb"] > 0 and result["rss_end_mb"] > 0
    assert result["delivered"] == result["expected"] > 0
    assert result["lost"] == result["duplicated"] == result["out_of_order"] == 0
    assert result["dropped_connections"] == result["churn_errors"] == 0
    # The rate counts the phases' publishing, not the waits for the server to settle between
    # them (which once read as a publisher 20-50 % behind its schedule).
    assert result["offered_msgs_per_s"] >= 0.95 * result["target_msgs_per_s"]

"""File descriptors: the soft RLIMIT_NOFILE is raised to the hard limit at start, a limit too low
for the configured connections is reported, and running out is logged and recovered from."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from contract import wait_until
from harness import Server
from processes import descendant_pids
from rawhttp import open_socket

SOFT, HARD = 100, 160
FLOOD = 250         # connections: more than the supervisor's HARD descriptors


def low_limits() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (SOFT, HARD))


@pytest.fixture(scope="module")
def cramped():
    server = Server(1, env={"SHARDCAST_HTTP_HEADER_TIMEOUT": "60"})
    server.start(preexec_fn=low_limits)
    yield server
    server.stop()


def open_files_limits(pid: int) -> tuple[int, int]:
    line = next(line for line in Path(f"/proc/{pid}/limits").read_text().splitlines()
                if line.startswith("Max open files"))
    soft, hard = line.split()[3:5]
    return int(soft), int(hard)


def test_soft_limit_is_raised_to_the_hard_limit(cramped):
    for pid in [cramped.process.pid, *descendant_pids(cramped.process.pid)]:
        assert open_files_limits(pid) == (HARD, HARD)


def test_a_limit_below_the_configured_connections_is_reported(cramped):
    log = cramped.output()
    assert f"RLIMIT_NOFILE is {HARD}" in log and "max_connections_per_shard" in log


def test_running_out_of_descriptors_is_logged_and_recovered_from(cramped):
    held = []
    try:
        for _ in range(FLOOD):
            held.append(open_socket(cramped.api_port))
        wait_until(lambda: "out of file descriptors" in cramped.output(), timeout=5)
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: "file descriptors available again" in cramped.output(), timeout=5)
    assert cramped.get("/info").status_code == 200

"""``shardcast dev-cluster``: a local Redis and nodes that are one broker, stopped by Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from contract import delivered, unique, wait_until
from harness import REPO_ROOT, SECRET, Server
from processes import descendant_pids, free_port, free_port_range
from wsclient import open_websocket

START_TIMEOUT = 30.0


def test_dev_cluster_nodes_are_one_broker_and_stop_together():
    api = free_port_range(2)
    ws = free_port_range(200)
    command = [sys.executable, "-m", "shardcast", "dev-cluster", "--nodes", "2",
               "--workers", "1", "--port", str(api), "--ws-port-base", str(ws),
               "--redis-port", str(free_port()), "--secret", SECRET]
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "SHARDCAST_LOG_LEVEL": "warning"})
    try:
        lines = []
        deadline = time.monotonic() + START_TIMEOUT
        while not any("Ctrl-C" in line for line in lines) and time.monotonic() < deadline:
            lines.append(process.stdout.readline())
        assert any(f"node1: http://127.0.0.1:{api + 1}" in line for line in lines), lines
        nodes = [Server(1) for _ in range(2)]
        for index, node in enumerate(nodes):      # clients of the dev cluster's nodes
            node.api = f"http://127.0.0.1:{api + index}"
        channel = unique("ch")
        with open_websocket(nodes[0].connect(unique("u"), [channel])["ws_url"]) as client:
            item = nodes[1].say(channel, "across nodes")
            assert client.next() == delivered(item)
        children = descendant_pids(process.pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0
        wait_until(lambda: not [pid for pid in children if os.path.exists(f"/proc/{pid}")],
                   timeout=5)
    finally:
        if process.poll() is None:
            process.kill()

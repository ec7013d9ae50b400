"""``shardcast dev-cluster``: a local redis-server and several nodes using it, to try a cluster.

Redis runs in a temporary directory on its own port (never a system service), and node i
serves its API on ``port + i`` and its shards' websockets from ``ws_port_base + 100 * i``.
Ctrl-C stops everything.
"""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import click

START_TIMEOUT = 30.0
WS_PORTS_PER_NODE = 100


def run(nodes: int, workers: int, host: str, port: int, ws_port_base: int, redis_port: int,
        secret: str) -> None:
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise click.ClickException("redis-server is not installed: "
                                   "sudo apt-get install redis-server")
    workdir = tempfile.mkdtemp(prefix="shardcast-dev-cluster-")
    children: list[subprocess.Popen] = []
    try:
        children.append(subprocess.Popen(
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--dir", workdir,
             "--save", "", "--appendonly", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, start_new_session=True))   # Ctrl-C: stopped last
        _wait_for_port("127.0.0.1", redis_port, children[0])
        url = f"redis://127.0.0.1:{redis_port}/0"
        for index in range(nodes):
            children.append(subprocess.Popen(
                [sys.executable, "-m", "shardcast", "serve", "--host", host,
                 "--port", str(port + index),
                 "--ws-port-base", str(ws_port_base + WS_PORTS_PER_NODE * index),
                 "--workers", str(workers), "--secret", secret, "--log-level", "warning",
                 "--redis-url", url, "--node-id", f"node{index}"]))
        for index in range(nodes):
            _wait_for_port(host, port + index, children[1 + index])
        _announce(nodes, host, port, url, secret)
        stops = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stops)     # after the children started
        signal.sigwait(stops)
    finally:
        for group in (children[1:], children[:1]):      # the nodes, then their Redis
            for child in group:
                if child.poll() is None:
                    child.terminate()
            for child in group:
                try:
                    child.wait(10)
                except subprocess.TimeoutExpired:
                    child.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_port(host: str, port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    address = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise click.ClickException(f"{process.args[0]} exited (code {process.returncode});"
                                       f" is port {port} free?")
        try:
            socket.create_connection((address, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise click.ClickException(f"nothing listens on {address}:{port} after {START_TIMEOUT:.0f} s")


def _announce(nodes: int, host: str, port: int, url: str, secret: str) -> None:
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    lines = [f"Redis on {url}; {nodes} nodes, secret {secret}:"]
    lines += [f"  node{index}: http://{shown}:{port + index}" for index in range(nodes)]
    lines += ["Connect on one node and post on another: they are one broker. Ctrl-C stops all."]
    click.echo("\n".join(lines))

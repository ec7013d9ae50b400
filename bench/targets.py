"""The servers under test: shardcast started here or already running, and Channelstream 0.7.1
(Nchan is in ``bench.nchan``).

A target knows its API URL, secret, how its clients talk to it (``bench.codec``), how to reach a
connection's websocket, which scenarios apply to it, and which processes are the server (for
CPU and memory figures). ``start``/``stop`` bracket every scenario, so each one begins on a
fresh server where the bench owns the process.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

from shardcast.config import env_var
from shardcast.signing import sign_compat

from .resources import Processes, ServerProbe, raise_open_file_limit

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
CHANNELSTREAM_VERSION = "0.7.1"
CHANNELSTREAM_APP = Path(__file__).with_name("channelstream_app.py")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shardcast-bench"
COMPARISONS = ("channelstream", "nchan")   # other servers --compare runs the scenarios on
ERROR_MARKS = ("ERROR", "Traceback")   # a server log line with one of these reports an error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(200):
        base = free_port()
        if base + count < 65536 and all(_port_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no {count} consecutive free ports on {HOST}")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _accepts(port: int) -> bool:
    try:
        socket.create_connection((HOST, port), timeout=1).close()
    except OSError:
        return False
    return True


def signed_get(url: str, secret: str, timeout: float = 5.0) -> dict:
    """A signed GET on the loopback server, proxies ignored; the decoded JSON answer."""
    request = urllib.request.Request(url, headers={"x-channelstream-secret": sign_compat(secret)})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=timeout) as response:
        return json.loads(response.read())


class Target:
    """A server under test."""

    name = "server"
    api = ""
    secret = ""
    ws_template: str | None = None   # None: /connect returns ws_url
    workers: int | None = None       # shards (of each node)
    nodes: int | None = None         # nodes of a cluster over Redis (bench.cluster); None: alone
    counts_slow_consumers = False    # /admin/admin.json counts each shard's slow consumers
    codec = "channelstream"          # bench.codec.CODECS: how its clients publish and listen
    scenarios: frozenset[str] | None = None   # the scenarios that apply to it (None: all)
    loadgen_procs: dict[str, int] = {}   # scenario -> generator processes it needs by default

    def start(self, settings: dict[str, object] | None = None) -> None:
        """Start (or reach) the server; ``settings`` are shardcast config keys for a server
        the bench starts itself, ignored where it cannot set them."""

    def stop(self) -> None: ...

    @property
    def apis(self) -> list[str]:
        """The API URLs clients connect through, in turn (several for a cluster)."""
        return [self.api]

    def root_pid(self) -> int | None:
        return None

    def output(self) -> str:
        """The tail of the server's log, where the bench has it."""
        return ""

    def logged_errors(self) -> list[str] | None:
        """Every line of the server's log that reports an error (None: no log here)."""
        return None

    def probe(self) -> ServerProbe:
        return ServerProbe(self.root_pid())

    def slow_consumer_closes(self) -> int | None:
        """Websockets the server says it closed as slow consumers so far (None: not known)."""
        if not self.counts_slow_consumers:
            return None
        try:
            admin = signed_get(f"{self.api}/admin/admin.json", self.secret)
        except (OSError, ValueError):
            return None
        return sum(shard.get("slow_consumer_disconnects", 0) for shard in admin.get("shards", []))


class LocalServer(Target):
    """A server process started (and stopped) by the bench, with its log in a temp file."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()
        self.secret = secrets.token_urlsafe(16)

    def command(self) -> list[str]:
        raise NotImplementedError

    def ports(self) -> list[int]:
        raise NotImplementedError

    def start(self, settings: dict[str, object] | None = None) -> None:
        self.launch(settings)
        self.wait_ready()

    def launch(self, settings: dict[str, object] | None = None) -> None:
        """Start the process on fresh ports, without waiting for it to serve."""
        self.allocate_ports()
        self.log.seek(0)
        self.log.truncate()
        self.process = subprocess.Popen(
            self.command(), stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=raise_open_file_limit,
            env={**os.environ, **self.environment(settings or {})})

    def allocate_ports(self) -> None:
        raise NotImplementedError

    def environment(self, settings: dict[str, object]) -> dict[str, str]:
        return {}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n"
                                   f"{self.output()}")
            if all(_accepts(port) for port in self.ports()) and self.answers():
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {READY_TIMEOUT:.0f} s:\n{self.output()}")

    def answers(self) -> bool:
        """The API answers (the ports accept connections already)."""
        try:
            signed_get(f"{self.api}/info", self.secret)
        except OSError:
            return False
        return True

    def output(self) -> str:
        return self.log_text()[-5000:]

    def log_text(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def logged_errors(self) -> list[str]:
        return [line for line in self.log_text().splitlines()
                if any(mark in line for mark in ERROR_MARKS)]

    def root_pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def stop(self) -> None:
        if self.process is None:
            return
        family = self.probe().processes()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        for process in family[1:]:   # children left behind by a parent that did not stop them
            with contextlib.suppress(psutil.Error):
                process.kill()
        self.process = None


class ShardcastServer(LocalServer):
    """``python -m shardcast serve --workers N`` on free loopback ports."""

    counts_slow_consumers = True

    def __init__(self, workers: int) -> None:
        super().__init__()
        self.workers = workers
        self.name = f"shardcast w={workers}"
        self.api_port = self.ws_base = 0

    def allocate_ports(self) -> None:
        self.api_port = free_port()
        self.ws_base = free_port_range(self.workers)
        self.api = f"http://{HOST}:{self.api_port}"

    def ports(self) -> list[int]:
        return [self.api_port, *range(self.ws_base, self.ws_base + self.workers)]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "shardcast", "serve", "--host", HOST,
                "--port", str(self.api_port), "--ws-port-base", str(self.ws_base),
                "--workers", str(self.workers), "--secret", self.secret,
                "--log-level", "warning"]

    def environment(self, settings: dict[str, object]) -> dict[str, str]:
        return {env_var(key): str(value) for key, value in settings.items()}

    def probe(self) -> ServerProbe:
        return NodeProbe(self.root_pid(), self.api_port)


class NodeProbe(ServerProbe):
    """A shardcast node's processes, parted by role: the API processes (listening on the API
    port), the shards (listening on their websocket ports), and the rest (the supervisor and its
    helpers, listening on none), so that a scenario shows where the CPU goes."""

    def __init__(self, root_pid: int | None, api_port: int) -> None:
        super().__init__(root_pid)
        self.api_port = api_port

    def parts(self) -> dict[str, ServerProbe]:
        roles: dict[str, list[psutil.Process]] = {"api": [], "shards": [], "supervisor": []}
        for process in self.processes():
            try:
                ports = {connection.laddr.port for connection in process.net_connections("tcp")
                         if connection.status == psutil.CONN_LISTEN}
            except psutil.Error:
                continue
            role = "api" if self.api_port in ports else "shards" if ports else "supervisor"
            roles[role].append(process)
        return {role: Processes(found) for role, found in roles.items()}


class ChannelstreamServer(LocalServer):
    """Channelstream 0.7.1 from PyPI, in a cached virtual environment of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.name = f"channelstream {CHANNELSTREAM_VERSION}"
        self.venv = CACHE / f"channelstream-{CHANNELSTREAM_VERSION}"
        self.port = 0

    def allocate_ports(self) -> None:
        self.port = free_port()
        self.api = f"http://{HOST}:{self.port}"
        self.ws_template = f"ws://{HOST}:{self.port}/ws?conn_id={{conn_id}}"

    def ports(self) -> list[int]:
        return [self.port]

    def start(self, settings: dict[str, object] | None = None) -> None:
        ensure_channelstream(self.venv)
        super().start(settings)

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "python"), str(CHANNELSTREAM_APP), "--host", HOST,
                "--port", str(self.port), "--secret", self.secret]


def ensure_channelstream(venv: Path) -> None:
    """Create the cached venv and install Channelstream into it, once."""
    marker = venv / ".installed"
    if marker.exists():
        return
    print(f"installing channelstream=={CHANNELSTREAM_VERSION} into {venv} (once)",
          file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    f"channelstream=={CHANNELSTREAM_VERSION}"], check=True)
    marker.write_text(CHANNELSTREAM_VERSION)


class ExternalServer(Target):
    """A shardcast server that is already running (``--api URL --secret S``)."""

    counts_slow_consumers = True

    def __init__(self, api: str, secret: str) -> None:
        self.api = api.rstrip("/")
        self.secret = secret
        self.name = "shardcast (external)"

    def start(self, settings: dict[str, object] | None = None) -> None:
        admin = signed_get(f"{self.api}/admin/admin.json", self.secret)
        self.workers = len(admin.get("shards", []))
        self.name = f"shardcast w={self.workers} (external)"

    def root_pid(self) -> int | None:
        """The supervisor: the parent of the shards, when it runs on this machine."""
        try:
            admin = signed_get(f"{self.api}/admin/admin.json", self.secret)
            shard_pid = admin["shards"][0]["pid"]
            return psutil.Process(shard_pid).ppid()
        except (OSError, KeyError, IndexError, psutil.Error):
            return None


def build_targets(shapes: list, api: str | None, secret: str | None,
                  compare: list[str]) -> list[Target]:
    """``shapes``: ``bench.cluster.Shape`` of each shardcast target started here; ``compare``:
    the other servers to run too."""
    from .cluster import cluster_target   # it builds on ShardcastServer
    from .nchan import NchanServer        # it builds on LocalServer

    targets: list[Target] = ([ExternalServer(api, secret or "")] if api
                             else [cluster_target(shape) for shape in shapes])
    made = {"channelstream": ChannelstreamServer, "nchan": NchanServer}
    targets += [made[name]() for name in dict.fromkeys(compare)]
    return targets

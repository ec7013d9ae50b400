"""A real ``python -m shardcast serve`` process on free loopback ports, and its HTTP API."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from json import dumps as json_dumps
from pathlib import Path
from typing import Any

import requests
from itsdangerous import TimestampSigner

from contract import SIGNATURE_HEADER, unique
from shardcast.routing import owner
from processes import cmdline, descendant_pids, free_port, free_port_range
from wsclient import WsClient, open_websocket

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789"
STARTUP_TIMEOUT = 30.0
ANNOUNCED = "shardcast API on"   # printed once every shard and API process runs
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 15.0
WAKE_CONNECTIONS_AFTER = 1
CONTRACT_GC_CONNS_AFTER = 30
GC_CONNS_AFTER = 2
GC_HEARTBEAT_INTERVAL = 1
SILENT_HEARTBEAT_INTERVAL = 600
ADMIN_PASSWORD = "correct horse battery staple"
STARTED: list["Server"] = []     # by the running test (conftest shows their logs on failure)
# Timing knobs of the contract servers: fast long polls, no collection during a test.
CONTRACT_ENV = {
    "SHARDCAST_GC_CONNS_AFTER": str(CONTRACT_GC_CONNS_AFTER),
    "SHARDCAST_WAKE_CONNECTIONS_AFTER": str(WAKE_CONNECTIONS_AFTER),
}


class Server:
    """One ``shardcast serve`` process with its shards, on free loopback ports."""

    def __init__(self, workers: int, env: dict[str, str] | None = None, secret: str = SECRET):
        self.workers = workers
        self.secret = secret
        self.env = CONTRACT_ENV if env is None else env
        self.api_port = free_port()
        self.ws_base = free_port_range(workers)
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.ws_ports = list(range(self.ws_base, self.ws_base + workers))
        self.process: subprocess.Popen | None = None
        self.http_timeout = HTTP_TIMEOUT
        self.session = requests.Session()
        self.session.trust_env = False
        self._log = tempfile.TemporaryFile()

    # lifecycle -------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "shardcast", "serve",
            "--host", "127.0.0.1",
            "--port", str(self.api_port),
            "--ws-port-base", str(self.ws_base),
            "--workers", str(self.workers),
            "--secret", self.secret,
            "--log-level", "warning",
        ]  # fmt: skip

    def start(self, **popen: Any) -> "Server":
        """Start it; ``popen`` goes to subprocess.Popen (e.g. a ``preexec_fn``)."""
        self.launch(**popen)
        self._wait_ready()
        return self

    def launch(self, **popen: Any) -> None:
        """Start it without waiting for it to be ready (its log says how it goes)."""
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            self.command(), cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            **popen
        )
        STARTED.append(self)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            # The server says so once every shard and API process runs (the API port answers
            # as soon as one API process does); then any answer means ready (a server that
            # accepts only x-shardcast-signature answers this compat-signed call 401).
            try:
                ready = ANNOUNCED in self.log_text() and self.get("/info", timeout=2).status_code < 500
            except requests.RequestException:
                ready = False
            if ready and all(self._accepts_tcp(port) for port in self.ws_ports):
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready within {STARTUP_TIMEOUT} s:\n{self.output()}")

    @staticmethod
    def _accepts_tcp(port: int) -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            return False
        return True

    def output(self) -> str:
        """The tail of the log (for failure messages)."""
        return self.log_text()[-20000:]

    def log_text(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def kill(self) -> None:
        """kill -9 of the supervisor and every shard: nothing gets to clean up."""
        pids = [self.process.pid, *descendant_pids(self.process.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait()
        self.process = None
        self.session.close()

    def stop(self) -> None:
        if self.process is None:
            return
        descendants = {pid: cmdline(pid) for pid in descendant_pids(self.process.pid)}
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid, command in descendants.items():  # shards a supervisor left behind
            if command and cmdline(pid) == command:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        self.process = None
        self.session.close()

    # HTTP ------------------------------------------------------------------

    def sign(self) -> dict[str, str]:
        """The signature header, made with itsdangerous (proves wire compatibility)."""
        return {SIGNATURE_HEADER: TimestampSigner(self.secret).sign("channelstream").decode()}

    def request(
        self,
        method: str,
        path: str,
        json: Any = None,
        data: Any = None,
        headers: dict | None = None,
        sign: bool = True,
        params: dict | None = None,
        timeout: float | None = None,
    ) -> requests.Response:
        all_headers = {**(self.sign() if sign else {}), **(headers or {})}
        if json is not None:
            data = json_dumps(json)
            all_headers.setdefault("Content-Type", "application/json")
        url = self.api + path
        timeout = timeout or self.http_timeout
        return self.session.request(method, url, data=data, headers=all_headers, params=params, timeout=timeout)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, json=json, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def patch(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, json=json, **kwargs)

    def delete(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, json=json, **kwargs)

    def ok(self, method: str, path: str, json: Any = None, **kwargs: Any) -> Any:
        """Send a request that must succeed; return its decoded JSON body."""
        response = self.request(method, path, json=json, **kwargs)
        assert response.status_code == 200, f"{method} {path} -> {response.status_code}: {response.text}"
        return response.json()

    # API shortcuts ---------------------------------------------------------

    def connect(self, username: str, channels: list[str] = (), **body: Any) -> dict:
        return self.ok("POST", "/connect", {"username": username, "channels": list(channels), **body})

    def subscribe(self, conn_id: str, channels: list[str], **body: Any) -> dict:
        return self.ok("POST", "/subscribe", {"conn_id": conn_id, "channels": channels, **body})

    def unsubscribe(self, conn_id: str, channels: list[str], **body: Any) -> dict:
        return self.ok("POST", "/unsubscribe", {"conn_id": conn_id, "channels": channels, **body})

    def message(self, *items: dict) -> list[dict]:
        return self.ok("POST", "/message", list(items))

    def say(self, channel: str, text: str = "hello", user: str = "backend", **item: Any) -> dict:
        """Post one channel message; return its normalised item."""
        (posted,) = self.message({"user": user, "channel": channel, "message": {"text": text}, **item})
        return posted

    def sentinel(self, channel: str | None = None, pm_users: list[str] | None = None) -> str:
        """Post a marker message; its uuid tells a reader that all before it has arrived."""
        item = {"user": "sentinel", "message": {"sentinel": True}}
        if channel is not None:
            item["channel"] = channel
        if pm_users:
            item["pm_users"] = pm_users
        (posted,) = self.message(item)
        return posted["uuid"]

    def channel_config(self, configs: dict) -> dict:
        return self.ok("POST", "/channel_config", configs)

    def info(self, **flags: Any) -> dict:
        return self.ok("POST", "/info", {"info": flags})

    def channel_info(self, name: str, **flags: Any) -> dict | None:
        return self.info(channels=[name], **flags)["channels"].get(name)

    def history(self, channel: str) -> list[dict]:
        return self.channel_info(channel)["history"]

    def is_connected(self, conn_id: str) -> bool:
        """Probe a connection without touching it: unsubscribing from nothing it is in."""
        response = self.post("/unsubscribe", {"conn_id": conn_id, "channels": [unique("probe")]})
        assert response.status_code in (200, 422), response.text
        return response.status_code == 200

    def listen(self, conn_id: str, **params: Any) -> requests.Response:
        return self.get("/listen", params={"conn_id": conn_id, **params}, sign=False)

    def ws(self, url: str) -> WsClient:
        return open_websocket(url)


def race(twins: list[Server]) -> tuple[Server, Server]:
    """Launch two servers at once and wait until one exits: (the one gone, the one running)."""
    for twin in twins:
        twin.launch()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while all(twin.process.poll() is None for twin in twins) and time.monotonic() < deadline:
        time.sleep(0.05)
    [gone] = [twin for twin in twins if twin.process.poll() is not None]
    [running] = [twin for twin in twins if twin is not gone]
    return gone, running


def received_before_sentinel(server: Server, channel: str, members: list[tuple[str, WsClient]]) -> dict:
    """Post a sentinel to ``channel``; what each member got before it, by username."""
    marker = server.sentinel(channel)
    return {username: client.until_uuid(marker) for username, client in members}


class ServerPool:
    """Servers shared by the session, started on first use, keyed by their settings."""

    def __init__(self) -> None:
        self.servers: dict[tuple, Server] = {}

    def get(self, workers: int, **env: Any) -> Server:
        full_env = {**CONTRACT_ENV, **{key: str(value) for key, value in env.items()}}
        key = (workers, tuple(sorted(full_env.items())))
        if key not in self.servers:
            self.servers[key] = Server(workers, full_env).start()
        server = self.servers[key]
        assert server.process.poll() is None, f"server died:\n{server.output()}"
        return server

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()


def owned_by(shard: int, shards: int, prefix: str) -> str:
    """A fresh name (channel or user) that shard ``shard`` of ``shards`` owns."""
    while True:
        name = unique(prefix)
        if owner(name, shards) == shard:
            return name


def conn_id_on(shard: int, shards: int) -> str:
    """A fresh conn_id that shard ``shard`` of ``shards`` holds."""
    while True:
        conn_id = str(uuid.uuid4())
        if owner(conn_id, shards) == shard:
            return conn_id


class ClusterNodes:
    """``count`` nodes of ``workers`` shards each, one broker over one Redis (a key prefix of
    their own, so clusters of several tests can share a redis-server)."""

    def __init__(self, redis_url: str, count: int = 3, workers: int = 2,
                 urls: dict[int, str] | None = None, **env: Any) -> None:
        """``urls``: nodes that reach Redis at another URL (a proxy in front of it)."""
        self.prefix = unique("c")
        common = {**CONTRACT_ENV, "SHARDCAST_REDIS_PREFIX": self.prefix,
                  **{key: str(value) for key, value in env.items()}}
        self.nodes = [Server(workers, {**common, "SHARDCAST_NODE_ID": f"node{index}",
                                       "SHARDCAST_REDIS_URL": (urls or {}).get(index, redis_url)})
                      for index in range(count)]

    def __getitem__(self, index: int) -> Server:
        return self.nodes[index]

    def __iter__(self):
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def start(self) -> "ClusterNodes":
        try:
            with ThreadPoolExecutor(len(self.nodes)) as pool:     # about 2 s each, in parallel
                list(pool.map(Server.start, self.nodes))
        except BaseException:
            self.stop()     # the nodes that did start: no fixture will
            raise
        return self

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

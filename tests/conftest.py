"""Real shardcast servers on loopback ports, and small clients to talk to them.

Every test in this folder drives a real ``python -m shardcast serve`` process (a supervisor
plus its shard processes) over real sockets. Servers are shared per pytest session; tests
keep out of each other's way by using channel and user names of their own (``unique``).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import hmac
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from json import dumps as json_dumps, loads as json_loads
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
from itsdangerous import TimestampSigner
from websockets.sync.client import ClientConnection, connect as ws_connect

REPO_ROOT = Path(__file__).resolve().parent.parent
SECRET = "test-secret-0123456789"
SIGNATURE_HEADER = "x-channelstream-secret"
STARTUP_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 15.0
RECEIVE_TIMEOUT = 4.0
WAKE_CONNECTIONS_AFTER = 1
CONTRACT_GC_CONNS_AFTER = 30
GC_CONNS_AFTER = 2
GC_HEARTBEAT_INTERVAL = 1

TIMESTAMP_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}$")
DEFAULT_SETTINGS = {
    "notify_presence": False,
    "store_history": False,
    "history_size": 10,
    "broadcast_presence_with_user_lists": False,
    "notify_state": False,
    "store_frames": True,
}
CHANNEL_INFO_KEYS = {
    "uuid",
    "name",
    "long_name",
    "settings",
    "history",
    "last_active",
    "total_connections",
    "total_users",
    "users",
}


# --------------------------------------------------------------------------- helpers


def unique(prefix: str = "x") -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def is_canonical_uuid(value: Any) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


def is_timestamp(value: Any) -> bool:
    return isinstance(value, str) and TIMESTAMP_RE.match(value) is not None


def settings(**overrides: Any) -> dict:
    """Full channel settings: the documented defaults with ``overrides`` applied."""
    return {**DEFAULT_SETTINGS, **overrides}


def delivered(item: dict, catchup: bool = False) -> dict:
    """The envelope a client receives for the normalised /message ``item`` (API.md, exactly)."""
    envelope = {
        "type": "message",
        "channel": item["channel"],
        "user": item["user"],
        "uuid": item["uuid"],
        "timestamp": item["timestamp"],
        "catchup": catchup,
        "edited": None,
    }
    if "message" in item:
        envelope["message"] = item["message"]
    return envelope


def craft_signature(secret: str, timestamp: int | None = None, value: str = "channelstream") -> str:
    """An itsdangerous-1.1 TimestampSigner signature built by hand from the API.md recipe."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    ts = int(time.time()) if timestamp is None else timestamp
    ts_bytes = ts.to_bytes((ts.bit_length() + 7) // 8, "big")
    signed = value.encode() + b"." + b64(ts_bytes)
    key = hashlib.sha1(b"itsdangerous.Signer" + b"signer" + secret.encode()).digest()
    signature = b64(hmac.new(key, signed, hashlib.sha1).digest())
    return (signed + b"." + signature).decode()


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; return that or raise."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_port_range(count: int, avoid: int) -> int:
    for _ in range(500):
        base = random.randint(20000, 60000 - count)
        ports = range(base, base + count)
        if avoid not in ports and all(_port_is_free(port) for port in ports):
            return base
    raise RuntimeError(f"no {count} consecutive free ports found")


def child_pids(pid: int) -> list[int]:
    """Direct children of ``pid``, read from /proc."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            children.append(int(entry.name))
    return children


def descendant_pids(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in child_pids(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "0A":  # 0A = LISTEN
                inodes.add(fields[9])
    return inodes


def pids_listening_on(port: int, candidates: list[int]) -> list[int]:
    """Which of ``candidates`` hold the listening socket of ``port``."""
    wanted = {f"socket:[{inode}]" for inode in _listening_inodes(port)}
    holders = []
    for pid in candidates:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(fd) in wanted:
                    holders.append(pid)
                    break
            except OSError:
                continue
    return holders


# --------------------------------------------------------------------------- websocket client


class WsClient:
    """A websocket client that turns server frames (JSON arrays) into a stream of envelopes."""

    def __init__(self, connection: ClientConnection):
        self.connection = connection
        self.pending: collections.deque[dict] = collections.deque()

    def __enter__(self) -> "WsClient":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        self.connection.close()

    def recv_frame(self, timeout: float = RECEIVE_TIMEOUT) -> list:
        """The next raw server frame, decoded (heartbeats ``[]`` included)."""
        try:
            raw = self.connection.recv(timeout=timeout)
        except TimeoutError:
            raise AssertionError(f"no websocket frame within {timeout} s") from None
        frame = json_loads(raw)
        assert isinstance(frame, list), f"server frame is not a JSON array: {raw!r}"
        return frame

    def next(self, timeout: float = RECEIVE_TIMEOUT) -> dict:
        """The next envelope; heartbeats are skipped, coalesced frames flattened."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no envelope within {timeout} s")
            self.pending.extend(self.recv_frame(remaining))
        return self.pending.popleft()

    def take(self, count: int, timeout: float = RECEIVE_TIMEOUT) -> list[dict]:
        deadline = time.monotonic() + timeout
        return [self.next(max(deadline - time.monotonic(), 0.001)) for _ in range(count)]

    def until(self, predicate: Callable[[dict], bool], timeout: float = RECEIVE_TIMEOUT) -> tuple[list[dict], dict]:
        """Read until an envelope matches: (envelopes before it, the match)."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            envelope = self.next(max(deadline - time.monotonic(), 0.001))
            if predicate(envelope):
                return before, envelope
            before.append(envelope)

    def until_uuid(self, message_uuid: str, timeout: float = RECEIVE_TIMEOUT) -> list[dict]:
        """Envelopes received before the one carrying ``message_uuid`` (a sentinel)."""
        before, _ = self.until(lambda envelope: envelope.get("uuid") == message_uuid, timeout)
        return before

    def expect_quiet(self, wait: float = 0.3) -> None:
        """Nothing but heartbeats arrives within ``wait`` seconds."""
        deadline = time.monotonic() + wait
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                raw = self.connection.recv(timeout=remaining)
            except TimeoutError:
                return
            self.pending.extend(json_loads(raw))
        raise AssertionError(f"unexpected envelopes: {list(self.pending)}")


def open_websocket(url: str) -> WsClient:
    connection = ws_connect(
        url,
        open_timeout=5,
        close_timeout=1,
        ping_interval=None,
        proxy=None,
        compression=None,
        max_size=None,
    )
    return WsClient(connection)


# --------------------------------------------------------------------------- server


class Server:
    """One ``shardcast serve`` process with its shards, on free loopback ports."""

    def __init__(self, workers: int, env: dict[str, str] | None = None, secret: str = SECRET):
        self.workers = workers
        self.secret = secret
        self.env = env or {}
        self.api_port = _free_port()
        self.ws_base = _free_port_range(workers, avoid=self.api_port)
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.ws_ports = list(range(self.ws_base, self.ws_base + workers))
        self.process: subprocess.Popen | None = None
        self.http_timeout = HTTP_TIMEOUT
        self.session = requests.Session()
        self.session.trust_env = False
        self._log = tempfile.TemporaryFile()

    # lifecycle -------------------------------------------------------------

    def start(self) -> "Server":
        command = [
            sys.executable, "-m", "shardcast", "serve",
            "--host", "127.0.0.1",
            "--port", str(self.api_port),
            "--ws-port-base", str(self.ws_base),
            "--workers", str(self.workers),
            "--secret", self.secret,
            "--log-level", "warning",
        ]  # fmt: skip
        env = {**os.environ, **self.env}
        self.process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.output()}")
            try:
                ready = self.get("/info", timeout=2).status_code == 200
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
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-20000:]

    def stop(self) -> None:
        if self.process is None:
            return
        descendants = descendant_pids(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in descendants:  # shards left behind by a supervisor that did not stop them
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

    def is_connected(self, conn_id: str) -> bool:
        """Probe a connection without touching it: unsubscribing from nothing it is in."""
        response = self.post("/unsubscribe", {"conn_id": conn_id, "channels": [unique("probe")]})
        assert response.status_code in (200, 422), response.text
        return response.status_code == 200

    def listen(self, conn_id: str, **params: Any) -> requests.Response:
        return self.get("/listen", params={"conn_id": conn_id, **params}, sign=False)

    def ws(self, url: str) -> WsClient:
        return open_websocket(url)


# --------------------------------------------------------------------------- fixtures


class ServerPool:
    """Servers shared by the session, started on first use, keyed by their settings."""

    def __init__(self) -> None:
        self.servers: dict[tuple, Server] = {}

    def get(self, workers: int, **env: Any) -> Server:
        full_env = {
            "SHARDCAST_GC_CONNS_AFTER": str(CONTRACT_GC_CONNS_AFTER),
            "SHARDCAST_WAKE_CONNECTIONS_AFTER": str(WAKE_CONNECTIONS_AFTER),
            **{key: str(value) for key, value in env.items()},
        }
        key = (workers, tuple(sorted(full_env.items())))
        if key not in self.servers:
            self.servers[key] = Server(workers, full_env).start()
        server = self.servers[key]
        assert server.process.poll() is None, f"server died:\n{server.output()}"
        return server

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()


@pytest.fixture(scope="session")
def server_pool() -> Iterator[ServerPool]:
    pool = ServerPool()
    yield pool
    pool.stop_all()


@pytest.fixture(scope="session", params=[1, 3], ids=["1shard", "3shards"])
def server(request: pytest.FixtureRequest, server_pool: ServerPool) -> Server:
    """The contract server, once with one shard and once with three."""
    return server_pool.get(request.param)


@pytest.fixture(scope="session")
def server3(server_pool: ServerPool) -> Server:
    """A three-shard server for cross-shard behaviour."""
    return server_pool.get(3)


@pytest.fixture(scope="session")
def gc_server(server_pool: ServerPool) -> Server:
    """A three-shard server that collects idle connections after 2 s and heartbeats every 1 s."""
    return server_pool.get(
        3,
        SHARDCAST_GC_CONNS_AFTER=GC_CONNS_AFTER,
        SHARDCAST_HEARTBEAT_INTERVAL=GC_HEARTBEAT_INTERVAL,
    )


@pytest.fixture
def open_ws() -> Iterator[Callable[[str | dict], WsClient]]:
    """Open websockets (from a URL or a /connect reply) that close when the test ends."""
    with contextlib.ExitStack() as stack:

        def _open(target: str | dict) -> WsClient:
            url = target["ws_url"] if isinstance(target, dict) else target
            return stack.enter_context(open_websocket(url))

        yield _open


@pytest.fixture
def join(open_ws: Callable) -> Callable[..., tuple[dict, WsClient]]:
    """Connect a user and attach its websocket at once: ``join(server, username, channels)``
    returns (connect reply, client)."""

    def _join(server: Server, username: str, channels: list[str] = (), **body: Any) -> tuple[dict, WsClient]:
        reply = server.connect(username, channels, **body)
        return reply, open_ws(reply)

    return _join

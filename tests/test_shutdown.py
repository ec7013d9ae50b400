"""Graceful shutdown on SIGTERM, and shards that outlive their supervisor only briefly."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

from contract import unique, wait_until
from harness import Server
from processes import cmdline, descendant_pids, pids_listening_on
from shardcast.config import Config
from shardcast.http_api import HttpApi
from shardcast.http_messages import Request

WORKERS = 2
SHUTDOWN_TIMEOUT = 5.0
GOING_AWAY = 1001
SUPERVISOR_LOSS_BOUND = 3.0     # shards check for their supervisor every second


def running(processes: dict[int, bytes]) -> list[int]:
    """Which of these processes still run (a zombie's command line is empty)."""
    return [pid for pid, command in processes.items() if cmdline(pid) == command]


def ports_in_use(server: Server) -> list[int]:
    """The server's ports that some process still listens on, or that cannot be bound."""
    busy = []
    for port in [server.api_port, *server.ws_ports]:
        everyone = [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
        if pids_listening_on(port, everyone) or not can_bind(port):
            busy.append(port)
    return busy


def can_bind(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def fresh_server():
    server = Server(WORKERS, env={"SHARDCAST_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT),
                                  "SHARDCAST_WAKE_CONNECTIONS_AFTER": "30"}).start()
    yield server
    server.stop()


def test_sigterm_closes_websockets_answers_long_polls_and_exits_cleanly(fresh_server, open_ws):
    server = fresh_server
    sockets = [open_ws(server.connect(unique("u"), [unique("c")])) for _ in range(4)]
    polled = server.connect(unique("poller"))["conn_id"]
    answers = []
    poll = threading.Thread(target=lambda: answers.append(server.listen(polled, timeout=20)))
    poll.start()
    wait_until(lambda: sum(s["long_polls"] for s in
                           server.ok("GET", "/admin/admin.json")["shards"]) == 1, timeout=5)
    processes = {pid: cmdline(pid) for pid in descendant_pids(server.process.pid)}
    assert len(processes) > WORKERS          # the shards, and the standby process

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(SHUTDOWN_TIMEOUT + 5)
    took = time.monotonic() - started
    poll.join(5)

    assert code == 0, server.output()        # 0 only if every shard exited with 0 too
    assert took < SHUTDOWN_TIMEOUT
    assert answers and answers[0].status_code == 200 and answers[0].json() == []
    for client in sockets:
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                client.connection.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == GOING_AWAY
    # The shards and the standby are waited for; multiprocessing's resource tracker leaves
    # once the last of them has closed its pipe, a moment later.
    wait_until(lambda: not running(processes), timeout=1, interval=0.02)
    assert ports_in_use(server) == []
    print(f"SIGTERM to all {len(processes) + 1} processes gone: {took * 1000:.0f} ms")


def test_requests_during_shutdown_get_503_and_close():
    api = HttpApi(Config(workers=1, secret="x"), commands=None)
    api.closing = True
    request = Request("GET", b"/info", {}, b"", "127.0.0.1")
    response = api.handle(request)
    assert response.status == 503 and not request.keep_alive


def test_shards_exit_when_the_supervisor_is_killed(fresh_server, open_ws):
    server = fresh_server
    client = open_ws(server.connect(unique("u")))
    processes = {pid: cmdline(pid) for pid in descendant_pids(server.process.pid)}
    killed = time.monotonic()
    server.process.kill()
    server.process.wait(5)
    wait_until(lambda: not running(processes), timeout=SUPERVISOR_LOSS_BOUND, interval=0.05)
    gone = time.monotonic() - killed
    with pytest.raises(ConnectionClosed):
        while True:
            client.connection.recv(timeout=5)
    assert ports_in_use(server) == []
    print(f"shards gone {gone * 1000:.0f} ms after the supervisor was killed")

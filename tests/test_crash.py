"""A shard killed with SIGKILL while messages flow: restarted within a second, its clients
disconnected, membership rebuilt from the surviving shards, no loss on healthy channels."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from websockets.exceptions import ConnectionClosed

from contract import unique, wait_until
import harness
from harness import Server

WORKERS = 3
VICTIM = 2
RESTART_BOUND = 1.0       # seconds from SIGKILL to the new shard answering
READERS_PER_SHARD = 3
PUBLISH_EVERY = 0.005


def owned_by(shard: int, prefix: str) -> str:
    return harness.owned_by(shard, WORKERS, prefix)


def conn_id_on(shard: int) -> str:
    return harness.conn_id_on(shard, WORKERS)


class Publisher(threading.Thread):
    """Posts numbered messages to one channel until stopped; keeps what was accepted."""

    def __init__(self, server: Server, channel: str) -> None:
        super().__init__(daemon=True)
        self.server, self.channel = server, channel
        self.posted: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(PUBLISH_EVERY):
            self.posted.append(self.server.say(self.channel, str(len(self.posted)))["uuid"])


@pytest.fixture(scope="module")
def crash_server():
    server = Server(WORKERS).start()
    yield server
    server.stop()


def shard_figures(server: Server) -> list[dict] | None:
    response = server.get("/admin/admin.json", timeout=2)
    return response.json()["shards"] if response.status_code == 200 else None


def test_killed_shard_is_restarted_and_rebuilt_without_loss_elsewhere(crash_server, open_ws):
    server = crash_server
    healthy, lost = owned_by(0, "healthy"), owned_by(VICTIM, "lost")
    lost_user, healthy_user = owned_by(VICTIM, "lost-user"), owned_by(0, "healthy-user")
    survivor = server.connect(lost_user, [healthy, lost], conn_id=conn_id_on(1))
    doomed = server.connect(healthy_user, [healthy, lost], conn_id=conn_id_on(VICTIM))
    readers = [open_ws(server.connect(unique("r"), [healthy], conn_id=conn_id_on(shard)))
               for shard in (0, 1) for _ in range(READERS_PER_SHARD)]
    survivor_ws, doomed_ws = open_ws(survivor), open_ws(doomed)
    pid = shard_figures(server)[VICTIM]["pid"]

    publisher = Publisher(server, healthy)
    publisher.start()
    time.sleep(0.3)
    killed = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    figures = wait_until(lambda: restarted(server, pid), timeout=10, interval=0.01)
    restart_time = time.monotonic() - killed
    time.sleep(0.3)
    publisher.stop.set()
    publisher.join(10)

    print(f"shard {VICTIM} answered again {restart_time * 1000:.0f} ms after SIGKILL")
    assert restart_time < RESTART_BOUND
    assert figures[VICTIM]["restarts"] == 1 and [f["restarts"] for f in figures[:2]] == [0, 0]
    metrics = server.get("/metrics").text.splitlines()
    assert f'shardcast_shard_restarts_total{{shard="{VICTIM}"}} 1.0' in metrics
    with pytest.raises(ConnectionClosed):                   # its clients are disconnected
        while True:
            doomed_ws.connection.recv(timeout=5)
    marker = server.sentinel(healthy)
    for client in [*readers, survivor_ws]:                  # nothing lost on healthy shards
        received = [e["uuid"] for e in client.until_uuid(marker) if e["type"] == "message"]
        assert received == publisher.posted

    assert_membership_rebuilt(server, healthy, lost, survivor, lost_user, healthy_user)
    posted = server.say(lost, "after the restart")       # the rebuilt channel delivers
    survivor_ws.until(lambda envelope: envelope.get("uuid") == posted["uuid"])
    assert server.post("/subscribe", {"conn_id": doomed["conn_id"],
                                      "channels": [healthy]}).status_code == 422


def restarted(server: Server, old_pid: int) -> list[dict] | None:
    figures = shard_figures(server)
    return figures if figures and figures[VICTIM]["pid"] != old_pid else None


def assert_membership_rebuilt(server: Server, healthy: str, lost: str, survivor: dict,
                              lost_user: str, healthy_user: str) -> None:
    def rebuilt() -> dict | None:
        info = server.info(channels=[healthy, lost], include_connections=True)
        channels = info["channels"]
        if lost in channels and channels[lost]["users"] == [lost_user]:
            return info
        return None

    info = wait_until(rebuilt, timeout=5)
    # The healthy channel lost the dead shard's connection (its user had no other there).
    assert healthy_user not in info["channels"][healthy]["users"]
    assert info["channels"][healthy]["total_connections"] == 2 * READERS_PER_SHARD + 1
    # The dead shard's channel is back with the surviving member.
    assert info["channels"][lost]["total_connections"] == 1
    # The dead shard's user is back with its surviving connection.
    (entry,) = [u for u in info["users"] if u["user"] == lost_user]
    assert entry["connections"] == [survivor["conn_id"]]

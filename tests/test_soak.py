"""A short soak: connections join and leave presence channels while messages flow; afterwards
the server holds no more file descriptors or memory than before, lost nothing, logged no error.
(`python -m bench soak` is the long version.)"""

from __future__ import annotations

import os
import threading
import time

from websockets.sync.client import connect as ws_connect

from contract import unique, wait_until
from harness import Server
from processes import descendant_pids, rss_bytes

SHARDS = 3
CHURNERS = 4
STABLE = 5                  # subscribers that stay for the whole run and count what they get
SOAK_SECONDS = 8.0
PUBLISH_INTERVAL = 0.01     # ~100 messages a second
RSS_GROWTH_BOUND = 8 * 2**20
FD_SLACK = 2                # the test's own keep-alive API connections may come and go


def server_pids(server: Server) -> list[int]:
    return [server.process.pid, *descendant_pids(server.process.pid)]


def fds(pids: list[int]) -> int:
    return sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in pids)


def churn(server: Server, channels: list[str], stop: threading.Event, errors: list) -> None:
    """Connect, open the websocket, read a little, leave (by close or by /disconnect)."""
    rounds = 0
    while not stop.is_set():
        try:
            reply = server.connect(unique("churn"), [channels[rounds % len(channels)]])
            with ws_connect(reply["ws_url"], open_timeout=5) as socket:
                socket.recv(timeout=2)
                if rounds % 2:
                    server.get("/disconnect", params={"conn_id": reply["conn_id"]})
        except Exception as error:    # noqa: BLE001 - reported by the test
            errors.append(repr(error))
            return
        rounds += 1


def cycle(server: Server, channels: list[str], seconds: float) -> int:
    """Churn and publish for ``seconds``; the number of messages published to channels[0]."""
    stop, errors = threading.Event(), []
    threads = [threading.Thread(target=churn, args=(server, channels, stop, errors))
               for _ in range(CHURNERS)]
    for thread in threads:
        thread.start()
    published = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        server.say(channels[0], "tick")
        published += 1
        time.sleep(PUBLISH_INTERVAL)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not errors, errors
    return published


def test_soak_returns_to_baseline_and_loses_nothing():
    server = Server(SHARDS, {"SHARDCAST_GC_CONNS_AFTER": "2",
                             "SHARDCAST_HEARTBEAT_INTERVAL": "1"}).start()
    try:
        channels = [unique("soak") for _ in range(3)]
        server.channel_config({name: {"notify_presence": True} for name in channels})
        subscribers = [server.ws(server.connect(unique("stable"), [channels[0]])["ws_url"])
                       for _ in range(STABLE)]
        pids = server_pids(server)
        warm = cycle(server, channels, 2.0)   # fill allocator pools and caches
        def settled() -> bool:    # every churned connection is gone
            counts = [server.channel_info(name)["total_connections"] for name in channels]
            return counts == [STABLE, 0, 0]

        wait_until(settled, 15)
        fds_before, rss_before = fds(pids), rss_bytes(pids)

        published = cycle(server, channels, SOAK_SECONDS)
        wait_until(settled, 15)
        fds_after, rss_after = fds(pids), rss_bytes(pids)

        marker = server.sentinel(channels[0])
        for subscriber in subscribers:
            messages = [e for e in subscriber.until_uuid(marker, timeout=10)
                        if e["type"] == "message"]
            assert len({e["uuid"] for e in messages}) == len(messages), "duplicates"
            assert len(messages) == warm + published
        print(f"soak: {published} messages, fds {fds_before} -> {fds_after}, "
              f"RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB")
        assert fds_after <= fds_before + FD_SLACK
        assert rss_after - rss_before < RSS_GROWTH_BOUND
        assert "ERROR" not in server.output() and "Traceback" not in server.output()
    finally:
        for subscriber in subscribers:
            subscriber.close()
        server.stop()

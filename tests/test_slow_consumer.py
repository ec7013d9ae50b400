"""Slow consumers: a client that stops reading is dropped; nobody else loses a message, and the
server's memory stays bounded while it is fed as fast as it will take.

One raw-socket client completes the websocket handshake and then never reads; fifty clients
read everything, all in one channel, while a publisher posts batches for a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time

import pytest
import orjson
from websockets.asyncio.client import connect as ws_connect

from contract import unique, wait_until
from harness import Server
from processes import descendant_pids, rss_bytes
from rawws import handshake, last_close_code
from shardcast.transport import CLOSE_GRACE

WORKERS = 2
READERS = 50
SEND_BUFFER = 256 * 1024
PAYLOAD = "x" * 1000                 # about 1.1 KB per envelope
BATCH = 25                           # messages per POST /message
PUBLISH_SECONDS = 4.0
RATE = 3000                          # messages a second: 3.3 MB/s to each client
SLOW_CONSUMER = 3008
# The bound on the server's memory: its processes' summed RSS may grow by this much over what
# they used with every client attached and nothing posted yet: each client's send buffer full,
# plus 16 MiB for IPC buffers and the allocator. Measured: a few MiB.
RSS_GROWTH_BOUND = (READERS + 1) * SEND_BUFFER + 16 * 1024 * 1024
LISTEN_COLLECT = 1.0                 # a long poll answers this long after its first frame


@pytest.fixture(scope="module")
def slow_server():
    server = Server(WORKERS, env={"SHARDCAST_SEND_BUFFER_SIZE": str(SEND_BUFFER),
                                  "SHARDCAST_GC_CONNS_AFTER": "60"}).start()
    yield server
    server.stop()


class RssSampler(threading.Thread):
    """The peak summed RSS of the server's processes, sampled every 50 ms."""

    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.baseline = self.peak = rss_bytes(pids)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.peak = max(self.peak, rss_bytes(self.pids))


class StalledClient:
    """A websocket that completes its handshake, then never reads (a tiny receive buffer)."""

    def __init__(self, url: str) -> None:
        self.sock = handshake(url, rcvbuf=4096)

    def close_code(self) -> int | None:
        """Read all that is left: the close frame's code, or None if the socket was reset."""
        stream = bytearray()
        try:
            while chunk := self.sock.recv(1 << 20):
                stream += chunk
        except (ConnectionResetError, TimeoutError):
            return None
        finally:
            self.sock.close()
        return last_close_code(bytes(stream))


class Readers(threading.Thread):
    """Websocket clients on one event loop, each counting the message uuids it receives."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.seen: list[list[str]] = [[] for _ in urls]
        self.ready = threading.Event()
        self.stop_at: str | None = None
        self.finished = [False] * len(urls)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self.main())
        except BaseException as error:     # reported by the test
            self.error = error

    async def main(self) -> None:
        sockets = [await ws_connect(url, max_size=None, compression=None, ping_interval=None,
                                    proxy=None) for url in self.urls]
        self.ready.set()
        await asyncio.gather(*(self.read(index, ws) for index, ws in enumerate(sockets)))
        for ws in sockets:
            await ws.close()

    async def read(self, index: int, ws) -> None:
        seen = self.seen[index]
        while True:
            for envelope in orjson.loads(await ws.recv()):
                if envelope.get("type") != "message":
                    continue
                if envelope["message"].get("sentinel"):
                    self.finished[index] = True
                    return
                seen.append(envelope["uuid"])


def publish(server: Server, channel: str, seconds: float) -> list[str]:
    """Post RATE messages a second for ``seconds``; the uuids of all posted, in order."""
    posted = []
    start = time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds:
        ahead = len(posted) / RATE - elapsed
        if ahead > 0:
            time.sleep(ahead)
        items = [{"user": "feed", "channel": channel, "message": {"n": len(posted) + i,
                                                                 "text": PAYLOAD}}
                 for i in range(BATCH)]
        posted += [item["uuid"] for item in server.message(*items)]
    return posted


def test_slow_consumer_is_dropped_and_nobody_else_loses_anything(slow_server):
    channel = unique("firehose")
    slow_server.channel_config({channel: {}})
    stalled_conn = slow_server.connect(unique("stalled"), [channel])
    stalled = StalledClient(stalled_conn["ws_url"])
    readers = Readers([slow_server.connect(unique("reader"), [channel])["ws_url"]
                       for _ in range(READERS)])
    readers.start()
    assert readers.ready.wait(20), readers.error
    pids = [slow_server.process.pid, *descendant_pids(slow_server.process.pid)]
    baseline = rss_bytes(pids)
    sampler = RssSampler(pids)
    sampler.start()

    posted = publish(slow_server, channel, PUBLISH_SECONDS)
    slow_server.message({"user": "feed", "channel": channel, "message": {"sentinel": True}})
    readers.join(60)
    sampler.done.set()
    sampler.join()

    assert readers.error is None and all(readers.finished), readers.error
    for seen in readers.seen:
        assert seen == posted          # every message, once, in order
    wait_until(lambda: not slow_server.is_connected(stalled_conn["conn_id"]), timeout=5)
    assert stalled.close_code() in (SLOW_CONSUMER, None)
    growth = sampler.peak - baseline
    print(f"posted {len(posted)} messages of ~{len(PAYLOAD)} B to {READERS} readers; "
          f"RSS {baseline / 2**20:.1f} MiB at start, peak growth {growth / 2**20:.1f} MiB")
    assert growth < RSS_GROWTH_BOUND


def test_long_poll_on_a_busy_channel_answers_within_a_second(slow_server):
    """Messages every 20 ms never leave the 0.25 s quiet gap that ends a long poll."""
    channel = unique("busy")
    conn_id = slow_server.connect(unique("poller"), [channel])["conn_id"]
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(0.02):
            slow_server.say(channel)

    feeder = threading.Thread(target=trickle, daemon=True)
    feeder.start()
    try:
        slow_server.listen(conn_id)          # takes what was held since /connect
        started = time.monotonic()
        answer = slow_server.listen(conn_id)
        waited = time.monotonic() - started
    finally:
        stop.set()
        feeder.join(5)
    assert answer.status_code == 200 and answer.json()
    assert waited < LISTEN_COLLECT + 0.5


def test_long_poll_answer_is_bounded_by_the_send_buffer(slow_server):
    channel = unique("burst")
    conn_id = slow_server.connect(unique("poller"), [channel])["conn_id"]
    slow_server.listen(conn_id)
    burst = threading.Thread(target=publish_burst, args=(slow_server, channel, SEND_BUFFER * 2))
    burst.start()
    answer = slow_server.listen(conn_id)
    burst.join(10)
    batch_frame = BATCH * 2 * len(PAYLOAD)     # what one shard tick may add at once
    assert 0 < len(answer.content) <= SEND_BUFFER + batch_frame


KERNEL_SEND_BUFFER = 131072     # kernel_send_buffer's default, which Linux doubles
# Unread bytes the client's own end and the frames in flight may add (measured: 380 messages
# of PAYLOAD passed before the close, 2,710 with the OS's own sizing).
STALL_SLACK = 64 * 1024


def test_a_stalled_client_is_closed_before_the_kernel_holds_megabytes_for_it(slow_server):
    """The kernel's send buffer counts in what one reader may leave unread: a client that never
    reads is closed once about SEND_BUFFER + 2 * KERNEL_SEND_BUFFER are posted to it, where
    Linux's own sizing of a loopback socket took 2.7 MB more first."""
    channel = unique("stalled")
    conn = slow_server.connect(unique("stalled"), [channel])
    stalled = StalledClient(conn["ws_url"])
    items = [{"user": "feed", "channel": channel, "message": {"text": PAYLOAD}}] * 10
    posted = 0
    while slow_server.is_connected(conn["conn_id"]) and posted < 16 * SEND_BUFFER:
        slow_server.message(*items)
        posted += len(items) * len(PAYLOAD)
    assert stalled.close_code() == SLOW_CONSUMER
    assert posted < SEND_BUFFER + 2 * KERNEL_SEND_BUFFER + STALL_SLACK



@pytest.mark.parametrize("size", ["100", "-1", "2147483648"])
def test_a_kernel_send_buffer_out_of_range_is_refused_at_start(size):
    started = subprocess.run(
        [sys.executable, "-m", "shardcast", "serve"], capture_output=True, text=True,
        timeout=30, env={**os.environ, "SHARDCAST_KERNEL_SEND_BUFFER": size})
    assert started.returncode != 0
    assert (f"kernel_send_buffer = {size} (from environment variable "
            "SHARDCAST_KERNEL_SEND_BUFFER): expected 0 for the OS's own sizing, or "
            "4096..2147483647 bytes") in started.stderr


def publish_burst(server: Server, channel: str, size: int) -> None:
    items = [{"user": "feed", "channel": channel, "message": {"text": PAYLOAD}}] * BATCH
    for _ in range(size // (BATCH * len(PAYLOAD)) + 1):
        server.message(*items)


PINGS = 200_000
PING_PAYLOAD = 125                       # the most a control frame holds
PING = bytes([0x89, 0x80 | PING_PAYLOAD]) + bytes(4) + b"p" * PING_PAYLOAD   # masked, key 0
PINGS_PER_SEND = 1000
UNREAD = 0.3            # seconds the flooder then leaves the server to it, before it reads
# The owning shard's RSS may grow by this much while a client pings without reading: the
# pongs queued for it are bounded by SEND_BUFFER (measured: 0.5 MiB; it was 35 MiB for these
# pings, 190 MB for a million).
PING_FLOOD_RSS_BOUND = 16 * 1024 * 1024


def read_to_the_end(sock, timeout: float, close: bool = True) -> tuple[bytes, bool]:
    """All the server sends until it closes the socket, and whether it was reset (a timeout
    fails: the server left the socket open)."""
    sock.settimeout(timeout)
    stream = bytearray()
    try:
        while chunk := sock.recv(1 << 20):
            stream += chunk
    except ConnectionResetError:
        return bytes(stream), True
    finally:
        if close:
            sock.close()
    return bytes(stream), False


def test_ping_flood_without_reading_is_dropped_as_a_slow_consumer(slow_server):
    reply = slow_server.connect(unique("pinger"))
    shard = int(reply["ws_url"].split(":")[2].split("/")[0]) - slow_server.ws_base
    pid = slow_server.ok("GET", "/admin/admin.json")["shards"][shard]["pid"]
    sock = handshake(reply["ws_url"], rcvbuf=4096)
    sampler = RssSampler([pid])
    sampler.start()
    sock.settimeout(0.5)
    sent = 0
    try:
        while sent < PINGS:
            sock.sendall(PING * PINGS_PER_SEND)
            sent += PINGS_PER_SEND
    except OSError:         # the server stopped reading
        pass
    time.sleep(UNREAD)
    stream, reset = read_to_the_end(sock, timeout=5)
    sampler.done.set()
    sampler.join()
    growth = sampler.peak - sampler.baseline
    code = last_close_code(stream)
    print(f"{sent} pings sent; shard RSS growth {growth / 2**20:.1f} MiB; "
          f"{len(stream)} bytes read, close code {code}, reset {reset}")
    assert code == SLOW_CONSUMER or (code is None and reset)
    assert growth < PING_FLOOD_RSS_BOUND
    wait_until(lambda: not slow_server.is_connected(reply["conn_id"]), timeout=5)


def test_a_closed_websocket_whose_client_never_closes_is_reset_after_the_grace(slow_server):
    """A closing websocket is half-closed: the client gets its close frame and the end of the
    stream, the server reads on (so what the client still sends is taken, not answered with
    a reset) and, if the client never closes its side, resets it after CLOSE_GRACE."""
    conn = slow_server.connect(unique("lingerer"))
    sock = handshake(conn["ws_url"])
    assert slow_server.post("/disconnect", {"conn_id": conn["conn_id"]}).status_code == 200
    stream, reset = read_to_the_end(sock, timeout=5, close=False)
    ended = time.monotonic()
    assert last_close_code(stream) == 1000 and not reset
    with sock:
        try:
            while time.monotonic() - ended < CLOSE_GRACE + 5:
                sock.sendall(PING)          # read and dropped while the server waits
                time.sleep(0.25)
        except OSError:                     # the reset: the second send after it fails
            pass
    held = time.monotonic() - ended
    assert CLOSE_GRACE - 0.5 < held < CLOSE_GRACE + 2

"""Every byte a shard writes is a valid websocket frame holding the JSON queued for that
connection, in order, whatever the load and however slowly clients read.

A channel is flooded past what its sockets can take (an open loop: posts leave on a fixed
schedule, whatever is delivered), with frames both under and over 8 KB. Its subscribers are bare
sockets that keep every byte: some read at once, some slowly through a small receive buffer.
Each stream is checked frame by frame: framing, JSON, each envelope exactly the one posted, each
publisher's messages in order with no gap, except where the server closed a slow reader with
3008 (then what came before is an unbroken prefix).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from contract import delivered, unique
from harness import Server
from rawws import CLOSE, TEXT, FramingError, handshake, parse_frames

WORKERS = 2
SEND_BUFFER = 256 * 1024
PUBLISHERS = 2
POSTS_PER_SECOND = 150          # per publisher
ITEMS_PER_POST = 6
FLOOD_SECONDS = 3.0
# Payload sizes cycled through: frames under and over picows' 8 KB copy threshold, and merged
# frames of many messages.
PADDING = (120, 700, 3000, 9500)
FAST_READERS = 3
SLOW_READERS = 4
SLOW_READ = 4096                # bytes a slow reader takes, every SLOW_PAUSE
SLOW_PAUSE = 0.003
SLOW_RCVBUF = 16 * 1024
READ_DEADLINE = 60.0
SLOW_CONSUMER = 3008
END = "end-of-flood"


@pytest.fixture(scope="module")
def flood_server():
    server = Server(WORKERS, env={"SHARDCAST_SEND_BUFFER_SIZE": str(SEND_BUFFER),
                                  "SHARDCAST_GC_CONNS_AFTER": "60"}).start()
    yield server
    server.stop()


class RawReader(threading.Thread):
    """Keeps every frame of one websocket until a close frame, the end marker or EOF."""

    def __init__(self, url: str, slow: bool) -> None:
        super().__init__(daemon=True)
        self.slow = slow
        self.sock = handshake(url, rcvbuf=SLOW_RCVBUF if slow else None, timeout=READ_DEADLINE)
        self.frames = []
        self.error: str | None = None
        self.reset = False

    def run(self) -> None:
        stream = bytearray()
        size = SLOW_READ if self.slow else 1 << 20
        deadline = time.monotonic() + READ_DEADLINE
        try:
            while time.monotonic() < deadline:
                chunk = self.sock.recv(size)
                if not chunk:
                    return
                stream += chunk
                frames, used = parse_frames(bytes(stream))
                del stream[:used]
                self.frames += frames
                if any(f.opcode == CLOSE or (f.opcode == TEXT and END.encode() in f.payload)
                       for f in frames):
                    return
                if self.slow:
                    time.sleep(SLOW_PAUSE)
            self.error = "no end marker nor close frame before the deadline"
        except FramingError as error:
            self.error = str(error)
        except ConnectionResetError:
            self.reset = True
        finally:
            self.sock.close()


def publish(server: Server, channel: str, publisher: int, posted: list[dict]) -> None:
    """Open loop: post ``i`` leaves at start + i / rate, however deliveries are doing."""
    session = requests.Session()      # one per thread: a Session is not thread-safe
    session.trust_env = False
    start = time.monotonic()
    for post in range(int(POSTS_PER_SECOND * FLOOD_SECONDS)):
        ahead = start + post / POSTS_PER_SECOND - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        items = [{"user": f"pub{publisher}", "channel": channel,
                  "message": {"p": publisher, "n": n, "pad": "x" * PADDING[n % len(PADDING)]}}
                 for n in range(len(posted), len(posted) + ITEMS_PER_POST)]
        response = session.post(f"{server.api}/message", json=items, headers=server.sign(),
                                timeout=server.http_timeout)
        assert response.status_code == 200, response.text
        posted += response.json()


def check_stream(reader: RawReader, posted: list[list[dict]]) -> tuple[bool, list[int]]:
    """Raise on anything but intact frames with exactly the posted envelopes, per publisher in
    order from the first; return (closed with 3008, how many of each publisher's it got)."""
    assert reader.error is None, reader.error
    got = [0] * PUBLISHERS
    closed = False
    for frame in reader.frames:
        assert not closed, "a frame after the close frame"
        if frame.opcode == CLOSE:
            assert frame.close_code == SLOW_CONSUMER, f"closed with {frame.close_code}"
            closed = True
            continue
        if frame.opcode != TEXT:
            continue
        envelopes = json.loads(frame.payload.decode("utf-8"))
        assert isinstance(envelopes, list), frame.payload[:200]
        for envelope in envelopes:
            message = envelope.get("message") or {}
            if message.get("end") == END:
                continue
            publisher, n = message["p"], message["n"]
            assert n == got[publisher], f"publisher {publisher}: got n={n}, expected {got[publisher]}"
            assert envelope == delivered(posted[publisher][n]), f"envelope {publisher}/{n} differs"
            got[publisher] += 1
    return closed or reader.reset, got


def test_frames_stay_intact_when_a_channel_is_flooded_past_capacity(flood_server):
    channel = unique("flood")
    flood_server.channel_config({channel: {}})
    readers = [RawReader(flood_server.connect(unique("r"), [channel])["ws_url"], slow)
               for slow in [False] * FAST_READERS + [True] * SLOW_READERS]
    for reader in readers:
        reader.start()
    posted: list[list[dict]] = [[] for _ in range(PUBLISHERS)]
    publishers = [threading.Thread(target=publish, args=(flood_server, channel, p, posted[p]))
                  for p in range(PUBLISHERS)]
    for thread in publishers:
        thread.start()
    for thread in publishers:
        thread.join(FLOOD_SECONDS + 60)
    flood_server.message({"user": "end", "channel": channel, "message": {"end": END}})
    for reader in readers:
        reader.join(READ_DEADLINE + 5)

    outcomes = [check_stream(reader, posted) for reader in readers]
    total = [len(items) for items in posted]
    for (closed, got), reader in zip(outcomes, readers):
        if not reader.slow:
            assert not closed and got == total, f"a fast reader lost messages: {got} of {total}"
        elif not closed:
            assert got == total, f"a slow reader that was not closed got {got} of {total}"
    print(f"posted {total}; slow readers closed: "
          f"{sum(closed for closed, _ in outcomes[FAST_READERS:])} of {SLOW_READERS}")

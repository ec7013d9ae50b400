"""One client connection on the shard that owns it."""
from __future__ import annotations

import time
from collections import deque
from typing import Protocol

import orjson

DIRECT_CATCHUP = 50   # direct messages kept per connection for catch-up
HEARTBEAT = b"[]"
Held = tuple[int, bytes, "list | None"]    # publication stamp, frame, message position


class Batch:
    """The frames of one channel between two flushes, for its subscribers that had nothing
    else queued: appended once for all of them (their ``out`` is the batch), not once each.
    ``loose``: the channel's other subscribers, served one by one. The shard stops appending
    to it (Shard.batches) when who gets the channel's frames changes; its sharers keep what
    it holds."""

    __slots__ = ("frames", "loose")

    def __init__(self, frame: bytes) -> None:
        self.frames = [frame]
        self.loose: list[Connection] = []


Queued = bytes | list[bytes] | Batch     # a connection's frames since the last flush


class Transport(Protocol):
    """What a connection writes to: a websocket or a held long-poll request. ``offsets``: its
    client wants each message's position; ``since``: the positions it comes back from."""

    offsets: bool
    since: dict | None

    def send(self, frame: bytes) -> None: ...
    def send_frames(self, out: Queued, memo: dict) -> int: ...
    def close(self, code: int = 1000) -> None: ...


def merge_frames(frames: list[bytes]) -> bytes:
    """Join JSON-array frames into one array without re-encoding their items."""
    if len(frames) == 1:
        return frames[0]
    return b"[" + b",".join(frame[1:-1] for frame in frames) + b"]"


def joined(out: Queued) -> bytes:
    """Queued frames as one JSON array."""
    if out.__class__ is bytes:
        return out
    return merge_frames(out if out.__class__ is list else out.frames)


class Connection:
    __slots__ = ("id", "user", "channels", "last_active", "transport", "pending",
                 "catchup_size", "out")

    def __init__(self, conn_id: str, user: str, catchup_size: int) -> None:
        self.id = conn_id
        self.user = user
        self.channels: dict[str, None] = {}   # names as keys: a dict of one is 184 B, a set 216
        self.last_active = time.monotonic()
        self.transport: Transport | None = None
        # ``pending`` and ``out`` stay None until used: most connections sit idle, and an
        # empty dict or list would cost each of them 64 or 56 B.
        # Frames that arrived while no transport was attached, replayed as catch-up: per
        # channel name ("" for direct messages), the newest ones, each as (publication stamp,
        # frame, [epoch, offset] of a message or None).
        self.pending: dict[str, deque[Held]] | None = None
        self.catchup_size = catchup_size
        # Frames queued since the last flush, sent together as one frame: a lone one as
        # itself (no list made and dropped per delivery), more in a list, or a channel's
        # Batch shared with its other subscribers (Shard.deliver).
        self.out: Queued | None = None

    def hold(self, frame: bytes, channel: str | None, replay: bool, amend: list | None,
             stamp: int, position: list | None = None) -> None:
        """No transport attached: keep the frame for catch-up, or apply an edit/delete
        to the held original so the client later sees the message as it now stands."""
        if amend is not None and self.pending and self._amend(self.pending, amend, frame):
            return
        if replay:
            if self.pending is None:
                self.pending = {}
            key = channel or ""
            held = self.pending.get(key)
            if held is None:
                size = self.catchup_size if channel else DIRECT_CATCHUP
                held = self.pending[key] = deque(maxlen=size)
            held.append((stamp, frame, position))

    def hold_all(self) -> None:
        """Keep every frame from now on (a client being recovered): the seam with history is
        found by offset, and a frame dropped for room would be a hole in it."""
        self.catchup_size = None
        for key, held in (self.pending or {}).items():
            if key:
                self.pending[key] = deque(held)

    @staticmethod
    def _amend(pending: dict[str, deque[Held]], amend: list, frame: bytes) -> bool:
        operation, uuid = amend
        for key, held in pending.items():
            for index, (stamp, kept, position) in enumerate(held):
                envelope = orjson.loads(kept)[0]
                if envelope["type"] != "message" or envelope["uuid"] != uuid:
                    continue
                if operation == "delete":
                    del held[index]
                    if not held:
                        del pending[key]
                else:
                    change = orjson.loads(frame)[0]
                    for key in ("message", "user", "timestamp", "edited"):
                        if key in change:
                            envelope[key] = change[key]
                    held[index] = (stamp, orjson.dumps([envelope]), position)
                return True
        return False

    def take_catchup(self, offsets: bool) -> bytes | None:
        """Held frames as one array marked ``catchup``, in the order they were published
        (channel and direct ones alike, as Channelstream's per-connection queue keeps them);
        with ``offsets``, messages carry their positions."""
        held = self.take_held()
        if not held:
            return None
        return orjson.dumps([replayed(frame, position, offsets) for _, frame, position in held])

    def take_held(self) -> list[Held]:
        """Every held frame, in the order they were published."""
        pending, self.pending = self.pending, None
        return sorted((held for kept in (pending or {}).values() for held in kept),
                      key=lambda held: held[0])


def replayed(frame: bytes, position: list | None, offsets: bool) -> dict:
    """A held frame's envelope as catch-up: marked ``catchup`` (where it has that key), and
    positioned for a client that asked."""
    envelope = orjson.loads(frame)[0]
    if "catchup" in envelope:
        envelope["catchup"] = True
    if offsets and position is not None:
        envelope["epoch"], envelope["offset"] = position
    return envelope

"""The shard actor's state transitions, driven with plain calls (no sockets)."""
from __future__ import annotations

import orjson
import pytest

from shardcast.config import Config
from shardcast.connection import Connection, merge_frames
from shardcast.routing import owner
from shardcast.shard import Shard

SHARDS = 1


class RecordingNet:
    """Stands in for the worker: records what the actor sends, runs what it sends itself."""

    def __init__(self) -> None:
        self.local: Shard | None = None
        self.casts: list[tuple[int, str, object]] = []
        self.delivered: list[tuple[int, list, bytes]] = []
        self.flushes = 0

    def cast(self, shard: int, command: str, args: object) -> None:
        self.casts.append((shard, command, args))
        if self.local is not None and shard == self.local.index:
            getattr(self.local, command)(args)

    def deliver(self, shard: int, route: list, frame: bytes) -> None:
        self.delivered.append((shard, route, frame))

    def schedule_flush(self) -> None:
        self.flushes += 1


class Socket:
    """A transport that keeps what is sent to it."""

    offsets = False
    since = None

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed: int | None = None

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def send_frames(self, out: bytes | list[bytes], memo: dict) -> int:
        self.send(out if isinstance(out, bytes) else merge_frames(out))
        return len(self.frames[-1])

    def close(self, code: int = 1000) -> None:
        self.closed = code

    def envelopes(self) -> list[dict]:
        return [envelope for frame in self.frames for envelope in orjson.loads(frame)]


@pytest.fixture
def shard() -> Shard:
    net = RecordingNet()
    net.local = Shard(0, SHARDS, Config(workers=SHARDS, secret="x"), net)
    return net.local


def open_conn(shard: Shard, conn_id: str, user: str, channels: list[str]) -> Connection:
    shard.conn_open({"conn_id": conn_id, "user": user, "channels": channels})
    shard.join({"joins": [[name, {"notify_presence": True}, conn_id, user, {}]
                          for name in channels]})
    return shard.conns[conn_id]


def test_fanout_serializes_once_per_target_shard(shard):
    open_conn(shard, "c1", "a", ["room"])
    open_conn(shard, "c2", "b", ["room"])
    shard.net.delivered.clear()
    shard.publish([{"channel": "room", "user": "x", "uuid": "u1", "timestamp": "t", "stamp": 1,
                    "pm_users": [], "exclude_users": [], "no_history": False, "edited": None}])
    assert len(shard.net.delivered) == 1
    _, route, frame = shard.net.delivered[0]
    assert route[1] == "room" and orjson.loads(frame)[0]["uuid"] == "u1"


def test_frames_in_one_tick_are_coalesced_into_one_write(shard):
    conn = open_conn(shard, "c1", "a", ["room"])
    socket = Socket()
    shard.attach(conn, socket)
    route = ["c", "room", [], [], True, None, 1, None]
    for n in range(3):
        shard.deliver(route, orjson.dumps([{"n": n}]))
    assert shard.net.flushes == 1
    shard.flush()
    assert socket.frames == [b'[{"n":0},{"n":1},{"n":2}]']


def test_frames_without_transport_are_replayed_as_catchup(shard):
    conn = open_conn(shard, "c1", "a", ["room"])
    shard.deliver(["c", "room", [], [], True, None, 1, None],
                  orjson.dumps([{"type": "message", "uuid": "u", "catchup": False}]))
    socket = Socket()
    shard.attach(conn, socket)
    assert socket.envelopes() == [{"type": "message", "uuid": "u", "catchup": True}]


def test_delete_removes_held_frame_instead_of_queueing(shard):
    conn = open_conn(shard, "c1", "a", ["room"])
    shard.deliver(["c", "room", [], [], True, None, 1, None],
                  orjson.dumps([{"type": "message", "uuid": "u", "catchup": False}]))
    shard.deliver(["c", "room", [], [], True, ["delete", "u"], 2, None],
                  orjson.dumps([{"type": "message:delete", "uuid": "u", "channel": "room"}]))
    assert conn.take_catchup(False) is None


def test_exclude_and_pm_filter_recipients(shard):
    conns = {user: open_conn(shard, f"c-{user}", user, ["room"]) for user in "abc"}
    sockets = {user: Socket() for user in conns}
    for user, conn in conns.items():
        shard.attach(conn, sockets[user])
    shard.deliver(["c", "room", ["b"], ["a", "b"], True, None, 1, None], b'[{"n":1}]')
    shard.flush()
    assert [user for user in "abc" if sockets[user].frames] == ["a"]


def test_remove_conn_tells_channel_and_user_owners(shard):
    conn = open_conn(shard, "c1", "a", ["room"])
    shard.net.casts.clear()
    assert shard.conn_close({"conn_id": "c1"}) is True
    commands = [(command, args) for _, command, args in shard.net.casts]
    assert ("leave", {"channel": "room", "conn_id": "c1"}) in commands
    assert ("user_conn_gone", {"user": "a", "conn_id": "c1"}) in commands
    assert "c1" not in shard.conns and not conn.channels


def test_sweep_drops_connections_idle_longer_than_gc_conns_after(shard):
    conn = open_conn(shard, "c1", "a", [])
    attached = open_conn(shard, "c2", "b", [])
    shard.attach(attached, Socket())
    attached.last_active = conn.last_active + shard.config.gc_conns_after
    shard.sweep(conn.last_active + shard.config.gc_conns_after + 1)
    assert list(shard.conns) == ["c2"]


def test_channels_with_nothing_to_keep_are_forgotten_once_idle(shard):
    for conn_id, user, name in [("c1", "a", "left"), ("c2", "b", "member")]:
        shard.conn_open({"conn_id": conn_id, "user": user, "channels": [name]})
        shard.join({"joins": [[name, None, conn_id, user, {}]]})
    shard.conn_close({"conn_id": "c1"})
    shard.configure({"configs": {"defaults": {"notify_presence": False}, "set": {"notify_state": True},
                                 "kept": {"store_history": True}, "emptied": {}}})
    shard.channels["kept"].record({"no_history": False, "uuid": "u1", "user": "x",
                                   "timestamp": "t", "channel": "kept"})
    after = max(channel.last_active for channel in shard.channels.values())
    shard.forget_channels(after)        # nothing idle yet
    assert len(shard.channels) == 6
    shard.forget_channels(after + shard.config.gc_channels_after + 1)
    assert sorted(shard.channels) == ["kept", "member", "set"]


def test_presence_joined_only_for_first_connection_of_user(shard):
    open_conn(shard, "c1", "a", ["room"])
    open_conn(shard, "c2", "b", ["room"])
    shard.net.delivered.clear()
    open_conn(shard, "c3", "b", ["room"])
    assert shard.net.delivered == []


def test_connection_gets_no_frame_sent_before_its_join_reached_the_owner(shard):
    open_conn(shard, "c1", "a", ["room"])
    shard.conn_open({"conn_id": "c2", "user": "b", "channels": ["room"]})
    shard.deliver(["c", "room", [], [], True, None, 1, None], b'[{"n":1}]')
    assert shard.conns["c2"].take_catchup(False) is None
    assert shard.conns["c1"].take_catchup(False) is not None


def test_user_state_change_reports_only_changed_keys(shard):
    shard.user_connect({"user": "a", "fresh_state": {"x": 1}, "state": {},
                        "public_keys": ["x"], "conn_id": "c1"})
    result = shard.user_state({"user": "a", "state": {"x": 1, "y": None, "z": True}})
    assert result["changed_state"] == [{"key": "z", "value": True}]
    assert result["public_state"] == {"x": 1}


def test_owner_is_stable_and_in_range():
    assert owner("lobby", 3) == owner("lobby", 3)
    assert {owner(f"ch{i}", 3) for i in range(100)} == {0, 1, 2}

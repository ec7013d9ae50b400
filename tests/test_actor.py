"""The shard actor's state transitions, driven with plain calls (no sockets)."""
from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from shardcast import envelopes
from shardcast.config import Config
from shardcast.connection import Connection, Queued, joined, merge_frames, replayed
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

    since = None

    def __init__(self, offsets: bool = False) -> None:
        self.offsets = offsets
        self.frames: list[bytes] = []
        self.closed: int | None = None

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def send_frames(self, out: Queued, memo: dict) -> int:
        self.send(joined(out))
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


def test_a_long_poll_ending_before_the_flush_takes_what_was_queued_for_it(shard):
    from shardcast.transport import LongPoll

    async def poll_once() -> tuple[list[bytes], Connection]:
        conn = open_conn(shard, "c1", "a", ["room"])
        answers: list[bytes] = []
        poll = LongPoll(60, answers.append, lambda done: shard.detach(conn, done), 1 << 20)
        shard.attach(conn, poll)
        shard.deliver(["c", "room", [], [], True, None, 1, None], b'[{"n":1}]')
        poll.finish()       # its wait ran out before the shard flushed
        shard.deliver(["c", "room", [], [], True, None, 2, None], b'[{"n":2}]')
        shard.flush()
        return answers, conn

    answers, conn = asyncio.run(poll_once())
    assert answers == [b'[{"n":1}]']
    assert [frame for _, frame, _ in conn.take_held()] == [b'[{"n":2}]']


class Expected:
    """What each connection should get, kept the plain way: a list per connection, one entry
    per delivery."""

    def __init__(self) -> None:
        self.channels: dict[str, set[str]] = {}
        self.transport: dict[str, Socket | None] = {}
        self.out: dict[str, list[bytes]] = {}
        self.held: dict[str, list[tuple[int, bytes, list | None]]] = {}
        self.frames: dict[int, list[bytes]] = {}      # id(socket) -> frames it should get

    def deliver(self, conn_ids, frame: bytes, position: list | None, stamp: int) -> None:
        for conn_id in conn_ids:
            transport = self.transport[conn_id]
            if transport is None:
                self.held[conn_id].append((stamp, frame, position))
            elif position is not None and transport.offsets:
                self.out[conn_id].append(envelopes.positioned(frame, position))
            else:
                self.out[conn_id].append(frame)

    def attach(self, conn_id: str, socket: Socket) -> None:
        self.transport[conn_id] = socket
        held = sorted(self.held[conn_id], key=lambda kept: kept[0])
        self.held[conn_id] = []
        self.frames[id(socket)] = [orjson.dumps(
            [replayed(frame, position, socket.offsets) for _, frame, position in held])
            ] if held else []

    def flush(self) -> None:
        for conn_id, out in self.out.items():
            if out and self.transport[conn_id] is not None:
                self.frames[id(self.transport[conn_id])].append(merge_frames(out))
            self.out[conn_id] = []


@pytest.mark.parametrize("seed", range(60))
def test_queued_frames_match_one_list_per_connection(shard, seed):
    """Channel frames are queued once per channel for the subscribers that share them; mixed
    with direct and filtered frames, joins, leaves, polls ending and new transports, each
    connection gets exactly what it would with a list of its own."""
    rng = random.Random(seed)
    users = ["u0", "u1", "u2"]
    names = ["A", "B", "C"]
    expected = Expected()
    sockets: list[Socket] = []
    for index in range(6):
        conn_id, user = f"c{index}", users[index % 3]
        joined_names = rng.sample(names, rng.randint(0, 2))
        open_conn(shard, conn_id, user, joined_names)
        expected.channels[conn_id] = set(joined_names)
        expected.out[conn_id], expected.held[conn_id] = [], []
        expected.transport[conn_id] = None
        if rng.random() < 0.8:
            socket = Socket(offsets=rng.random() < 0.3)
            sockets.append(socket)
            shard.attach(shard.conns[conn_id], socket)
            expected.attach(conn_id, socket)
    conn_ids = list(expected.channels)
    for stamp in range(1, 45):
        step = rng.random()
        conn_id = rng.choice(conn_ids)
        if step < 0.55:
            name = rng.choice(names)
            exclude = [rng.choice(users)] if rng.random() < 0.1 else []
            pm = [rng.choice(users)] if rng.random() < 0.1 else []
            position = ["e", stamp] if rng.random() < 0.5 else None
            frame = orjson.dumps([{"type": "message", "channel": name, "n": stamp}])
            shard.deliver(["c", name, exclude, pm, True, None, stamp, position], frame)
            expected.deliver([c for c in conn_ids if name in expected.channels[c]
                              and shard.conns[c].user not in exclude
                              and (not pm or shard.conns[c].user in pm)],
                             frame, position, stamp)
        elif step < 0.65:
            targets = rng.sample(conn_ids, 2)
            frame = orjson.dumps([{"type": "message", "direct": True, "n": stamp}])
            shard.deliver(["u", targets, None, stamp], frame)
            expected.deliver(targets, frame, None, stamp)
        elif step < 0.72:
            name = rng.choice(names)
            shard.conn_subscribe({"conn_id": conn_id, "channels": [name]})
            shard.join({"joins": [[name, None, conn_id, shard.conns[conn_id].user, {}]]})
            expected.channels[conn_id].add(name)
        elif step < 0.77:
            name = rng.choice(names)
            shard.conn_unsubscribe({"conn_id": conn_id, "channels": [name]})
            expected.channels[conn_id].discard(name)
        elif step < 0.82 and expected.transport[conn_id] is not None:
            out = expected.out[conn_id]
            assert shard.detach(shard.conns[conn_id], expected.transport[conn_id]) == (
                merge_frames(out) if out else None)
            expected.out[conn_id], expected.transport[conn_id] = [], None
        elif step < 0.88:
            socket = Socket(offsets=rng.random() < 0.3)
            sockets.append(socket)
            shard.attach(shard.conns[conn_id], socket)
            expected.attach(conn_id, socket)
        else:
            shard.flush()
            expected.flush()
    shard.flush()
    expected.flush()
    for socket in sockets:
        assert socket.frames == expected.frames[id(socket)]

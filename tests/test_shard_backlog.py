"""When a shard cannot take what is sent to it. An API process: a stopped shard's link fills up
to max_shard_backlog, then that shard's commands answer 503 naming it (the process holds no
more), and it takes them again once the shard reads; a post to a shard being restarted answers
503, not 500, and a post that names several shards is refused whole. A shard: deliveries to a
stopped peer past max_shard_backlog are dropped, and the peer's subscribers who missed them are
closed as slow consumers (3008) once it reads again."""
from __future__ import annotations

import os
import signal

import pytest
from websockets.exceptions import ConnectionClosed

from contract import unique, wait_until
import harness
from harness import CONTRACT_ENV, Server

WORKERS = 2
BACKLOG = 262144            # max_shard_backlog of the server below
PAYLOAD = "x" * 65536       # a post's worth: the stopped shard's link is full within tens
MAX_POSTS = 200             # the kernel's socket buffer and BACKLOG take far fewer
# A reader reads only once the posts are in (50 of PAYLOAD, 3.2 MB), so its queue must hold
# them all: only the stopped peer's subscribers are to be cut off. The kernel's share of a
# socket (kernel_send_buffer) no longer takes megabytes of them.
SEND_BUFFER = 8 * 2**20


@pytest.fixture(scope="module")
def server():
    server = Server(WORKERS, {**CONTRACT_ENV, "SHARDCAST_API_WORKERS": "1",
                              "SHARDCAST_MAX_SHARD_BACKLOG": str(BACKLOG),
                              "SHARDCAST_SEND_BUFFER_SIZE": str(SEND_BUFFER)}).start()
    yield server
    server.stop()


def shard_pid(server: Server, index: int) -> int:
    return server.get("/admin/admin.json").json()["shards"][index]["pid"]


def post(server: Server, *items: dict):
    return server.post("/message", [{"user": "backend", **item} for item in items])


def reader(server: Server, open_ws, channel: str, shard: int = 0):
    """A websocket in ``channel`` on ``shard``."""
    return open_ws(server.connect(unique("reader"), [channel],
                                  conn_id=harness.conn_id_on(shard, WORKERS)))


def test_a_stopped_shard_takes_commands_up_to_its_backlog_then_answers_503(server, open_ws):
    stalled, healthy = harness.owned_by(1, WORKERS, "stalled"), harness.owned_by(0, WORKERS, "ok")
    # On the stopped shard itself: what it takes is delivered there, without crossing a peer
    # link (BACKLOG would also bound that one, when the shard comes back with all at once).
    client = reader(server, open_ws, stalled, shard=1)
    pid = shard_pid(server, 1)
    os.kill(pid, signal.SIGSTOP)
    try:
        accepted = []
        for number in range(MAX_POSTS):
            response = post(server, {"channel": stalled,
                                     "message": {"n": number, "pad": PAYLOAD}})
            if response.status_code != 200:
                break
            accepted.append(number)
        assert response.status_code == 503, f"{MAX_POSTS} posts taken for a stopped shard"
        assert response.json() == {"shard": [
            f"Shard 1 is behind: more than {BACKLOG} bytes wait for it (max_shard_backlog); "
            "retry"]}
        assert len(accepted) * len(PAYLOAD) > BACKLOG
        assert post(server, {"channel": healthy, "message": {"n": 0}}).status_code == 200
        ready = server.get("/ready")
        assert ready.status_code == 503 and ready.json()["down"] == {"1": "behind"}
    finally:
        os.kill(pid, signal.SIGCONT)
    refused = number
    wait_until(lambda: post(server, {"channel": stalled, "message": {"n": "probe"}}
                            ).status_code == 200, timeout=10)
    marker = server.sentinel(stalled)
    received = [envelope["message"]["n"] for envelope in client.until_uuid(marker, timeout=10)
                if envelope.get("type") == "message"]
    taken = [n for n in received if isinstance(n, int)]
    assert taken == accepted and refused not in taken
    assert shard_pid(server, 1) == pid      # stopped and resumed, never restarted


def test_a_post_to_a_restarting_shard_is_refused_whole_with_503(server, open_ws):
    """The supervisor is stopped while the shard dies, so that the shard stays down (its
    restart takes milliseconds otherwise) until posts have met it down."""
    lost, healthy = harness.owned_by(1, WORKERS, "lost"), harness.owned_by(0, WORKERS, "kept")
    client = reader(server, open_ws, healthy)
    answers: dict[int, list[int]] = {}

    def post_both() -> int:
        number = sum(len(numbers) for numbers in answers.values())
        response = post(server, {"channel": healthy, "message": {"n": number}},
                        {"channel": lost, "message": {"n": number}})
        answers.setdefault(response.status_code, []).append(number)
        if response.status_code == 503:
            assert response.json() == {"shard": ["Shard 1 is unavailable; retry"]}
        return response.status_code

    pid = shard_pid(server, 1)
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: post_both() == 503 and post_both() == 503, 10, interval=0.01)
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    wait_until(lambda: post_both() == 200, 10, interval=0.01)     # restarted
    assert set(answers) == {200, 503}, {status: len(n) for status, n in answers.items()}
    marker = server.sentinel(healthy)
    received = [envelope["message"]["n"] for envelope in client.until_uuid(marker)
                if envelope.get("type") == "message"]
    assert received == answers[200]


def test_deliveries_to_a_stopped_peer_stop_at_its_backlog_and_its_subscribers_are_closed_3008(
        server, open_ws):
    channel = harness.owned_by(0, WORKERS, "owned")
    near, far = reader(server, open_ws, channel), reader(server, open_ws, channel, shard=1)
    pid = shard_pid(server, 1)
    os.kill(pid, signal.SIGSTOP)
    try:
        numbers = list(range(MAX_POSTS // 4))       # well past the peer's socket and backlog
        for number in numbers:
            assert post(server, {"channel": channel,
                                 "message": {"n": number, "pad": PAYLOAD}}).status_code == 200
        marker = server.sentinel(channel)
        assert [envelope["message"]["n"] for envelope in near.until_uuid(marker)
                if envelope.get("type") == "message"] == numbers
    finally:
        os.kill(pid, signal.SIGCONT)
    got = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            got.extend(envelope["message"].get("n") for envelope in far.take(1, timeout=10)
                       if envelope.get("type") == "message")
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3008
    assert got == numbers[:len(got)] and len(got) < len(numbers)    # in order, then cut off
    after = reader(server, open_ws, channel, shard=1)
    item = server.say(channel, "caught up")
    assert after.until(lambda envelope: envelope.get("uuid") == item["uuid"])
    assert shard_pid(server, 1) == pid


def test_a_connection_made_at_once_on_a_restarted_shard_keeps_its_channels(server, open_ws):
    """The restarted shard tells its peers itself, before it takes anything. The supervisor
    used to tell them, once it had seen the shard answer: a connection made on the new shard
    in between was parted from its channels when the news came, and got nothing more. The
    supervisor is stopped as soon as the new shard takes websockets, before it could tell."""
    channel = harness.owned_by(0, WORKERS, "kept")
    pid = shard_pid(server, 1)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not harness.Server._accepts_tcp(server.ws_ports[1]), 10, interval=0.001)
    wait_until(lambda: harness.Server._accepts_tcp(server.ws_ports[1]), 10, interval=0.001)
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        client = wait_until(lambda: connected(server, open_ws, channel), 10, interval=0.01)
        first = server.say(channel, "before the supervisor goes on")
        client.until(lambda envelope: envelope.get("uuid") == first["uuid"])
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
    wait_until(lambda: "shard 1 restarted" in server.log_text(), 10)
    second = server.say(channel, "after")
    client.until(lambda envelope: envelope.get("uuid") == second["uuid"])


def connected(server: Server, open_ws, channel: str):
    """A websocket in ``channel`` on shard 1, or None while the API cannot reach it yet."""
    try:
        return reader(server, open_ws, channel, shard=1)
    except AssertionError:      # 503: the API process has not linked to the new shard yet
        return None

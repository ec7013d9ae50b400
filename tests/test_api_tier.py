"""API processes share the API port: the kernel spreads connections over them, sequential posts
through different ones arrive in order (shards behind, links full), an answer waits while its
shard's socket is full, and one that dies is replaced while the others answer."""

from __future__ import annotations

import contextlib
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import threading
import time
from typing import Iterator

import pytest
import requests

from contract import unique, wait_until
import harness
from harness import CONTRACT_ENV, Server, race
from rawhttp import open_socket, read_response
from wsclient import raw_handshake

PROCESSES = 2
CONNECTIONS = 40
POSTS = 150
FLOODED = 300       # websockets enough that a flush takes milliseconds: shards rest (and hold)
FLOOD_ITEMS = 10    # messages a flood post: ten a frame, a shard behind
FILL, FILL_ITEMS = 100_000, 8       # bytes of a big message, and such messages a post
PIPELINED = 20      # posts sent at once on one connection to a stopped shard
MAX_FILL = 200      # posts that could not all fit in a link's socket
FILLERS = 8         # connections filling the links to a stopped shard: both processes' surely
SHARDS = 2


@pytest.fixture(scope="module")
def server():
    server = Server(SHARDS, {**CONTRACT_ENV, "SHARDCAST_API_WORKERS": str(PROCESSES)}).start()
    yield server
    server.stop()


def processes(server: Server) -> dict[int, dict]:
    """Per API process: its pid, whether it answered the scrape, requests and restarts."""
    text = server.get("/metrics").text
    found: dict[int, dict] = {}
    for pid, index, up in re.findall(       # labels come sorted by name
            r'shardcast_api_process_up\{pid="(\d+)",process="(\d+)"\} (\S+)', text):
        found[int(index)] = {"pid": int(pid), "up": float(up)}
    for kind in ("requests", "restarts"):
        for index, value in re.findall(
                rf'shardcast_api_process_{kind}_total\{{process="(\d+)"\}} (\S+)', text):
            found[int(index)][kind] = float(value)
    return found


def fresh_post(server: Server, path: str, body: object) -> requests.Response:
    """A signed POST over a connection of its own (the kernel picks an API process per
    connection)."""
    return requests.post(server.api + path, json=body,
                         headers={**server.sign(), "connection": "close"}, timeout=10)


def fresh_connect(server: Server) -> int:
    return fresh_post(server, "/connect", {"username": unique("u")}).status_code


def test_requests_land_on_every_api_process(server):
    before = processes(server)
    assert sorted(before) == list(range(PROCESSES)) and all(p["up"] for p in before.values())
    assert [fresh_connect(server) for _ in range(CONNECTIONS)] == [200] * CONNECTIONS
    after = processes(server)
    assert all(after[i]["requests"] > before[i]["requests"] for i in range(PROCESSES)), after


def test_a_second_server_on_the_api_port_fails_instead_of_sharing_it(server):
    """The API processes share the port (SO_REUSEPORT): so could another server of the same
    user, silently taking half the calls, whose clients would never meet this one's."""
    second = Server(1)
    second.api_port = server.api_port
    second.launch()
    try:
        returncode = second.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second server runs on the API port:\n{second.output()}")
    finally:
        second.stop()
    assert returncode != 0
    assert f"cannot listen on 127.0.0.1:{server.api_port}: Address already in use" \
           in second.log_text()
    assert [fresh_connect(server) for _ in range(CONNECTIONS)] == [200] * CONNECTIONS


def test_of_two_servers_started_on_one_api_port_at_once_one_runs():
    """Before either's API processes listen, both could bind the port (SO_REUSEADDR), then
    share it: the one that holds it first runs, the other exits saying so."""
    twins = [Server(1), Server(1)]
    twins[1].api_port, twins[1].api = twins[0].api_port, twins[0].api
    try:
        gone, running = race(twins)
        assert gone.process.returncode == 1
        assert f"cannot listen on 127.0.0.1:{gone.api_port}: Address already in use" \
               in gone.log_text()
        running._wait_ready()
        assert [fresh_connect(running) for _ in range(CONNECTIONS)] == [200] * CONNECTIONS
        assert running.process.poll() is None
    finally:
        for twin in twins:
            twin.stop()


def test_the_banner_counts_the_api_processes_and_shards(server, server_pool):
    assert f"({PROCESSES} API processes, {SHARDS} shards)" in server.log_text()
    assert "(1 API process, 1 shard)" in server_pool.get(1).log_text()


def test_sequential_posts_through_either_api_process_arrive_in_order(server):
    """Each post is answered before the next is sent, each over a connection of its own (so
    through either process). An API process used to answer before its frames left for the shard
    (at the end of its loop tick): a next post through the other one could overtake them, and
    under CI load one did."""
    assert_sequential_posts_arrive_in_order(server)


def assert_sequential_posts_arrive_in_order(server: Server, channel: str = "") -> None:
    channel = channel or unique("ch")
    with server.ws(server.connect(unique("u"), [channel])["ws_url"]) as client:
        texts = [str(n) for n in range(POSTS)]
        for text in texts:
            response = fresh_post(server, "/message", [
                {"channel": channel, "user": "backend", "message": {"text": text}}])
            assert response.status_code == 200, response.text
        assert [envelope["message"]["text"] for envelope in client.take(POSTS)] == texts


def drain(sockets: list, stop: threading.Event) -> None:
    """Read and drop what the sockets get, so that none is a slow consumer."""
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
        while not stop.is_set():
            for key, _ in selector.select(0.1):
                try:
                    key.fileobj.recv(1 << 16)
                except BlockingIOError:
                    pass


def posts(channel: str, size: int, count: int) -> list[dict]:
    return [{"channel": channel, "user": "load", "message": {"text": "x" * size}}] * count


def keep_posting(server: Server, items: list[dict], stop: threading.Event) -> None:
    while not stop.is_set():
        assert fresh_post(server, "/message", items).status_code == 200


@contextlib.contextmanager
def shards_behind(server: Server, full: str = "") -> Iterator[None]:
    """Posts of ten messages to a crowded channel keep the shards behind while the block runs;
    with ``full``, posts of big messages to that channel (nobody joined it: its shard drops
    them) fill that shard's links while it holds them."""
    crowded = unique("crowded")
    sockets = [raw_handshake(server.connect(unique("f"), [crowded])["ws_url"])
               for _ in range(FLOODED)]
    stop = threading.Event()
    loads = [posts(crowded, 200, FLOOD_ITEMS)]
    if full:
        loads += [posts(full, FILL, FILL_ITEMS)] * 2
    threads = [threading.Thread(target=drain, args=(sockets, stop)),
               *(threading.Thread(target=keep_posting, args=(server, items, stop))
                 for items in loads)]
    try:
        for thread in threads:
            thread.start()
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in sockets:
            sock.close()


def test_sequential_posts_arrive_in_order_while_the_shards_are_behind(server):
    """Shards behind leave their IPC links unread while they rest and read them all when the
    rest ends, in an order of the loop's. Sequential posts through either API process must
    still arrive as they were answered: it fails when a shard handles its links' frames in
    the order it reads them."""
    with shards_behind(server):
        assert_sequential_posts_arrive_in_order(server)


def test_sequential_posts_arrive_in_order_while_the_links_are_full(server):
    """As above, with the links of the channel's shard full: an API process answers a post only
    once its frames are in the link's socket, not in its own buffer, or a post through the
    other one could get there first."""
    channel = unique("ch")
    full = harness.owned_by(harness.owner(channel, SHARDS), SHARDS, "full")
    with shards_behind(server, full):
        assert_sequential_posts_arrive_in_order(server, channel)


def send_post(server: Server, sock: socket.socket, channel: str, message: dict) -> None:
    send(server, sock, "/message", [{"channel": channel, "user": "backend", "message": message}])


def send(server: Server, sock: socket.socket, path: str, value: object) -> None:
    body = json.dumps(value).encode()
    head = "".join(f"{name}: {value}\r\n" for name, value in server.sign().items())
    sock.sendall(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n{head}content-type: "
                 f"application/json\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body)


def status_within(sock: socket.socket, timeout: float) -> int | None:
    """The status of the next answer, or None if none comes within ``timeout``."""
    sock.settimeout(timeout)
    try:
        return read_response(sock)[0]
    except socket.timeout:
        return None


def fill(server: Server, sock: socket.socket, channel: str, wait: float) -> list[int]:
    """Post numbered big messages to a stopped shard's channel until one is not answered
    within ``wait``: the link's socket is full (it takes a few). The statuses of the others."""
    answered: list[int] = []
    while len(answered) < MAX_FILL:
        send_post(server, sock, channel, {"n": len(answered), "pad": "x" * FILL})
        status = status_within(sock, wait)
        if status is None:
            return answered
        answered.append(status)
    raise AssertionError(f"{MAX_FILL} posts answered: none waits")


def test_a_stopped_shard_holds_answers_back(server, open_ws):
    """Its shard stopped, an API process answers posts until the link's socket is full; then
    the answer waits (the backend's next post, through another process, must not overtake
    it), and so do those of the posts pipelined behind it, while posts to the other shard are
    answered at once. All are answered once the shard reads again, and delivered in order."""
    channel = harness.owned_by(1, SHARDS, "stalled")
    reader = open_ws(server.connect(unique("u"), [channel],
                                    conn_id=harness.conn_id_on(0, SHARDS)))
    pid = server.get("/admin/admin.json").json()["shards"][1]["pid"]
    with contextlib.closing(open_socket(server.api_port)) as sock:
        os.kill(pid, signal.SIGSTOP)
        try:
            answered = fill(server, sock, channel, 2.0)
            assert set(answered) == {200}, answered
            waiting = len(answered)
            for number in range(waiting + 1, waiting + 1 + PIPELINED):
                send_post(server, sock, channel, {"n": number})
            assert status_within(sock, 1.0) is None
            # Only answers of posts to the stopped shard wait: other shards' are not held.
            elsewhere = harness.owned_by(0, SHARDS, "elsewhere")
            assert [fresh_post(server, "/message", posts(elsewhere, 10, 1)).status_code
                    for _ in range(CONNECTIONS // 4)] == [200] * (CONNECTIONS // 4)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert [status_within(sock, 10) for _ in range(PIPELINED + 1)] == [200] * (
            PIPELINED + 1)
    marker = server.sentinel(channel)
    numbers = [envelope["message"]["n"] for envelope in reader.until_uuid(marker, timeout=10)
               if envelope.get("type") == "message"]
    assert numbers == list(range(waiting + 1 + PIPELINED))


def test_a_user_state_change_is_answered_once_it_is_in_its_channels_shard_socket(server):
    """As a post: the change /user_state sends the shards of the user's channels (after it
    asked the user's owner) must not be overtaken by the backend's next post, through another
    process. With the channel's shard stopped and the links of both processes to it full, the
    answer waits until the shard reads again."""
    channel = harness.owned_by(1, SHARDS, "stalled")
    user = harness.owned_by(0, SHARDS, "u")
    server.connect(user, [channel], conn_id=harness.conn_id_on(0, SHARDS))
    pid = server.get("/admin/admin.json").json()["shards"][1]["pid"]
    with contextlib.ExitStack() as stack:
        os.kill(pid, signal.SIGSTOP)
        stack.callback(os.kill, pid, signal.SIGCONT)
        for _ in range(FILLERS):        # the kernel spreads them over both processes
            fill(server, stack.enter_context(contextlib.closing(open_socket(server.api_port))),
                 channel, 0.5)
        sock = stack.enter_context(contextlib.closing(open_socket(server.api_port)))
        send(server, sock, "/user_state", {"user": user, "user_state": {"status": "away"}})
        assert status_within(sock, 1.0) is None
        os.kill(pid, signal.SIGCONT)
        assert status_within(sock, 10) == 200


def test_a_killed_api_process_is_replaced_and_the_others_answer(server):
    victim = processes(server)[0]
    os.kill(victim["pid"], signal.SIGKILL)
    killed = time.monotonic()
    answers = []
    while time.monotonic() - killed < 1.0:       # new connections go to the living one
        try:
            answers.append(fresh_connect(server))
        except requests.ConnectionError:         # one the dead process had queued
            answers.append(None)
    assert answers.count(200) >= len(answers) - 2, answers
    replaced = wait_until(lambda: (p := processes(server)[0])["restarts"] == 1
                          and p["up"] == 1 and p["pid"] != victim["pid"], timeout=10)
    assert replaced
    assert [fresh_connect(server) for _ in range(10)] == [200] * 10

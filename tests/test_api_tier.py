"""API processes share the API port: the kernel spreads connections over them, sequential posts
through different ones arrive in order, and one that dies is replaced while the others answer."""

from __future__ import annotations

import os
import re
import selectors
import signal
import threading
import time

import pytest
import requests

from contract import unique, wait_until
from harness import CONTRACT_ENV, Server
from wsclient import raw_handshake

PROCESSES = 2
CONNECTIONS = 40
POSTS = 150
FLOODED = 300       # websockets enough that a flush takes milliseconds: shards rest (and hold)
FLOOD_ITEMS = 10    # messages a flood post: ten a frame, a shard behind
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


def test_the_banner_counts_the_api_processes_and_shards(server, server_pool):
    assert f"({PROCESSES} API processes, {SHARDS} shards)" in server.log_text()
    assert "(1 API process, 1 shard)" in server_pool.get(1).log_text()


def test_sequential_posts_through_either_api_process_arrive_in_order(server):
    """Each post is answered before the next is sent, each over a connection of its own (so
    through either process). An API process used to answer before its frames left for the shard
    (at the end of its loop tick): a next post through the other one could overtake them, and
    under CI load one did."""
    assert_sequential_posts_arrive_in_order(server)


def assert_sequential_posts_arrive_in_order(server: Server) -> None:
    channel = unique("ch")
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


def flood(server: Server, channel: str, stop: threading.Event) -> None:
    items = [{"channel": channel, "user": "flood", "message": {"text": "x" * 200}}] * FLOOD_ITEMS
    while not stop.is_set():
        assert fresh_post(server, "/message", items).status_code == 200


def test_sequential_posts_arrive_in_order_while_the_shards_are_behind(server):
    """Posts of ten messages to a crowded channel keep the shards behind, so each leaves its IPC
    links unread while it rests and reads them all when the rest ends, in an order of the
    loop's. Sequential posts through either API process must still arrive as they were
    answered: it fails when a shard handles its links' frames in the order it reads them."""
    crowded = unique("crowded")
    sockets = [raw_handshake(server.connect(unique("f"), [crowded])["ws_url"])
               for _ in range(FLOODED)]
    stop = threading.Event()
    threads = [threading.Thread(target=drain, args=(sockets, stop)),
               threading.Thread(target=flood, args=(server, crowded, stop))]
    try:
        for thread in threads:
            thread.start()
        assert_sequential_posts_arrive_in_order(server)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        for sock in sockets:
            sock.close()


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

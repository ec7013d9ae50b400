"""A cluster through failures: a node killed with -9, Redis stopped and started (with its data
and without), subscriptions killed by Redis or silently stalled. Each test has its own Redis
and nodes; messages are checked once each, in order, for every reader."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from contract import delivered, unique, wait_until
from harness import REPO_ROOT, ClusterNodes, Server, conn_id_on, race
from processes import free_port
from positions import Reader, with_query
from redisserver import RedisServer
from stallproxy import StallProxy
from wsclient import open_websocket

NODE_TIMEOUT = 3.0
REDIS_TIMEOUT = 1.0
PROBE_TIMEOUT = REDIS_TIMEOUT + 1.0      # a shard's probe must come back within this
FAST = {"SHARDCAST_NODE_TIMEOUT": NODE_TIMEOUT, "SHARDCAST_REDIS_TIMEOUT": REDIS_TIMEOUT,
        "SHARDCAST_HEARTBEAT_INTERVAL": 1}
ANSWER_BOUND = 2 * REDIS_TIMEOUT + 1.0    # the slowest a 503 may be while Redis is away
HISTORY = {"store_history": True, "history_size": 1000}


@pytest.fixture
def redis():
    server = RedisServer(persist=True).start()
    yield server
    server.close()


def start_nodes(url: str, count: int = 2, **env) -> ClusterNodes:
    return ClusterNodes(url, count=count, **{**FAST, **env}).start()


@pytest.fixture
def nodes(redis):
    cluster = start_nodes(redis.url(), count=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def proxied(redis):
    """Two nodes, node 0 reaching Redis through a StallProxy: (proxy, nodes)."""
    proxy = StallProxy(redis.port)
    cluster = start_nodes(redis.url(), urls={0: proxy.url()})
    yield proxy, cluster
    cluster.stop()
    proxy.close()


def messages(envelopes: list[dict]) -> list[str]:
    return [e["uuid"] for e in envelopes if e["type"] == "message"]


def members(node: Server, channel: str) -> list[str]:
    """The channel's users as the node reports them; none while it cannot say (503)."""
    response = node.post("/info", {"info": {"channels": [channel]}})
    if response.status_code != 200:
        return []
    return response.json()["channels"].get(channel, {}).get("users", [])


def stats(node: Server) -> list[dict]:
    return node.ok("GET", "/admin/admin.json")["shards"]


def post_steadily(node: Server, channel: str, seconds: float, posted: list[dict]) -> None:
    """Post one message every 5 ms for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        posted.append(node.say(channel, str(len(posted))))
        time.sleep(0.005)


def test_a_killed_node_is_parted_by_one_janitor_and_others_lose_nothing(nodes, open_ws):
    time.sleep(NODE_TIMEOUT)    # a node acts as janitor once it has been up that long
    channel, victim = unique("ch"), unique("victim")
    nodes[0].channel_config({channel: {"notify_presence": True}})
    watcher = open_ws(nodes[0].connect(unique("w"), [channel]))
    open_ws(nodes[2].connect(victim, [channel]))
    assert watcher.next()["user"] == victim
    before = nodes[1].say(channel, "before")
    nodes[2].kill()
    killed = time.monotonic()
    after = nodes[1].say(channel, "after")
    seen, parted = watcher.until(lambda e: e["type"] == "presence", timeout=NODE_TIMEOUT + 5)
    assert time.monotonic() - killed < NODE_TIMEOUT + 1.0
    assert (parted["user"], parted["message"]) == (victim, {"action": "parted"})
    assert seen == [delivered(before), delivered(after)]
    watcher.expect_quiet(1.5)           # one janitor: one "parted", not one per node
    assert victim not in nodes[1].channel_info(channel)["users"]
    admin = nodes[0].ok("GET", "/admin/admin.json")
    assert [node["node_id"] for node in admin["nodes"]] == ["node0", "node1"]


def test_a_killed_shard_s_successor_parts_its_connections_and_takes_their_ids_back(nodes,
                                                                                    open_ws):
    """The restarted shard forgets what Redis still lists for it before it takes a connection,
    so a client reconnecting with its old conn_id is parted once, joined again, and stays."""
    channel, victim, witness = unique("ch"), unique("victim"), unique("w")
    conn_id = conn_id_on(1, 2)
    nodes[0].channel_config({channel: {"notify_presence": True}})
    watcher = open_ws(nodes[0].connect(witness, [channel]))
    open_ws(nodes[2].connect(victim, [channel], conn_id=conn_id))
    assert watcher.next()["user"] == victim
    os.kill(stats(nodes[2])[1]["pid"], signal.SIGKILL)
    reply = wait_until(lambda: connected(nodes[2], victim, channel, conn_id), 10, interval=0.01)
    client = open_ws(reply)
    seen = [(e["user"], e["message"]["action"]) for e in watcher.take(2, timeout=5)]
    assert seen == [(victim, "parted"), (victim, "joined")]
    item = nodes[1].say(channel, "after the restart")
    _, got = client.until(lambda envelope: envelope["type"] == "message")
    assert got["uuid"] == item["uuid"]
    assert nodes[1].channel_info(channel)["users"] == sorted([victim, witness])


@pytest.mark.parametrize("shards_after", [2, 1])
def test_a_node_restarted_at_once_parts_the_connections_of_its_killed_self(redis, open_ws,
                                                                           shards_after):
    """A node back under the same id before anyone took it for dead: no janitor will part
    what it held, so its shards do, before they take a connection, and the node itself
    for the shards it no longer has."""
    cluster = start_nodes(redis.url(), SHARDCAST_NODE_TIMEOUT=60)
    try:
        channel, victim, witness = unique("ch"), unique("victim"), unique("w")
        cluster[0].channel_config({channel: {"notify_presence": True}})
        watcher = open_ws(cluster[0].connect(witness, [channel]))
        for shard in range(2):
            open_ws(cluster[1].connect(victim, [channel], conn_id=conn_id_on(shard, 2)))
        assert watcher.next()["user"] == victim
        cluster[1].kill()
        cluster[1].workers, cluster[1].ws_ports = shards_after, cluster[1].ws_ports[:shards_after]
        cluster[1].start()
        parted = watcher.next(timeout=5)
        assert (parted["user"], parted["message"]) == (victim, {"action": "parted"})
        assert cluster[0].channel_info(channel)["users"] == [witness]
    finally:
        cluster.stop()


def test_a_node_does_not_start_under_the_id_of_a_live_node_elsewhere(redis, open_ws):
    """A configuration copied between hosts: a second node0 would answer node0's forwarded
    commands and overwrite its reports and registries. It exits saying so, and node0 serves on;
    once node0 is killed, node0 on other ports (its restart elsewhere) starts."""
    cluster = start_nodes(redis.url(), count=1)
    twin = Server(1, {**cluster[0].env})        # node0 again, on other ports
    try:
        channel, user = unique("ch"), unique("u")
        client = open_ws(cluster[0].connect(user, [channel]))
        with pytest.raises(RuntimeError, match="server exited with 1") as failure:
            twin.start()
        assert f"node_id 'node0' is taken: a live node on {socket.gethostname()} at " \
               f"127.0.0.1:{cluster[0].api_port} reports under it" in str(failure.value)
        item = cluster[0].say(channel, "still node0's")
        assert client.next() == delivered(item)
        [node] = cluster[0].get("/admin/admin.json").json()["nodes"]
        assert node["address"] == f"127.0.0.1:{cluster[0].api_port}"
        cluster[0].kill()       # its key outlives it a moment, but it reports no more:
        twin.start()            # node0 restarted on other ports joins
        assert twin.get("/ready").status_code == 200
    finally:
        twin.stop()
        cluster.stop()


def test_of_two_nodes_started_under_one_id_at_once_one_runs(redis):
    """Replicas given one node_id, started together on different hosts (here: addresses):
    neither has reported when the other checks. The one that claims the id first runs; the
    other exits saying so, and nothing it did reaches the one that runs."""
    first = ClusterNodes(redis.url(), count=1, **FAST)[0]
    twins = [first, Server(2, {**first.env})]
    try:
        gone, running = race(twins)
        assert gone.process.returncode == 1
        # (under load, the first may be up before the second looks: it reports by then)
        assert re.search(f"node_id 'node0' is taken: a live node on {socket.gethostname()} at "
                         f"127.0.0.1:{running.api_port} (is starting|reports) under it",
                         gone.log_text())
        running._wait_ready()
        channel, user = unique("ch"), unique("u")
        with open_websocket(running.connect(user, [channel])["ws_url"]) as client:
            item = running.say(channel, "one node0")
            assert client.next() == delivered(item)
        [node] = running.get("/admin/admin.json").json()["nodes"]
        assert node["address"] == f"127.0.0.1:{running.api_port}"
        assert running.process.poll() is None
    finally:
        for twin in twins:
            twin.stop()


def test_a_node_with_another_secret_does_not_join(redis):
    """Nodes with the same redis_url and secret are one broker: one with another secret on the
    same Redis and prefix would share channels and users with a broker that refuses its
    backends. It exits saying so; once that broker is gone (a secret changed), it starts."""
    cluster = start_nodes(redis.url(), count=1)
    stranger = Server(1, {**cluster[0].env, "SHARDCAST_NODE_ID": "stranger"}, secret="other")
    try:
        with pytest.raises(RuntimeError, match="server exited with 1") as failure:
            stranger.start()
        assert f"node 'node0' on {socket.gethostname()} at 127.0.0.1:{cluster[0].api_port} " \
               "uses this Redis and redis_prefix with another secret" in str(failure.value)
        assert cluster[0].get("/ready").status_code == 200
        cluster[0].stop()       # its last report's key outlives it a moment
        stranger.start()
        assert stranger.get("/ready").status_code == 200
    finally:
        stranger.stop()
        cluster.stop()


def test_a_janitor_spares_what_the_node_it_buries_took_since_it_came_back(redis, open_ws):
    """Node 1 dies and comes back under its id while node 0, its janitor, has already found it
    dead: what the janitor reads of it then may hold the new run's connections, which it must
    leave alone. Node 0 reaches Redis through a proxy that holds its read of node 1's
    connections until the new run has one."""
    proxy = StallProxy(redis.port)
    cluster = start_nodes(redis.url(), urls={0: proxy.url()}, SHARDCAST_NODE_TIMEOUT=5,
                          SHARDCAST_REDIS_TIMEOUT=10)     # node 0's held read must not time out
    try:
        channel, witness = unique("ch"), unique("w")
        old, new = unique("old"), unique("new")
        cluster[0].channel_config({channel: {"notify_presence": True}})
        watcher = open_ws(cluster[0].connect(witness, [channel]))
        open_ws(cluster[1].connect(old, [channel], conn_id=conn_id_on(0, 2)))
        assert watcher.next()["user"] == old
        proxy.hold(f"{cluster.prefix}:node:node1:0:conns".encode())
        time.sleep(5)               # node 0 acts as janitor once it has been up that long
        cluster[1].kill()
        assert proxy.held.wait(15)
        cluster[1].start()
        open_ws(cluster[1].connect(new, [channel], conn_id=conn_id_on(0, 2)))
        seen = [(e["user"], e["message"]["action"]) for e in watcher.take(2, timeout=5)]
        assert seen == [(old, "parted"), (new, "joined")]
        proxy.release()
        watcher.expect_quiet(2.0)
        assert cluster[0].channel_info(channel)["users"] == sorted([new, witness])
    finally:
        cluster.stop()
        proxy.close()


def connected(node: Server, user: str, channel: str, conn_id: str) -> dict | None:
    """/connect's answer, or None while the restarted shard cannot take it yet (503)."""
    response = node.post("/connect", {"username": user, "channels": [channel],
                                      "conn_id": conn_id})
    if response.status_code == 503:
        return None
    assert response.status_code == 200, response.text
    return response.json()


def test_while_redis_is_away_calls_answer_503_fast_and_websockets_stay(redis, nodes, open_ws):
    channel = unique("ch")
    reply = nodes[0].connect(unique("u"), [channel], channel_configs={channel: HISTORY})
    client = open_ws(reply)
    redis.stop()
    calls = [("POST", "/connect", {"username": unique("u"), "channels": [channel]}),
             ("POST", "/message", [{"user": "b", "channel": channel, "message": {}}]),
             ("POST", "/info", {"info": {}}),
             ("POST", "/subscribe", {"conn_id": reply["conn_id"], "channels": [unique("c")]}),
             ("POST", "/user_state", {"user": "u", "user_state": {"a": 1}}),
             ("POST", "/channel_config", {channel: {}}),
             ("GET", "/admin/admin.json", None)]
    for node in nodes:
        for method, path, body in calls:
            started = time.monotonic()
            response = node.request(method, path, json=body)
            assert response.status_code == 503, (path, response.text)
            assert "error" in response.json()
            assert time.monotonic() - started < ANSWER_BOUND, path
    assert client.recv_frame(timeout=3) == []       # still open: heartbeats go on
    redis.start()
    wait_until(lambda: all(node.post("/info", {"info": {}}).status_code == 200
                           for node in nodes), timeout=10)
    posted = [nodes[1].say(channel, str(n)) for n in range(5)]    # subscriptions are back
    assert client.take(5) == [delivered(item) for item in posted]


def test_a_redis_that_answers_loading_after_a_restart_is_used_once_it_has_loaded(redis, open_ws):
    """Redis answers LOADING to a node's script loads for 2 s after it comes back: the node
    drops each such connection and tries again, and serves once Redis has loaded (a failed
    load used to leave a dead connection in place, holding every command forever)."""
    proxy = StallProxy(redis.port)
    nodes = start_nodes(proxy.url(), count=1)
    try:
        channel = unique("ch")
        reply = nodes[0].connect(unique("u"), [channel], channel_configs={channel: HISTORY})
        client = open_ws(reply)
        proxy.restart_loading(2.0)
        wait_until(lambda: nodes[0].post("/info", {"info": {}}, timeout=3).status_code == 200,
                   timeout=10)
        assert proxy.refused_loading > 0        # it did meet a loading Redis
        posted = [nodes[0].say(channel, str(n)) for n in range(3)]
        assert client.take(3) == [delivered(item) for item in posted]
    finally:
        nodes.stop()
        proxy.close()


def test_a_redis_restarted_empty_is_told_again_what_the_nodes_hold(open_ws):
    redis = RedisServer(persist=False).start()
    nodes = start_nodes(redis.url())
    try:
        channel = unique("ch")
        first = open_ws(nodes[0].connect(unique("u"), [channel]))
        second = open_ws(nodes[1].connect(unique("u"), [channel]))
        redis.stop()
        redis.start()                   # empty: no channel, member or user survived
        wait_until(lambda: len(members(nodes[1], channel)) == 2, timeout=10)
        # A shard's subscription may come back after its registrations, and a message posted
        # before it is lost (no history: cluster.md): probes until both clients hear one.
        wait_until(lambda: heard_by_all(nodes[1], channel, (first, second)), timeout=10)
        item = nodes[1].say(channel, "after the restart")
        marker = nodes[0].sentinel(channel)
        for client in (first, second):
            assert messages(client.until_uuid(marker)) == [item["uuid"]]
    finally:
        nodes.stop()
        redis.close()


def heard_by_all(node: Server, channel: str, clients: tuple) -> bool:
    probe = node.say(channel, "probe")["uuid"]
    try:
        for client in clients:
            client.until_uuid(probe, timeout=1)
    except AssertionError:      # lost, or late: the next probe reads past it
        return False
    return True


def test_subscriptions_killed_by_redis_come_back_and_repair_the_gap(redis, nodes, open_ws):
    channel = unique("ch")
    nodes[0].channel_config({channel: HISTORY})
    readers = [open_ws(node.connect(unique("u"), [channel])) for node in nodes]
    posted: list[dict] = []
    poster = threading.Thread(target=post_steadily, args=(nodes[1], channel, 1.5, posted))
    poster.start()
    time.sleep(0.5)
    assert redis.command("CLIENT", "KILL", "TYPE", "pubsub").startswith(b":")
    poster.join()
    sentinel = nodes[2].sentinel(channel)
    for reader in readers:
        assert messages(reader.until_uuid(sentinel, timeout=10)) == [i["uuid"] for i in posted]
    for node in nodes:
        assert any(shard["subscription_reconnects"] >= 1 for shard in stats(node))


def test_a_silent_subscription_is_found_by_the_probe_and_repaired(proxied, open_ws):
    proxy, nodes = proxied
    kept, unkept = unique("kept"), unique("unkept")
    nodes[1].channel_config({kept: HISTORY, unkept: {}})
    reply = nodes[0].connect(unique("u"), [kept, unkept])
    silenced = open_ws(reply)
    assert proxy.silence_subscriptions() >= 1
    stalled = time.monotonic()
    during = [nodes[1].say(kept, str(n)) for n in range(10)]
    lost = [nodes[1].say(unkept, str(n)) for n in range(4)]
    got = silenced.take(len(during), timeout=PROBE_TIMEOUT + 6)
    assert time.monotonic() - stalled < PROBE_TIMEOUT + 4
    assert got == [delivered(item) for item in during]      # read back from history
    after = nodes[1].say(unkept, "after")
    assert messages(silenced.until_uuid(after["uuid"])) == []
    figures = stats(nodes[0])
    assert sum(shard["subscription_stalls"] for shard in figures) >= 1
    assert sum(shard["gaps_repaired"] for shard in figures) >= len(during)
    assert sum(shard["gaps_lost"] for shard in figures) >= len(lost)


def test_clients_of_a_killed_node_resume_on_another_and_lose_nothing(nodes):
    channel = unique("ch")
    nodes[0].channel_config({channel: HISTORY})
    reader = Reader(nodes[2], unique("u"), [channel])
    client = reader.connect(nodes[2])
    reader.read(client, until=nodes[0].say(channel, "first")["uuid"])
    posted: list[dict] = []
    poster = threading.Thread(target=post_steadily, args=(nodes[1], channel, 1.5, posted))
    poster.start()
    time.sleep(0.3)
    nodes[2].kill()
    reader.read(client)                                  # until it is dropped
    client = reader.connect(nodes[0])                    # back through another node
    poster.join()
    marker = nodes[1].sentinel(channel)
    reader.read(client, until=marker)
    client.close()
    assert reader.statuses[-1][channel]["recovered"] is True
    got = [e["uuid"] for e in reader.got[channel]]
    assert got[1:] == [item["uuid"] for item in posted] + [marker]


def test_a_resume_ahead_of_a_lagging_subscription_repeats_nothing(proxied):
    """Redis answers a resume's history read at once, while the messages it holds are still on
    their way down the shard's subscription (behind the activation of the new connection):
    they come once, as catch-up, never again live."""
    proxy, nodes = proxied
    channel = unique("ch")
    nodes[1].channel_config({channel: HISTORY})
    reader = Reader(nodes[0], unique("u"), [channel])
    client = reader.connect(nodes[0], conn_id=conn_id_on(0, 2))
    first = nodes[1].say(channel, "first")
    reader.read(client, until=first["uuid"])
    client.close()                    # its connection ends with it
    assert proxy.lag_subscriptions(0.5) >= 1
    reply = nodes[0].connect(reader.username, [channel], conn_id=conn_id_on(0, 2))
    missed = [nodes[1].say(channel, str(n)) for n in range(5)]
    client = open_websocket(with_query(reply["ws_url"], since=reader.positions))
    marker = nodes[1].sentinel(channel)
    reader.read(client, until=marker, timeout=15)
    client.close()
    assert reader.statuses[-1][channel]["recovered"] is True
    got = [e["uuid"] for e in reader.got[channel]]
    assert got == [first["uuid"]] + [item["uuid"] for item in missed] + [marker]


def test_no_log_or_error_shows_the_redis_password():
    """A node started while its Redis is away says so by address; an invalid URL is quoted
    without its password (logs keep both)."""
    password, where = "pw-" + unique("secret"), f"127.0.0.1:{free_port()}"
    url = f"redis://:{password}@{where}/0"
    node = Server(1, {"SHARDCAST_REDIS_URL": url, "SHARDCAST_REDIS_TIMEOUT": "0.5"})
    node.launch()       # not ready while Redis is away: its log says when it serves
    try:
        wait_until(lambda: "shardcast API on" in node.log_text(), timeout=30)
        logged = node.log_text()
    finally:
        node.stop()
    assert f"Redis at {where} is not reachable yet" in logged
    invalid = subprocess.run([*node.command(), "--redis-url", url.replace("/0", "/db")],
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert invalid.returncode != 0 and f"redis_url = 'redis://:***@{where}/db'" in invalid.stderr
    assert password not in logged + invalid.stdout + invalid.stderr


def test_ready_says_redis_is_away_while_health_stays():
    """On a Redis with a password (AUTH from the URL): /ready, the startup line and the logs
    name Redis by its address only."""
    password = "pw-" + unique("secret")
    redis = RedisServer(password=password).start()
    nodes = start_nodes(redis.url(), count=1)
    try:
        node = nodes[0]
        assert node.get("/ready", sign=False).status_code == 200
        assert node.info()["channels"] == {}       # an answer read from Redis
        redis.stop()
        ready = node.get("/ready", sign=False)
        assert ready.status_code == 503
        assert ready.json()["down"]["redis"] == f"unreachable at 127.0.0.1:{redis.port}"
        assert node.get("/health", sign=False).status_code == 200
        redis.start()
        wait_until(lambda: node.get("/ready", sign=False).status_code == 200, timeout=10)
        assert f"cluster at 127.0.0.1:{redis.port}" in node.log_text()
        assert password not in node.log_text() + ready.text
    finally:
        nodes.stop()
        redis.close()

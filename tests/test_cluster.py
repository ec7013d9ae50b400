"""Several nodes over one Redis are one broker (API.md § Cluster): three nodes of two shards,
each API call made on one node and observed on others."""

from __future__ import annotations

from urllib.parse import urlsplit
from zlib import crc32

from browser import run_e2e
from contract import delivered, settings, unique, wait_until
from harness import ADMIN_PASSWORD, ClusterNodes, Server, owned_by

MESSAGES = 12


def node_of(cluster: ClusterNodes, reply: dict) -> Server:
    port = urlsplit(reply["ws_url"]).port
    return next(node for node in cluster if port in node.ws_ports)


def test_ws_url_names_the_node_and_shard_holding_the_connection(cluster):
    for node in cluster:
        reply = node.connect(unique("u"))
        shard = crc32(reply["conn_id"].encode()) % node.workers
        assert urlsplit(reply["ws_url"]).port == node.ws_ports[shard]


def test_message_on_any_node_reaches_every_subscriber_once_in_one_order(cluster, open_ws):
    channel = unique("ch")
    cluster[0].channel_config({channel: {}})
    readers = [open_ws(node.connect(unique("u"), [channel])) for node in cluster for _ in range(2)]
    posted = [cluster[n % len(cluster)].say(channel, str(n)) for n in range(MESSAGES)]
    seen = [reader.take(MESSAGES) for reader in readers]
    first = seen[0]
    assert sorted(e["uuid"] for e in first) == sorted(item["uuid"] for item in posted)
    by_uuid = {item["uuid"]: item for item in posted}
    assert first == [delivered(by_uuid[e["uuid"]]) for e in first]     # exactly Channelstream's
    assert all(got == first for got in seen)          # every subscriber: the same order
    # Each node's own posts stay in the order they were posted.
    for node_posts in (posted[n::len(cluster)] for n in range(len(cluster))):
        order = [e["uuid"] for e in first if e["uuid"] in {i["uuid"] for i in node_posts}]
        assert order == [item["uuid"] for item in node_posts]


def test_connection_commands_work_from_any_node(cluster, open_ws):
    a, b, c = cluster
    username, first, second = unique("u"), unique("ch"), unique("ch")
    reply = a.connect(username, [first])
    client = open_ws(reply)
    conn_id = reply["conn_id"]

    subscribed = b.subscribe(conn_id, [second])
    assert subscribed["channels"] == sorted([first, second])
    assert subscribed["subscribed_to"] == [second]
    item = c.say(second, "via c")
    assert client.next() == delivered(item)

    left = c.unsubscribe(conn_id, [first])
    assert left["unsubscribed_from"] == [first] and left["channels"] == [second]
    c.say(first, "not for me")
    assert client.until_uuid(c.sentinel(second)) == []

    (direct,) = c.message({"user": "b", "pm_users": [username], "message": {"pm": 1}})
    assert client.next() == delivered(direct)

    state = b.ok("POST", "/user_state", {"user": username, "user_state": {"k": 1}})
    assert state["changed_state"] == [{"key": "k", "value": 1}]

    assert c.ok("POST", "/disconnect", {"conn_id": conn_id}, sign=False) is True
    wait_until(lambda: not a.is_connected(conn_id), timeout=5)
    assert b.ok("POST", "/disconnect", {"conn_id": conn_id}, sign=False) is False


def test_listen_on_another_node_long_polls_the_holding_node(cluster):
    channel = unique("ch")
    reply = cluster[0].connect(unique("u"), [channel])
    item = cluster[2].say(channel, "polled")
    response = cluster[1].listen(reply["conn_id"])
    assert response.status_code == 200
    assert response.json() == [delivered(item, catchup=True)]


def test_connect_with_a_live_conn_id_on_another_node_joins_that_connection(cluster, open_ws):
    username, first, second = unique("u"), unique("ch"), unique("ch")
    reply = cluster[0].connect(username, [first])
    client = open_ws(reply)
    again = cluster[1].connect(username, [second], conn_id=reply["conn_id"])
    assert again["conn_id"] == reply["conn_id"] and again["ws_url"] == reply["ws_url"]
    item = cluster[2].say(second, "joined elsewhere")
    assert client.next() == delivered(item)


def test_direct_message_reaches_every_connection_of_the_user_on_every_node(cluster, open_ws):
    username = unique("u")
    clients = [open_ws(node.connect(username)) for node in cluster]
    (item,) = cluster[1].message({"user": "b", "pm_users": [username], "message": {"dm": 1}})
    for client in clients:
        assert client.next() == delivered(item)


def test_presence_with_member_lists_is_cluster_wide(cluster, open_ws):
    channel = unique("ch")
    config = {"notify_presence": True, "broadcast_presence_with_user_lists": True}
    alice, bob = unique("alice"), unique("bob")
    watcher = open_ws(cluster[0].connect(alice, [channel], channel_configs={channel: config}))
    joined = cluster[1].connect(bob, [channel], state_public_keys=["mood"],
                                user_state={"mood": "ok"})
    envelope = watcher.next()
    assert (envelope["type"], envelope["user"], envelope["message"]) == (
        "presence", bob, {"action": "joined"})
    assert envelope["state"] == {"mood": "ok"}
    assert envelope["users"] == sorted([{"user": alice, "state": {}},
                                        {"user": bob, "state": {"mood": "ok"}}],
                                       key=lambda member: member["user"])
    cluster[2].ok("POST", "/disconnect", {"conn_id": joined["conn_id"]}, sign=False)
    parted = watcher.next()
    assert (parted["user"], parted["message"], parted["users"]) == (
        bob, {"action": "parted"}, [{"user": alice, "state": {}}])


def test_user_state_change_reaches_members_on_every_node(cluster, open_ws):
    channel, username = unique("ch"), unique("u")
    cluster[0].channel_config({channel: {"notify_state": True}})
    own = open_ws(cluster[0].connect(username, [channel], state_public_keys=["mood"]))
    other = open_ws(cluster[1].connect(unique("v"), [channel]))
    cluster[2].ok("POST", "/user_state", {"user": username, "user_state": {"mood": "up"}})
    for client in (own, other):
        envelope = client.next()
        assert envelope["type"] == "user_state_change" and envelope["user"] == username
        assert envelope["message"] == {"state": {"mood": "up"},
                                       "changed": [{"key": "mood", "value": "up"}]}


def test_settings_history_edits_and_deletes_are_cluster_wide(cluster, open_ws):
    channel = unique("ch")
    configured = cluster[0].channel_config({channel: {"store_history": True, "history_size": 3}})
    assert configured["channels"][channel]["settings"] == settings(store_history=True,
                                                                   history_size=3)
    assert cluster[1].channel_info(channel)["settings"] == settings(store_history=True,
                                                                    history_size=3)
    client = open_ws(cluster[2].connect(unique("u"), [channel]))
    posted = [cluster[n % 3].say(channel, str(n)) for n in range(4)]
    client.take(4)
    assert [e["uuid"] for e in cluster[1].history(channel)] == [i["uuid"] for i in posted[1:]]

    cluster[1].ok("PATCH", "/message", [{"uuid": posted[2]["uuid"], "channel": channel,
                                          "message": {"text": "edited"}}])
    edit = client.next()
    assert edit["type"] == "message:edit" and edit["message"] == {"text": "edited"}
    assert cluster[2].history(channel)[1]["message"] == {"text": "edited"}

    cluster[0].ok("DELETE", "/message", [{"uuid": posted[3]["uuid"], "channel": channel}])
    assert client.next()["type"] == "message:delete"
    assert [e["uuid"] for e in cluster[1].history(channel)] == [posted[1]["uuid"],
                                                                 posted[2]["uuid"]]


def test_info_on_any_node_answers_for_the_whole_cluster(cluster, open_ws):
    channel = unique("ch")
    users = [unique("u") for _ in cluster]
    for node, username in zip(cluster, users):
        open_ws(node.connect(username, [channel], user_state={"where": node.api}))
    for node in cluster:
        info = node.info(channels=[channel], include_users=True)
        entry = info["channels"][channel]
        assert entry["users"] == sorted(users) and entry["total_connections"] == len(users)
        assert {u["user"]: u["state"]["where"] for u in info["users"]} == {
            username: n.api for n, username in zip(cluster, users)}


def test_info_pages_through_the_whole_cluster_on_any_node(cluster):
    """Each shard answers its part of a page and how many of its channels remain; seven
    channels that one shard owns (and one that is not a channel) come in pages of 3, 3, 1
    on every node, however the calls are spread over them."""
    names = sorted(owned_by(0, cluster[0].workers, unique("page")) for _ in range(7))
    for index, name in enumerate(names):
        cluster[index % len(cluster)].connect(unique("m"), [name])
    asked = [*names, unique("none")]
    for first in range(len(cluster)):
        pages, after = [], None
        while len(pages) < 5:
            node = cluster[(first + len(pages)) % len(cluster)]
            page = node.info(channels=asked, limit=3, **({"after": after} if after else {}))
            pages.append(page)
            after = page["next"]
            if after is None:
                break
        assert [list(page["channels"]) for page in pages] == [names[0:3], names[3:6], names[6:]]
        assert [page["remaining"] for page in pages] == [4, 1, 0]


def test_admin_json_shows_every_node_and_cluster_totals(cluster, open_ws):
    clients = [open_ws(node.connect(unique("u"))) for node in cluster]
    admin = wait_until(lambda: _admin_with(cluster[1], len(clients)), timeout=10)
    nodes = admin["nodes"]
    assert [node["node_id"] for node in nodes] == ["node0", "node1", "node2"]
    for node, server in zip(nodes, cluster):
        assert node["shards"] == server.workers and node["connections"] >= 1
        assert node["address"].endswith(f":{server.api_port}") and node["last_seen"] > 0
    assert admin["total_connections"] == sum(node["connections"] for node in nodes)


def _admin_with(node: Server, connections: int) -> dict | None:
    admin = node.ok("GET", "/admin/admin.json")
    return admin if all(n["connections"] >= 1 for n in admin["nodes"]) else None


def test_metrics_show_redis_health_and_the_nodes(cluster):
    text = cluster[0].get("/metrics", sign=False).text
    assert "shardcast_redis_up 1.0" in text
    assert "shardcast_cluster_nodes 3.0" in text
    for family in ("shardcast_redis_latency_seconds", "shardcast_redis_subscription_lag_seconds",
                   "shardcast_redis_reconnects_total", "shardcast_redis_gaps_repaired_total",
                   "shardcast_redis_gaps_lost_total", 'shardcast_node_connections{node="node2"}'):
        assert family in text, family


def test_admin_panel_shows_every_node_in_chromium(cluster):
    run_e2e("admin_cluster.e2e.mjs", cluster[0], ADMIN_PASSWORD=ADMIN_PASSWORD,
            NODES=str(len(cluster)))

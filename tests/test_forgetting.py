"""What nobody uses is forgotten. Users outlive their connections until ``gc_users_after`` idle
(API.md), here 1 s, on one node and on a cluster of two: without a connection they are
forgotten, state and all; connected for longer than that, they are not. In a cluster, where
their keys (and those of a channel without members, after ``history_ttl``) expire in Redis,
the nodes also prune the sets that admin.json counts and an unfiltered /info reads."""

from __future__ import annotations

import time

import pytest

from contract import unique, wait_until
from harness import CONTRACT_ENV, ClusterNodes, Server

GC_USERS_AFTER = 1.0
SETTINGS = {"SHARDCAST_GC_USERS_AFTER": str(GC_USERS_AFTER), "SHARDCAST_NODE_TIMEOUT": "3"}
HISTORY_TTL = 1.0


@pytest.fixture(params=["one node", "cluster"])
def nodes(request, redis_server):
    if request.param == "one node":
        server = Server(2, {**CONTRACT_ENV, **SETTINGS}).start()
        yield [server]
        server.stop()
        return
    cluster = ClusterNodes(redis_server.url(), count=2, **SETTINGS).start()
    yield cluster.nodes
    cluster.stop()


def remembered(node: Server) -> int:
    return node.ok("GET", "/admin/admin.json")["remembered_user_count"]


def test_users_without_connections_are_forgotten_after_gc_users_after(nodes, open_ws):
    stays = unique("stays")
    open_ws(nodes[0].connect(stays, user_state={"mood": "here"}))
    gone = [unique("gone") for _ in range(4)]
    for index, user in enumerate(gone):
        node = nodes[index % len(nodes)]
        conn_id = node.connect(user, user_state={"mood": "leaving"})["conn_id"]
        node.ok("POST", "/disconnect", {"conn_id": conn_id})
    wait_until(lambda: remembered(nodes[-1]) == 1, timeout=GC_USERS_AFTER + 10)
    back = nodes[0].connect(gone[0], fresh_user_state={"mood": "new"})
    assert back["state"] == {"mood": "new"}         # its old state went with it
    time.sleep(GC_USERS_AFTER * 2)
    assert nodes[0].connect(stays)["state"] == {"mood": "here"}


def test_channels_left_are_forgotten_by_a_cluster(redis_server, open_ws):
    cluster = ClusterNodes(redis_server.url(), count=2, SHARDCAST_HISTORY_TTL=HISTORY_TTL,
                           SHARDCAST_NODE_TIMEOUT=3).start()
    try:
        kept, left = unique("kept"), [unique("left") for _ in range(5)]
        open_ws(cluster[0].connect(unique("u"), [kept]))
        for name in left:
            conn_id = cluster[1].connect(unique("u"), [name])["conn_id"]
            cluster[1].ok("POST", "/disconnect", {"conn_id": conn_id})
        assert channels(cluster[0]) == 6
        wait_until(lambda: channels(cluster[1]) == 1, timeout=HISTORY_TTL + 10)
        assert list(cluster[0].info()["channels"]) == [kept]
        time.sleep(HISTORY_TTL * 2)
        assert channels(cluster[0]) == 1
    finally:
        cluster.stop()


def channels(node: Server) -> int:
    return node.ok("GET", "/admin/admin.json")["total_channels"]

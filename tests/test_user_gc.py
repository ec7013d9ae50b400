"""API.md: users outlive their connections until ``gc_users_after`` idle. Here it is 1 s, on one
node and on a cluster of two (where the users' keys expire in Redis and the nodes prune the
set that admin.json counts): users without a connection are forgotten, state and all, and a
user connected for longer than that is not."""

from __future__ import annotations

import time

import pytest

from contract import unique, wait_until
from harness import CONTRACT_ENV, ClusterNodes, Server

GC_USERS_AFTER = 1.0
SETTINGS = {"SHARDCAST_GC_USERS_AFTER": str(GC_USERS_AFTER), "SHARDCAST_NODE_TIMEOUT": "3"}


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

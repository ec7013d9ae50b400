"""API.md § GET|POST /admin/admin.json.

Totals are compared as deltas on a server of this module's own, so no other test moves them.
"""

import pytest

from contract import unique, wait_until
from harness import CONTRACT_ENV, Server

COUNTS = [
    "remembered_user_count",
    "unique_user_count",
    "total_connections",
    "total_channels",
    "total_messages",
    "total_unique_messages",
]
ADMIN_KEYS = {*COUNTS, "channels", "channels_left_out", "users", "uptime", "version", "shards"}
WORKERS = 3
CHANNELS_LISTED = 5


@pytest.fixture(scope="module")
def admin_server():
    server = Server(WORKERS, {**CONTRACT_ENV,
                              "SHARDCAST_ADMIN_CHANNELS_LIMIT": str(CHANNELS_LISTED)}).start()
    yield server
    server.stop()


def admin(server, method="GET"):
    return server.ok(method, "/admin/admin.json")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_admin_json_has_documented_fields(admin_server, method):
    stats = admin(admin_server, method)
    assert set(stats) == ADMIN_KEYS
    for key in COUNTS:
        assert isinstance(stats[key], int) and stats[key] >= 0, key


def test_admin_json_has_one_entry_per_shard(admin_server):
    shards = admin(admin_server)["shards"]
    assert isinstance(shards, list)
    assert len(shards) == WORKERS
    assert all(isinstance(shard, dict) and shard for shard in shards)


def test_admin_json_needs_signature(admin_server):
    assert admin_server.get("/admin/admin.json", sign=False).status_code == 403


def test_admin_json_counts_connections_and_channels_over_all_shards(admin_server):
    before = admin(admin_server)
    channels = [unique("ch") for _ in range(6)]
    for n in range(9):
        admin_server.connect(unique("u"), [channels[n % len(channels)]])
    after = admin(admin_server)
    assert after["total_connections"] - before["total_connections"] == 9
    assert after["total_channels"] - before["total_channels"] == 6


def test_admin_json_counts_users(admin_server):
    before = admin(admin_server)
    names = [unique("u") for _ in range(4)]
    for name in names + names:
        admin_server.connect(name)
    after = admin(admin_server)
    assert after["remembered_user_count"] - before["remembered_user_count"] == 4
    assert after["unique_user_count"] - before["unique_user_count"] == 4


def test_admin_json_connection_count_drops_on_disconnect(admin_server):
    conn_id = admin_server.connect(unique("u"))["conn_id"]
    before = admin(admin_server)["total_connections"]
    assert admin_server.post("/disconnect", {"conn_id": conn_id}, sign=False).json() is True
    wait_until(lambda: admin(admin_server)["total_connections"] == before - 1, 3.0)


def test_admin_json_lists_a_few_channels_and_counts_the_rest(admin_server):
    for _ in range(CHANNELS_LISTED + 2):
        admin_server.channel_config({unique("ch"): {"notify_state": True}})
    stats = admin(admin_server)
    names = [channel["name"] for channel in stats["channels"]]
    assert names == sorted(names) and len(names) == CHANNELS_LISTED
    assert stats["channels_left_out"] == stats["total_channels"] - CHANNELS_LISTED

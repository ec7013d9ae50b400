"""API.md § GET /listen (long polling)."""

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from contract import delivered, unique
from harness import WAKE_CONNECTIONS_AFTER

# Time for a /listen request to reach its shard before the test posts to it.
LISTEN_SETTLE = 0.3


def without_catchup(envelope):
    return {key: value for key, value in envelope.items() if key != "catchup"}


@pytest.fixture
def background():
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def test_listen_returns_empty_array_after_wake_connections_after(server):
    conn_id = server.connect(unique("u"), [unique("ch")])["conn_id"]
    started = time.monotonic()
    response = server.listen(conn_id)
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json() == []
    assert WAKE_CONNECTIONS_AFTER * 0.8 <= elapsed < WAKE_CONNECTIONS_AFTER + 3


def test_listen_wakes_for_a_message(server, background):
    channel = unique("ch")
    conn_id = server.connect(unique("u"), [channel])["conn_id"]
    assert server.listen(conn_id).json() == []  # nothing to catch up on from here
    pending = background.submit(server.listen, conn_id)
    time.sleep(LISTEN_SETTLE)
    item = server.say(channel, "wake up")
    response = pending.result(timeout=WAKE_CONNECTIONS_AFTER + 5)
    assert response.status_code == 200
    assert [without_catchup(e) for e in response.json()] == [without_catchup(delivered(item))]


def test_listen_collects_messages_arriving_together(server, background):
    channel = unique("ch")
    conn_id = server.connect(unique("u"), [channel])["conn_id"]
    assert server.listen(conn_id).json() == []
    pending = background.submit(server.listen, conn_id)
    time.sleep(LISTEN_SETTLE)
    posted = [server.say(channel, str(n))["uuid"] for n in range(3)]
    response = pending.result(timeout=WAKE_CONNECTIONS_AFTER + 5)
    assert [e["uuid"] for e in response.json()] == posted


def test_listen_delivers_direct_messages(server, witness):
    username = unique("u")
    reply = server.connect(username)
    seen = witness(server, reply)
    (item,) = server.message({"user": "b", "pm_users": [username], "message": {"dm": True}})
    seen.until_uuid(item["uuid"])
    assert server.listen(reply["conn_id"]).json() == [delivered(item, catchup=True)]


def test_listen_with_callback_returns_jsonp(server, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    seen = witness(server, reply)
    item = server.say(channel, "jsonp")
    seen.until_uuid(item["uuid"])
    response = server.listen(reply["conn_id"], callback="fn")
    assert response.status_code == 200
    body = response.text.strip()
    assert body.startswith("fn(") and body.endswith(")")
    assert json.loads(body[len("fn(") : -1]) == [delivered(item, catchup=True)]


def test_listen_with_callback_wraps_empty_batch(server):
    conn_id = server.connect(unique("u"))["conn_id"]
    body = server.listen(conn_id, callback="handle_1").text.strip()
    assert body.startswith("handle_1(") and body.endswith(")")
    assert json.loads(body[len("handle_1(") : -1]) == []


def test_listen_unknown_conn_is_401(server):
    assert server.listen(str(uuid.uuid4())).status_code == 401


def test_listen_after_disconnect_is_401(server):
    conn_id = server.connect(unique("u"))["conn_id"]
    assert server.get("/disconnect", params={"conn_id": conn_id}, sign=False).json() is True
    assert server.listen(conn_id).status_code == 401


@pytest.mark.parametrize("conn_id", ["not-a-uuid", "", "1234"])
def test_listen_invalid_conn_id_is_422(server, conn_id):
    assert server.listen(conn_id).status_code == 422


def test_listen_missing_conn_id_is_422(server):
    assert server.get("/listen", sign=False).status_code == 422

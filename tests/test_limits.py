"""Configured limits: each one refused with a clear error, nothing applied, the server serving on.

Servers of this module's own carry small limits, so that reaching them is cheap (one of them has
two shards: a connection and its user may live on different ones).
"""

from __future__ import annotations

import threading
import uuid

import pytest
from websockets.exceptions import ConnectionClosed

from contract import unique, wait_until
from harness import conn_id_on
from shardcast.routing import owner

BODY_LIMIT = 4096
MESSAGE_LIMIT = 1000
CHANNEL_LIMIT = 3
USER_CONNECTIONS = 2
STATE_KEYS = 3
FRAME_LIMIT = 1024
SHARD_CONNECTIONS = 3
LONG_POLLS = 2
MESSAGE_TOO_BIG = 1009


@pytest.fixture(scope="module")
def limited(server_pool):
    return server_pool.get(
        1,
        SHARDCAST_MAX_BODY_SIZE=BODY_LIMIT,
        SHARDCAST_MAX_MESSAGE_SIZE=MESSAGE_LIMIT,
        SHARDCAST_MAX_CHANNELS_PER_CONNECTION=CHANNEL_LIMIT,
        SHARDCAST_MAX_CONNECTIONS_PER_USER=USER_CONNECTIONS,
        SHARDCAST_MAX_STATE_KEYS=STATE_KEYS,
        SHARDCAST_MAX_CLIENT_FRAME_SIZE=FRAME_LIMIT,
    )


@pytest.fixture(scope="module")
def two_shards(server_pool):
    """The limits of ``limited`` on two shards: a connection's and its user's may differ."""
    return server_pool.get(
        2,
        SHARDCAST_MAX_CONNECTIONS_PER_USER=USER_CONNECTIONS,
        SHARDCAST_MAX_STATE_KEYS=STATE_KEYS,
    )


@pytest.fixture(scope="module")
def small_shard(server_pool):
    """A shard that holds three connections."""
    return server_pool.get(1, SHARDCAST_MAX_CONNECTIONS_PER_SHARD=SHARD_CONNECTIONS)


@pytest.fixture(scope="module")
def few_polls(server_pool):
    """A shard that holds two long polls, each for up to 3 s."""
    return server_pool.get(1, SHARDCAST_MAX_LONG_POLLS=LONG_POLLS,
                           SHARDCAST_WAKE_CONNECTIONS_AFTER=3)


def refused(response, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    return response.json()


def text_of(size: int) -> dict:
    """A message object of exactly ``size`` bytes of JSON."""
    return {"t": "x" * (size - len('{"t":""}'))}


# -- request bodies and message payloads --------------------------------------------------

def test_body_over_max_body_size_is_413(limited):
    body = refused(limited.post("/message", [{"user": "u", "channel": "c",
                                               "message": text_of(BODY_LIMIT)}]), 413)
    assert str(BODY_LIMIT) in body["request"][0]
    assert limited.get("/info").status_code == 200


def test_message_at_max_message_size_is_accepted(limited):
    limited.message({"user": "u", "channel": unique("c"), "message": text_of(MESSAGE_LIMIT)})


def test_the_limit_is_per_message_not_per_batch(limited):
    channel = unique("batch")
    limited.channel_config({channel: {"store_history": True}})
    items = [{"user": "u", "channel": channel, "message": text_of(MESSAGE_LIMIT)}] * 3
    limited.message(*items)
    assert len(limited.history(channel)) == 3


def test_a_dropped_item_over_max_message_size_is_still_422(limited):
    items = [{"user": "u", "message": text_of(MESSAGE_LIMIT + 1)}]   # no channel, no pm_users
    body = refused(limited.post("/message", items))
    assert "max_message_size" in body["0"]["message"][0]


def test_message_over_max_message_size_is_422_and_nothing_is_applied(limited):
    channel = unique("big")
    limited.channel_config({channel: {"store_history": True}})
    items = [{"user": "u", "channel": channel, "message": {"n": 1}},
             {"user": "u", "channel": channel, "message": text_of(MESSAGE_LIMIT + 1)}]
    body = refused(limited.post("/message", items))
    assert list(body) == ["1"] and "max_message_size" in body["1"]["message"][0]
    assert limited.history(channel) == []


def test_edit_over_max_message_size_is_422(limited):
    item = {"uuid": str(uuid.uuid4()), "channel": "c", "message": text_of(MESSAGE_LIMIT + 1)}
    body = refused(limited.patch("/message", [item]))
    assert "max_message_size" in body["0"]["message"][0]


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("message", [{"n": 2**64}, {"deep": nested(300)}],
                         ids=["integer-over-64-bits", "nested-300-deep"])
def test_message_that_cannot_be_written_as_json_is_422(limited, message):
    body = refused(limited.post("/message", [{"user": "u", "channel": "c", "message": message}]))
    assert "JSON" in body["0"]["message"][0]


def test_body_nested_deeper_than_the_decoder_allows_is_422(limited):
    depth = 1500
    raw = '[{"user": "u", "channel": "c", "message": {"a": ' + "[" * depth + "]" * depth + "}}]"
    body = refused(limited.post("/message", data=raw.encode()))
    assert body == {"_schema": ["JSON nested too deeply."]}


def test_state_integer_over_64_bits_is_422(limited):
    body = refused(limited.post("/connect", {"username": unique("u"),
                                             "user_state": {"n": 2**64}}))
    assert body == {"user_state": {"n": {"value": ["Expected `int` <= 9223372036854775807"]}}}


# -- connections, channels, users ---------------------------------------------------------

def test_channels_per_connection_are_limited_on_connect(limited):
    conn_id = str(uuid.uuid4())
    channels = [unique("c") for _ in range(CHANNEL_LIMIT + 1)]
    body = refused(limited.post("/connect", {"username": unique("u"), "conn_id": conn_id,
                                             "channels": channels}))
    assert "max_channels_per_connection" in body["channels"][0]
    assert not limited.is_connected(conn_id)
    assert limited.info(channels=channels)["channels"] == {}


def test_channels_per_connection_are_limited_on_subscribe(limited):
    first = [unique("c") for _ in range(CHANNEL_LIMIT - 1)]
    conn_id = limited.connect(unique("u"), first)["conn_id"]
    extra = [unique("c"), unique("c")]
    body = refused(limited.post("/subscribe", {"conn_id": conn_id, "channels": extra}))
    assert "max_channels_per_connection" in body["channels"][0]
    assert limited.subscribe(conn_id, first + extra[:1])["channels"] == sorted(first + extra[:1])


def test_connections_per_user_are_limited(limited):
    username = unique("u")
    first, second = (limited.connect(username)["conn_id"] for _ in range(USER_CONNECTIONS))
    third = str(uuid.uuid4())
    body = refused(limited.post("/connect", {"username": username, "conn_id": third,
                                             "user_state": {"seen": True}}))
    assert "max_connections_per_user" in body["username"][0]
    assert not limited.is_connected(third)
    assert limited.connect(username, conn_id=first)["state"] == {}   # a reused id: no new one
    limited.ok("GET", "/disconnect", params={"conn_id": second}, sign=False)
    assert limited.connect(username, conn_id=third)["conn_id"] == third


@pytest.mark.parametrize("where", ["limited", "two_shards"])
def test_refused_reconnect_does_not_keep_its_channels(where, request):
    """A reused conn_id whose user refuses the update (too many state keys) is left as it was;
    on two shards, the connection is on the shard its user is not."""
    server = request.getfixturevalue(where)
    username, kept = unique("u"), unique("c")
    conn_id = conn_id_on(1 - owner(username, 2), 2)
    server.connect(username, [kept], conn_id=conn_id)
    state = {f"k{n}": n for n in range(STATE_KEYS + 1)}
    refused(server.post("/connect", {"username": username, "conn_id": conn_id,
                                     "channels": [unique("c")], "user_state": state}))
    assert server.subscribe(conn_id, [kept])["channels"] == [kept]


def test_a_user_refusal_on_another_shard_undoes_the_new_connection(two_shards):
    username, channel = unique("u"), unique("c")
    for _ in range(USER_CONNECTIONS):
        two_shards.connect(username)
    conn_id = conn_id_on(1 - owner(username, 2), 2)
    body = refused(two_shards.post("/connect", {"username": username, "conn_id": conn_id,
                                                "channels": [channel]}))
    assert "max_connections_per_user" in body["username"][0]
    assert not two_shards.is_connected(conn_id)
    assert two_shards.channel_info(channel) is None


def test_state_keys_are_limited_on_connect(limited):
    username = unique("u")
    state = {f"k{n}": n for n in range(STATE_KEYS + 1)}
    body = refused(limited.post("/connect", {"username": username, "user_state": state}))
    assert "max_state_keys" in body["user_state"][0]
    refused(limited.post("/user_state", {"user": username, "user_state": {}}))   # not created


def test_state_keys_are_limited_on_user_state(limited):
    username = unique("u")
    limited.connect(username, user_state={"a": 1, "b": 2})
    body = refused(limited.post("/user_state", {"user": username,
                                                "user_state": {"c": 3, "d": 4}}))
    assert "max_state_keys" in body["user_state"][0]
    reply = limited.ok("POST", "/user_state", {"user": username,
                                               "user_state": {"a": 5, "c": 3}})
    assert reply["user_state"] == {"a": 5, "b": 2, "c": 3}


def test_full_shard_is_503_until_a_connection_leaves(small_shard):
    conns = [small_shard.connect(unique("u"))["conn_id"] for _ in range(SHARD_CONNECTIONS)]
    try:
        body = refused(small_shard.post("/connect", {"username": unique("u")}), 503)
        assert "max_connections_per_shard" in body["shard"][0]
        small_shard.ok("GET", "/disconnect", params={"conn_id": conns.pop()}, sign=False)
        conns.append(small_shard.connect(unique("u"))["conn_id"])
    finally:
        for conn_id in conns:
            small_shard.ok("GET", "/disconnect", params={"conn_id": conn_id}, sign=False)


def test_long_polls_per_shard_are_limited(few_polls):
    conns = [few_polls.connect(unique("u"))["conn_id"] for _ in range(LONG_POLLS + 1)]
    held = [threading.Thread(target=few_polls.listen, args=(conn_id,))
            for conn_id in conns[:LONG_POLLS]]
    for thread in held:
        thread.start()
    try:
        wait_until(lambda: held_polls(few_polls) == LONG_POLLS, timeout=5)
        body = refused(few_polls.listen(conns[-1]), 503)
        assert "max_long_polls" in body["listen"][0]
    finally:
        for thread in held:
            thread.join(10)
    assert few_polls.listen(conns[-1]).status_code == 200   # the held ones are answered


def held_polls(server) -> int:
    return server.ok("GET", "/admin/admin.json")["shards"][0]["long_polls"]


# -- websocket frames -----------------------------------------------------------------------

def test_client_frame_over_max_client_frame_size_closes_with_1009(limited, open_ws):
    channel = unique("c")
    big = open_ws(limited.connect(unique("u"), [channel]))
    other = open_ws(limited.connect(unique("u"), [channel]))
    big.connection.send("x" * (FRAME_LIMIT + 1))
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            big.connection.recv(timeout=5)
    assert closed.value.rcvd.code == MESSAGE_TOO_BIG
    posted = limited.say(channel)
    assert other.next()["uuid"] == posted["uuid"]

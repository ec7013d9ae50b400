"""API.md § POST /subscribe, POST /unsubscribe."""

import uuid

import pytest

from contract import settings, unique

UNKNOWN_CONNECTION = {"conn_id": ["Unknown connection"]}


def test_subscribe_reports_all_channels_and_newly_joined(server):
    old, new_b, new_a = unique("old"), unique("b"), unique("a")
    conn_id = server.connect(unique("u"), [old])["conn_id"]
    reply = server.subscribe(conn_id, [new_b, old, new_a])
    assert set(reply) == {"channels", "channels_info", "subscribed_to"}
    assert reply["channels"] == sorted([old, new_a, new_b])
    assert reply["subscribed_to"] == sorted([new_a, new_b])
    assert set(reply["channels_info"]["channels"]) == {old, new_a, new_b}


def test_subscribe_to_joined_channel_is_not_newly_joined(server):
    channel = unique("ch")
    conn_id = server.connect(unique("u"), [channel])["conn_id"]
    reply = server.subscribe(conn_id, [channel])
    assert reply["channels"] == [channel]
    assert reply["subscribed_to"] == []
    assert reply["channels_info"]["channels"][channel]["total_connections"] == 1


def test_subscribe_creates_missing_channel_with_its_config(server):
    channel = unique("ch")
    conn_id = server.connect(unique("u"))["conn_id"]
    reply = server.subscribe(conn_id, [channel], channel_configs={channel: {"notify_state": True}})
    assert reply["channels_info"]["channels"][channel]["settings"] == settings(notify_state=True)


def test_subscribe_leaves_config_of_existing_channel_alone(server):
    channel = unique("ch")
    server.channel_config({channel: {"history_size": 4}})
    conn_id = server.connect(unique("u"))["conn_id"]
    reply = server.subscribe(conn_id, [channel], channel_configs={channel: {"history_size": 7}})
    assert reply["channels_info"]["channels"][channel]["settings"] == settings(history_size=4)


def test_subscribe_accepts_conn_id_as_query_parameter(server):
    channel = unique("ch")
    conn_id = server.connect(unique("u"))["conn_id"]
    response = server.post("/subscribe", {"channels": [channel]}, params={"conn_id": conn_id})
    assert response.status_code == 200
    assert response.json()["subscribed_to"] == [channel]


def test_subscribe_info_flags_shape_channels_info(server):
    username, channel = unique("u"), unique("ch")
    conn_id = server.connect(username, user_state={"p": 1, "q": 2}, state_public_keys=["p"])["conn_id"]
    reply = server.subscribe(conn_id, [channel], info={"return_public_state": True})
    assert reply["channels_info"]["users"] == [{"user": username, "state": {"p": 1}}]
    reply = server.subscribe(conn_id, [channel], info={"include_users": False})
    assert reply["channels_info"]["channels"][channel]["users"] == []
    assert reply["channels_info"]["users"] == []


def test_subscribed_connection_receives_channel_messages(server, open_ws):
    channel = unique("ch")
    reply = server.connect(unique("u"))
    client = open_ws(reply)
    server.subscribe(reply["conn_id"], [channel])
    posted = server.say(channel, "after subscribe")
    assert client.next()["uuid"] == posted["uuid"]


def test_subscribe_unknown_conn_id_is_422(server):
    response = server.post("/subscribe", {"conn_id": str(uuid.uuid4()), "channels": [unique("ch")]})
    assert response.status_code == 422
    assert response.json() == UNKNOWN_CONNECTION


@pytest.mark.parametrize("path", ["/subscribe", "/unsubscribe"])
@pytest.mark.parametrize("conn_id", ["not-a-uuid", "", 12, None])
def test_invalid_conn_id_is_422(server, path, conn_id):
    response = server.post(path, {"conn_id": conn_id, "channels": [unique("ch")]})
    assert response.status_code == 422
    assert "conn_id" in response.json()


@pytest.mark.parametrize("path", ["/subscribe", "/unsubscribe"])
def test_missing_conn_id_is_422(server, path):
    response = server.post(path, {"channels": [unique("ch")]})
    assert response.status_code == 422
    assert "conn_id" in response.json()


@pytest.mark.parametrize("path", ["/subscribe", "/unsubscribe"])
@pytest.mark.parametrize("channels", [[], "a-channel", None, {"a": 1}], ids=["empty", "str", "null", "object"])
def test_empty_or_non_list_channels_is_422(server, path, channels):
    conn_id = server.connect(unique("u"))["conn_id"]
    response = server.post(path, {"conn_id": conn_id, "channels": channels})
    assert response.status_code == 422
    assert "channels" in response.json()


@pytest.mark.parametrize("path", ["/subscribe", "/unsubscribe"])
def test_missing_channels_is_422(server, path):
    conn_id = server.connect(unique("u"))["conn_id"]
    response = server.post(path, {"conn_id": conn_id})
    assert response.status_code == 422
    assert "channels" in response.json()


def test_unsubscribe_reports_channels_left_and_remaining(server):
    keep, leave_b, leave_a = unique("keep"), unique("b"), unique("a")
    conn_id = server.connect(unique("u"), [keep, leave_a, leave_b])["conn_id"]
    reply = server.unsubscribe(conn_id, [leave_b, leave_a])
    assert set(reply) == {"channels", "channels_info", "unsubscribed_from"}
    assert reply["channels"] == [keep]
    assert reply["unsubscribed_from"] == sorted([leave_a, leave_b])
    assert set(reply["channels_info"]["channels"]) == {keep}


def test_unsubscribe_ignores_channels_not_joined(server):
    joined, other = unique("joined"), unique("other")
    server.connect(unique("someone"), [other])
    conn_id = server.connect(unique("u"), [joined])["conn_id"]
    reply = server.unsubscribe(conn_id, [other, unique("missing")])
    assert reply["unsubscribed_from"] == []
    assert reply["channels"] == [joined]
    assert server.channel_info(other)["total_connections"] == 1


def test_unsubscribe_from_channel_not_joined_sends_no_presence(server, join):
    channel = unique("presence")
    server.channel_config({channel: {"notify_presence": True}})
    _, observer = join(server, unique("observer"), [channel])
    outsider = server.connect(unique("outsider"))["conn_id"]
    server.unsubscribe(outsider, [channel])
    assert observer.until_uuid(server.sentinel(channel)) == []


def test_unsubscribed_connection_stops_receiving(server, open_ws):
    channel, stay = unique("ch"), unique("stay")
    reply = server.connect(unique("u"), [channel, stay])
    client = open_ws(reply)
    server.unsubscribe(reply["conn_id"], [channel])
    server.say(channel, "not for you")
    marker = server.sentinel(stay)
    assert client.until_uuid(marker) == []


def test_unsubscribe_unknown_conn_id_is_422(server):
    response = server.post("/unsubscribe", {"conn_id": str(uuid.uuid4()), "channels": [unique("ch")]})
    assert response.status_code == 422
    assert response.json() == UNKNOWN_CONNECTION


def test_unsubscribe_updates_channel_members(server):
    stayer, leaver, channel = unique("stayer"), unique("leaver"), unique("ch")
    server.connect(stayer, [channel])
    conn_id = server.connect(leaver, [channel])["conn_id"]
    server.unsubscribe(conn_id, [channel])
    info = server.channel_info(channel)
    assert info["users"] == [stayer]
    assert info["total_users"] == 1
    assert info["total_connections"] == 1


def test_a_public_state_key_named_error_is_state_not_a_refusal(server):
    username, channel = unique("u"), unique("ch")
    conn_id = server.connect(username, user_state={"error": "none"},
                             state_public_keys=["error"])["conn_id"]
    reply = server.subscribe(conn_id, [channel], info={"return_public_state": True})
    assert reply["subscribed_to"] == [channel]
    assert reply["channels_info"]["users"] == [{"user": username, "state": {"error": "none"}}]

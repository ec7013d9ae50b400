"""API.md § GET /disconnect, POST /disconnect."""

import uuid

import pytest

from contract import unique, wait_until

REMOVAL_TIMEOUT = 3.0  # "within ~2 s"


def disconnect_get(server, conn_id):
    return server.get("/disconnect", params={"conn_id": conn_id}, sign=False)


def disconnect_post(server, conn_id):
    return server.post("/disconnect", {"conn_id": conn_id}, sign=False)


@pytest.mark.parametrize("disconnect", [disconnect_get, disconnect_post], ids=["GET", "POST"])
def test_disconnect_existing_connection_is_true(server, disconnect):
    conn_id = server.connect(unique("u"))["conn_id"]
    response = disconnect(server, conn_id)
    assert response.status_code == 200
    assert response.json() is True


@pytest.mark.parametrize("disconnect", [disconnect_get, disconnect_post], ids=["GET", "POST"])
def test_disconnect_unknown_connection_is_false(server, disconnect):
    response = disconnect(server, str(uuid.uuid4()))
    assert response.status_code == 200
    assert response.json() is False


@pytest.mark.parametrize("disconnect", [disconnect_get, disconnect_post], ids=["GET", "POST"])
def test_disconnect_twice_is_false_the_second_time(server, disconnect):
    conn_id = server.connect(unique("u"))["conn_id"]
    assert disconnect(server, conn_id).json() is True
    assert disconnect(server, conn_id).json() is False


def test_disconnect_removes_connection(server):
    channel = unique("ch")
    conn_id = server.connect(unique("u"), [channel])["conn_id"]
    assert disconnect_get(server, conn_id).json() is True
    wait_until(lambda: not server.is_connected(conn_id), REMOVAL_TIMEOUT)
    response = server.post("/subscribe", {"conn_id": conn_id, "channels": [channel]})
    assert response.status_code == 422
    assert server.listen(conn_id).status_code == 401


def test_disconnect_removes_only_that_connection(server):
    username, channel = unique("u"), unique("ch")
    gone = server.connect(username, [channel])["conn_id"]
    kept = server.connect(username, [channel])["conn_id"]
    assert disconnect_post(server, gone).json() is True
    assert server.is_connected(kept)
    info = server.channel_info(channel)
    assert info["total_connections"] == 1
    assert info["users"] == [username]


@pytest.mark.parametrize("conn_id", ["not-a-uuid", "", "0000"])
def test_disconnect_get_invalid_conn_id_is_422(server, conn_id):
    assert disconnect_get(server, conn_id).status_code == 422


def test_disconnect_get_missing_conn_id_is_422(server):
    assert server.get("/disconnect", sign=False).status_code == 422


@pytest.mark.parametrize("conn_id", ["not-a-uuid", "", 5, None, ["x"]])
def test_disconnect_post_invalid_conn_id_is_422(server, conn_id):
    assert disconnect_post(server, conn_id).status_code == 422


def test_disconnect_post_missing_conn_id_is_422(server):
    assert server.post("/disconnect", {}, sign=False).status_code == 422


@pytest.mark.parametrize("body", ["{not json", "", "[1, 2]", '"text"'], ids=["garbage", "empty", "array", "string"])
def test_disconnect_post_non_json_or_wrong_shape_is_422(server, body):
    response = server.post("/disconnect", data=body, sign=False, headers={"Content-Type": "application/json"})
    assert response.status_code == 422

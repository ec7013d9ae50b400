"""shardcast.client: the backend client, used as an application would, against a real server."""

import asyncio

import pytest

from contract import unique
from harness import Server
from processes import free_port
from shardcast.client import (AsyncClient, BadSignature, Client, NotFound, ServerUnreachable,
                              ValidationError)
from shardcast.schemas import ChannelConfig


@pytest.fixture(params=["request", "compat"], ids=["signed-request", "compat-header"])
def client(request, server3: Server):
    with Client(server3.api, server3.secret, signature=request.param) as client:
        yield client


def test_connect_publish_and_receive(client, server3, open_ws):
    room = unique("room")
    answer = client.connect(unique("alice"), [room], user_state={"status": "here"},
                            state_public_keys=["status"])
    assert answer["channels"] == [room]
    assert answer["public_state"] == {"status": "here"}
    ws = open_ws(answer)
    posted = client.publish(room, {"text": "hi"}, user="system")
    envelope = ws.next()
    assert envelope["uuid"] == posted["uuid"]
    assert envelope["message"] == {"text": "hi"}


def test_subscribe_unsubscribe_and_disconnect(client):
    rooms = [unique("a"), unique("b")]
    conn_id = client.connect(unique("bob"))["conn_id"]
    assert client.subscribe(conn_id, rooms)["subscribed_to"] == sorted(rooms)
    assert client.unsubscribe(conn_id, rooms[0])["unsubscribed_from"] == [rooms[0]]
    assert client.disconnect(conn_id) is True
    assert client.disconnect(conn_id) is False


def test_channel_config_history_edit_and_delete(client):
    room = unique("room")
    client.channel_config({room: ChannelConfig(store_history=True, history_size=5)})
    posted = client.publish(room, {"text": "first"}, user="carol")
    client.edit(posted["uuid"], channel=room, message={"text": "fixed"})
    history = client.info([room])["channels"][room]["history"]
    assert [entry["message"] for entry in history] == [{"text": "fixed"}]
    client.delete(posted["uuid"], channel=room)
    assert client.info([room])["channels"][room]["history"] == []
    page = client.info([room, unique("room")], limit=1)
    assert list(page["channels"]) == [room] and page["next"] is None


def test_user_state_and_admin(client):
    user = unique("dave")
    client.connect(user)
    answer = client.user_state(user, {"mood": "ok"}, state_public_keys=["mood"])
    assert answer["changed_state"] == [{"key": "mood", "value": "ok"}]
    assert client.admin()["total_connections"] >= 1


def test_message_list_as_channelstream_takes_it(client):
    room = unique("room")
    client.channel_config({room: {}})
    items = client.message([{"channel": room, "user": "u", "message": {"n": 1}},
                            {"user": "dropped: no channel, no pm_users"}])
    assert len(items) == 1 and items[0]["channel"] == room


def test_validation_error_names_the_fields(client):
    with pytest.raises(ValidationError) as caught:
        client.subscribe("5f0c1a52-6d5e-4d39-9d0a-0d6f2d1c7a11", ["x"])
    assert caught.value.status == 422
    assert caught.value.fields == ["conn_id"]
    assert caught.value.errors == {"conn_id": ["Unknown connection"]}
    assert "Unknown connection" in str(caught.value)


def test_wrong_secret_is_bad_signature(server3):
    for signature in ("request", "compat"):
        with Client(server3.api, "not-the-secret", signature=signature) as client:
            with pytest.raises(BadSignature) as caught:
                client.info()
            assert caught.value.status == 401


def test_unreachable_server():
    with Client(f"http://127.0.0.1:{free_port()}", "s", timeout=2) as client:
        with pytest.raises(ServerUnreachable, match="is shardcast running there"):
            client.info()


def test_wrong_url_is_not_found(server3):
    with Client(server3.api + "/not-shardcast", server3.secret) as client:
        with pytest.raises(NotFound):
            client.info()


def test_empty_secret_is_refused_at_once():
    with pytest.raises(ValueError, match="secret"):
        Client("http://127.0.0.1:1", "")


def test_async_client_does_the_same(server3, open_ws):
    async def scenario():
        async with AsyncClient(server3.api, server3.secret) as client:
            room = unique("room")
            answer = await client.connect(unique("erin"), [room])
            ws = open_ws(answer)
            posted = await client.publish(room, {"text": "async"}, user="system")
            with pytest.raises(ValidationError):
                await client.user_state(unique("nobody"), {"a": 1})
            return ws, posted

    ws, posted = asyncio.run(scenario())
    assert ws.next()["uuid"] == posted["uuid"]

"""API.md § POST /connect."""

import uuid
import zlib
from urllib.parse import parse_qs, urlsplit

from contract import CHANNEL_INFO_KEYS, is_canonical_uuid, is_timestamp, settings, unique

CONNECT_KEYS = {"conn_id", "username", "state", "public_state", "channels", "channels_info", "ws_url"}


def test_connect_reply_has_documented_fields(server):
    username = unique("u")
    reply = server.connect(username)
    assert set(reply) == CONNECT_KEYS
    assert reply["username"] == username
    assert reply["channels"] == []
    assert reply["channels_info"] == {"channels": {}, "users": []}


def test_connect_generates_canonical_uuid_conn_id(server):
    first = server.connect(unique("u"))["conn_id"]
    second = server.connect(unique("u"))["conn_id"]
    assert is_canonical_uuid(first) and is_canonical_uuid(second)
    assert first != second


def test_connect_uses_given_conn_id(server):
    conn_id = str(uuid.uuid4())
    assert server.connect(unique("u"), conn_id=conn_id)["conn_id"] == conn_id


def test_connect_conn_id_is_returned_canonical(server):
    conn_id = uuid.uuid4()
    assert server.connect(unique("u"), conn_id=str(conn_id).upper())["conn_id"] == str(conn_id)
    conn_id = uuid.uuid4()
    assert server.connect(unique("u"), conn_id=conn_id.hex)["conn_id"] == str(conn_id)


def test_connect_invalid_conn_id_is_422(server):
    response = server.post("/connect", {"username": unique("u"), "conn_id": "not-a-uuid"})
    assert response.status_code == 422
    assert set(response.json()) == {"conn_id"}


def test_connect_channels_are_sorted_request_list(server):
    names = [unique("c"), unique("a"), unique("b")]
    assert server.connect(unique("u"), names)["channels"] == sorted(names)


def test_connect_ws_url_points_at_owning_shard(server):
    reply = server.connect(unique("u"))
    url = urlsplit(reply["ws_url"])
    assert url.scheme == "ws"
    assert url.hostname == "127.0.0.1"
    assert url.port in server.ws_ports
    assert url.path == "/ws"
    assert parse_qs(url.query) == {"conn_id": [reply["conn_id"]]}


def test_connect_places_a_new_connection_on_its_users_shard(server3):
    """A generated conn_id is one owned by the user's shard (crc32 of the name modulo the
    shard count): that shard settles the user's side of /connect without asking another."""
    for _ in range(12):
        username = unique("u")
        reply = server3.connect(username)
        shard = zlib.crc32(username.encode()) % 3
        assert zlib.crc32(reply["conn_id"].encode()) % 3 == shard
        assert urlsplit(reply["ws_url"]).port == server3.ws_ports[shard]
        assert is_canonical_uuid(reply["conn_id"])


def test_connect_new_user_gets_fresh_user_state_merged_with_user_state(server):
    reply = server.connect(
        unique("u"), fresh_user_state={"a": 1, "b": "x"}, user_state={"b": "y", "c": 4}
    )
    assert reply["state"] == {"a": 1, "b": "y", "c": 4}


def test_connect_fresh_user_state_ignored_for_existing_user(server):
    username = unique("u")
    server.connect(username, fresh_user_state={"a": 1})
    reply = server.connect(username, fresh_user_state={"a": 2, "z": 3})
    assert reply["state"] == {"a": 1}


def test_connect_merges_user_state_into_existing_state(server):
    username = unique("u")
    server.connect(username, user_state={"a": 1, "b": 2})
    reply = server.connect(username, user_state={"b": 3, "c": 4.5, "d": True})
    assert reply["state"] == {"a": 1, "b": 3, "c": 4.5, "d": True}


def test_connect_sets_public_keys_on_every_connect(server):
    username = unique("u")
    first = server.connect(username, user_state={"a": 1, "b": 2}, state_public_keys=["a"])
    assert first["public_state"] == {"a": 1}
    second = server.connect(username)
    assert second["public_state"] == {}
    assert second["state"] == {"a": 1, "b": 2}
    third = server.connect(username, state_public_keys=["b", "a"])
    assert third["public_state"] == {"a": 1, "b": 2}


def test_connect_creates_missing_channel_with_its_config(server):
    channel = unique("ch")
    reply = server.connect(
        unique("u"), [channel], channel_configs={channel: {"store_history": True, "history_size": 3}}
    )
    info = reply["channels_info"]["channels"][channel]
    assert info["settings"] == settings(store_history=True, history_size=3)


def test_connect_missing_channel_without_config_gets_defaults(server):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    assert reply["channels_info"]["channels"][channel]["settings"] == settings()


def test_connect_leaves_config_of_existing_channel_alone(server):
    channel = unique("ch")
    server.connect(unique("u"), [channel], channel_configs={channel: {"notify_presence": True}})
    reply = server.connect(unique("u"), [channel], channel_configs={channel: {"store_history": True}})
    assert reply["channels_info"]["channels"][channel]["settings"] == settings(notify_presence=True)


def test_connect_channels_info_describes_requested_channels(server):
    username = unique("u")
    channels = sorted([unique("ch"), unique("ch")])
    reply = server.connect(username, channels, user_state={"k": "v"})
    info = reply["channels_info"]
    assert set(info["channels"]) == set(channels)
    for name in channels:
        channel = info["channels"][name]
        assert set(channel) == CHANNEL_INFO_KEYS
        assert is_canonical_uuid(channel["uuid"])
        assert channel["name"] == name
        assert channel["long_name"] is None
        assert channel["history"] == []
        assert is_timestamp(channel["last_active"])
        assert channel["total_connections"] == 1
        assert channel["users"] == [username]
        assert channel["total_users"] == 1
    assert info["users"] == [{"user": username, "state": {"k": "v"}}]


def test_connect_channels_info_lists_other_members_sorted(server):
    channel = unique("ch")
    names = [unique("m"), unique("m"), unique("m")]
    for name in names:
        reply = server.connect(name, [channel])
    assert reply["channels_info"]["channels"][channel]["users"] == sorted(names)
    assert reply["channels_info"]["channels"][channel]["total_users"] == 3
    assert sorted(entry["user"] for entry in reply["channels_info"]["users"]) == sorted(names)


def test_connect_info_flags_shape_channels_info(server):
    channel = unique("ch")
    username = unique("u")
    server.connect(username, [channel], user_state={"pub": 1, "priv": 2}, state_public_keys=["pub"])

    no_users = server.connect(username, [channel], state_public_keys=["pub"], info={"include_users": False})
    info = no_users["channels_info"]
    assert info["channels"][channel]["users"] == []
    assert info["channels"][channel]["total_users"] == 0
    assert info["users"] == []

    public = server.connect(username, [channel], state_public_keys=["pub"], info={"return_public_state": True})
    assert public["channels_info"]["users"] == [{"user": username, "state": {"pub": 1}}]

    full = server.connect(username, [channel], state_public_keys=["pub"])
    assert full["channels_info"]["users"] == [{"user": username, "state": {"pub": 1, "priv": 2}}]


def test_connect_info_channels_flag_is_ignored(server):
    channel, other = unique("ch"), unique("other")
    server.connect(unique("u"), [other])
    reply = server.connect(unique("u"), [channel], info={"channels": [other]})
    assert set(reply["channels_info"]["channels"]) == {channel}


def test_connect_info_include_history_false_empties_history(server):
    channel = unique("ch")
    server.connect(unique("u"), [channel], channel_configs={channel: {"store_history": True}})
    server.say(channel)
    with_history = server.connect(unique("u"), [channel])
    assert len(with_history["channels_info"]["channels"][channel]["history"]) == 1
    without = server.connect(unique("u"), [channel], info={"include_history": False})
    assert without["channels_info"]["channels"][channel]["history"] == []


def test_connect_reusing_live_conn_id_joins_more_channels(server):
    username = unique("u")
    first, second, third = unique("a"), unique("b"), unique("c")
    conn_id = server.connect(username, [first])["conn_id"]
    reply = server.connect(username, [second], conn_id=conn_id)
    assert reply["conn_id"] == conn_id
    assert reply["channels"] == [second]
    subscribed = server.subscribe(conn_id, [third])
    assert subscribed["channels"] == sorted([first, second, third])
    assert server.channel_info(first)["total_connections"] == 1
    assert server.channel_info(second)["total_connections"] == 1


def test_connect_second_connection_counts_separately(server):
    username, channel = unique("u"), unique("ch")
    server.connect(username, [channel])
    reply = server.connect(username, [channel])
    info = reply["channels_info"]["channels"][channel]
    assert info["total_connections"] == 2
    assert info["users"] == [username]
    assert info["total_users"] == 1


def test_connect_without_username_is_422(server):
    response = server.post("/connect", {"channels": []})
    assert response.status_code == 422
    assert "username" in response.json()

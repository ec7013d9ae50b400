"""API.md § POST /channel_config, and channel settings defaults (§ Objects)."""

import pytest

from contract import CHANNEL_INFO_KEYS, DEFAULT_SETTINGS, is_canonical_uuid, settings, unique


def test_channel_config_creates_channel_with_defaults_for_omitted_keys(server):
    channel = unique("ch")
    reply = server.channel_config({channel: {"notify_presence": True, "history_size": 3}})
    assert reply["channels"][channel]["settings"] == settings(notify_presence=True, history_size=3)


def test_channel_config_empty_config_gives_documented_defaults(server):
    channel = unique("ch")
    reply = server.channel_config({channel: {}})
    assert reply["channels"][channel]["settings"] == DEFAULT_SETTINGS


def test_channel_config_reply_is_info_without_history_or_users(server):
    channel = unique("ch")
    server.connect(unique("u"), [channel], channel_configs={channel: {"store_history": True}})
    server.say(channel)
    reply = server.channel_config({channel: {"store_history": True}})
    assert set(reply) == {"channels", "users"}
    assert reply["users"] == []
    info = reply["channels"][channel]
    assert set(info) == CHANNEL_INFO_KEYS
    assert is_canonical_uuid(info["uuid"])
    assert info["name"] == channel
    assert info["long_name"] is None
    assert info["history"] == []
    assert info["users"] == []
    assert info["total_users"] == 0
    assert info["total_connections"] == 1


def test_channel_config_creates_several_channels(server):
    first, second = unique("a"), unique("b")
    reply = server.channel_config({first: {}, second: {"notify_state": True}})
    assert set(reply["channels"]) == {first, second}
    assert server.channel_info(second)["settings"] == settings(notify_state=True)


def test_channel_config_empty_body_returns_empty_info(server):
    assert server.channel_config({}) == {"channels": {}, "users": []}


def test_channel_config_replaces_all_settings_of_existing_channel(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True, "history_size": 5, "notify_state": True}})
    reply = server.channel_config({channel: {"notify_presence": True}})
    assert reply["channels"][channel]["settings"] == settings(notify_presence=True)
    assert server.channel_info(channel)["settings"] == settings(notify_presence=True)


def test_channel_config_keeps_history_and_members(server):
    channel, username = unique("ch"), unique("u")
    server.connect(username, [channel], channel_configs={channel: {"store_history": True}})
    item = server.say(channel)
    server.channel_config({channel: {"store_history": True, "notify_presence": True}})
    info = server.channel_info(channel)
    assert [entry["uuid"] for entry in info["history"]] == [item["uuid"]]
    assert info["users"] == [username]
    assert info["total_connections"] == 1


def test_channel_config_keeps_channel_uuid(server):
    channel = unique("ch")
    first = server.channel_config({channel: {}})["channels"][channel]["uuid"]
    second = server.channel_config({channel: {"notify_state": True}})["channels"][channel]["uuid"]
    assert first == second


@pytest.mark.parametrize(
    "bad",
    [
        {"history_size": -1},
        {"history_size": "ten"},
        {"history_size": 2.5},
        {"notify_presence": "yes"},
        {"store_history": None},
        {"store_frames": [True]},
    ],
    ids=["negative-size", "text-size", "float-size", "text-bool", "null-bool", "list-bool"],
)
def test_channel_config_bad_value_is_422_and_nothing_created(server, bad):
    good, broken = unique("good"), unique("broken")
    response = server.post("/channel_config", {good: {}, broken: bad})
    assert response.status_code == 422
    assert broken in response.json()
    assert server.info(channels=[good, broken])["channels"] == {}


def test_channel_config_bad_value_leaves_existing_settings(server):
    channel = unique("ch")
    server.channel_config({channel: {"history_size": 4}})
    response = server.post("/channel_config", {channel: {"history_size": 6, "notify_state": "x"}})
    assert response.status_code == 422
    assert server.channel_info(channel)["settings"] == settings(history_size=4)


def test_channel_config_config_not_an_object_is_422(server):
    channel = unique("ch")
    response = server.post("/channel_config", {channel: ["notify_presence"]})
    assert response.status_code == 422
    assert server.info(channels=[channel])["channels"] == {}


def test_channel_config_name_limit_is_256(server):
    longest = "c" * 250 + unique("")[:6]
    assert len(longest) == 256
    assert longest in server.channel_config({longest: {}})["channels"]
    too_long = "d" * 251 + unique("")[:6]
    assert len(too_long) == 257
    response = server.post("/channel_config", {too_long: {}})
    assert response.status_code == 422
    assert too_long not in server.info(include_history=False, include_users=False)["channels"]


def test_channel_config_empty_name_is_422(server):
    assert server.post("/channel_config", {"": {}}).status_code == 422


def test_channel_config_unknown_setting_keys_are_dropped(server):
    channel = unique("ch")
    reply = server.channel_config({channel: {"store_history": True, "colour": "blue"}})
    assert reply["channels"][channel]["settings"] == settings(store_history=True)

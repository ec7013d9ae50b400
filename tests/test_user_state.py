"""API.md § POST /user_state, and users outliving their connections (§ Objects)."""

import pytest

from contract import is_canonical_uuid, is_timestamp, unique

USER_STATE_KEYS = {"user_state", "changed_state", "public_keys"}


def set_state(server, user, user_state=None, **body):
    return server.ok("POST", "/user_state", {"user": user, "user_state": user_state or {}, **body})


def state_of(server, user, channel):
    """The user's full state as /info reports it for a channel the user is in."""
    (entry,) = [e for e in server.info(channels=[channel])["users"] if e["user"] == user]
    return entry["state"]


def state_change(user, channel, state, changed):
    """The exact envelope, minus the server-made uuid and timestamp."""
    return {
        "type": "user_state_change",
        "user": user,
        "channel": channel,
        "catchup": False,
        "message": {"state": state, "changed": changed},
    }


def without_stamp(envelope):
    assert is_canonical_uuid(envelope["uuid"])
    assert is_timestamp(envelope["timestamp"])
    return {key: value for key, value in envelope.items() if key not in ("uuid", "timestamp")}


def test_user_state_of_unknown_user_is_422(server):
    response = server.post("/user_state", {"user": unique("nobody"), "user_state": {"a": 1}})
    assert response.status_code == 422
    assert response.json() == {"user": ["Unknown user"]}


def test_user_state_merges_and_returns_full_state(server):
    user = unique("u")
    server.connect(user, user_state={"a": 1, "b": 2})
    reply = set_state(server, user, {"b": 3, "c": "x", "d": 1.5, "e": False})
    assert set(reply) == USER_STATE_KEYS
    assert reply["user_state"] == {"a": 1, "b": 3, "c": "x", "d": 1.5, "e": False}


def test_user_state_changed_state_lists_changed_keys_in_request_order(server):
    user = unique("u")
    server.connect(user, user_state={"a": 1, "b": 2})
    reply = set_state(server, user, {"b": 2, "c": 3, "a": 5})
    assert reply["changed_state"] == [{"key": "c", "value": 3}, {"key": "a", "value": 5}]


def test_user_state_setting_absent_key_to_null_is_no_change(server):
    user = unique("u")
    server.connect(user, user_state={"a": 1})
    assert set_state(server, user, {"absent": None})["changed_state"] == []


def test_user_state_setting_present_key_to_null_is_a_change(server):
    user = unique("u")
    server.connect(user, user_state={"a": 1})
    reply = set_state(server, user, {"a": None})
    assert reply["changed_state"] == [{"key": "a", "value": None}]
    assert reply["user_state"]["a"] is None


def test_user_state_public_keys_replaced_when_given(server):
    user, channel = unique("u"), unique("ch")
    server.connect(user, [channel], user_state={"a": 1, "b": 2}, state_public_keys=["a"])
    assert set_state(server, user, state_public_keys=["b"])["public_keys"] == ["b"]
    public = server.info(channels=[channel], return_public_state=True)["users"]
    assert public == [{"user": user, "state": {"b": 2}}]


def test_user_state_public_keys_kept_when_omitted(server):
    user = unique("u")
    server.connect(user, user_state={"a": 1}, state_public_keys=["a"])
    assert set_state(server, user, {"a": 2})["public_keys"] == ["a"]


def test_user_state_empty_public_keys_clear_them(server):
    user = unique("u")
    server.connect(user, user_state={"a": 1}, state_public_keys=["a"])
    assert set_state(server, user, state_public_keys=[])["public_keys"] == []


@pytest.mark.parametrize("bad", [[1, 2], {"nested": 1}], ids=["list", "object"])
def test_user_state_bad_value_is_422_and_state_untouched(server, bad):
    user, channel = unique("u"), unique("ch")
    server.connect(user, [channel], user_state={"a": 1})
    response = server.post("/user_state", {"user": user, "user_state": {"a": 2, "bad": bad}})
    assert response.status_code == 422
    assert state_of(server, user, channel) == {"a": 1}


def test_user_outlives_its_connections(server):
    user = unique("u")
    conn_id = server.connect(user, user_state={"kept": True}, state_public_keys=["kept"])["conn_id"]
    assert server.get("/disconnect", params={"conn_id": conn_id}, sign=False).json() is True
    reply = set_state(server, user, {"more": 1})
    assert reply["user_state"] == {"kept": True, "more": 1}
    assert reply["public_keys"] == ["kept"]


def test_user_state_change_sent_to_members_of_notify_state_channels(server, join):
    subject, other, channel = unique("subject"), unique("other"), unique("ch")
    server.channel_config({channel: {"notify_state": True}})
    _, own = join(server, subject, [channel], user_state={"p": 0, "q": 0})
    _, peer = join(server, other, [channel])
    set_state(server, subject, {"p": 1, "q": 2}, state_public_keys=["p"])
    expected = state_change(subject, channel, {"p": 1}, [{"key": "p", "value": 1}])
    assert without_stamp(own.next()) == expected
    assert without_stamp(peer.next()) == expected


def test_user_state_change_with_only_private_keys_has_empty_changed(server, join):
    subject, channel = unique("subject"), unique("ch")
    server.channel_config({channel: {"notify_state": True}})
    join(server, subject, [channel], user_state={"p": 0, "q": 0}, state_public_keys=["p"])
    _, peer = join(server, unique("peer"), [channel])
    set_state(server, subject, {"q": 5})
    assert without_stamp(peer.next()) == state_change(subject, channel, {"p": 0}, [])


def test_user_state_without_change_sends_nothing(server, join):
    subject, channel = unique("subject"), unique("ch")
    server.channel_config({channel: {"notify_state": True}})
    join(server, subject, [channel], user_state={"p": 1})
    _, peer = join(server, unique("peer"), [channel])
    set_state(server, subject, {"p": 1, "absent": None})
    assert peer.until_uuid(server.sentinel(channel)) == []


def test_user_state_change_not_sent_without_notify_state(server, join):
    subject, channel = unique("subject"), unique("ch")
    server.channel_config({channel: {}})
    join(server, subject, [channel])
    _, peer = join(server, unique("peer"), [channel])
    set_state(server, subject, {"p": 1})
    assert peer.until_uuid(server.sentinel(channel)) == []


def test_user_state_change_sent_once_per_notify_state_channel(server, join):
    subject, first, second, quiet = unique("subject"), unique("a"), unique("b"), unique("quiet")
    server.channel_config({first: {"notify_state": True}, second: {"notify_state": True}, quiet: {}})
    join(server, subject, [first, second, quiet])
    _, peer = join(server, unique("peer"), [first, second, quiet])
    set_state(server, subject, {"x": 1})
    received = peer.take(2)
    assert sorted(e["channel"] for e in received) == sorted([first, second])
    assert all(e["type"] == "user_state_change" for e in received)
    assert peer.until_uuid(server.sentinel(quiet)) == []


def test_user_state_change_not_stored_in_history(server, join):
    subject, channel = unique("subject"), unique("ch")
    server.channel_config({channel: {"notify_state": True, "store_history": True}})
    _, own = join(server, subject, [channel])
    set_state(server, subject, {"x": 1})
    assert own.next()["type"] == "user_state_change"
    assert server.channel_info(channel)["history"] == []

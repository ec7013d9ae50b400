"""API.md § PATCH /message, DELETE /message."""

import json

from contract import delivered, is_timestamp, unique
from harness import received_before_sentinel
from rawhttp import open_socket, read_response, request


# ----------------------------------------------------------------------------- PATCH


def edit(server, **item):
    (echoed,) = server.ok("PATCH", "/message", [item])
    return echoed


def test_patch_reply_echoes_normalised_items(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    item = server.say(channel, "v1")
    echoed = edit(server, uuid=item["uuid"], channel=channel, message={"text": "v2"})
    assert echoed["uuid"] == item["uuid"]
    assert echoed["channel"] == channel
    assert echoed["message"] == {"text": "v2"}
    assert is_timestamp(echoed["edited"])


def test_patch_updates_history_entry(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    item = server.say(channel, "v1", user="alice")
    other = server.say(channel, "untouched")
    echoed = edit(
        server, uuid=item["uuid"], channel=channel, message={"text": "v2"}, user="alice2",
        timestamp="2020-01-02T03:04:05.000006",
    )  # fmt: skip
    entry, untouched = server.history(channel)
    assert entry["uuid"] == item["uuid"]
    assert entry["message"] == {"text": "v2"}
    assert entry["user"] == "alice2"
    assert entry["timestamp"] == "2020-01-02T03:04:05.000006"
    assert entry["edited"] == echoed["edited"]
    assert untouched["uuid"] == other["uuid"]
    assert untouched["message"] == {"text": "untouched"}
    assert untouched["edited"] is None


def test_patch_delivers_edit_envelope_with_sent_fields_only(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    item = server.say(channel, "v1")
    assert client.next()["uuid"] == item["uuid"]
    echoed = edit(server, uuid=item["uuid"], channel=channel, message={"text": "v2"})
    assert client.next() == {
        "type": "message:edit",
        "uuid": item["uuid"],
        "channel": channel,
        "edited": echoed["edited"],
        "message": {"text": "v2"},
    }


def test_patch_edit_envelope_carries_sent_user_and_timestamp(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    item = server.say(channel, "v1")
    client.next()
    edited = "2022-02-02T02:02:02.020202"
    edit(
        server, uuid=item["uuid"], channel=channel, user="editor", timestamp="2022-01-01T00:00:00.000001",
        edited=edited,
    )  # fmt: skip
    assert client.next() == {
        "type": "message:edit",
        "uuid": item["uuid"],
        "channel": channel,
        "edited": edited,
        "user": "editor",
        "timestamp": "2022-01-01T00:00:00.000001",
    }


def test_a_post_after_an_edit_reaches_members_after_it(server, join):
    """A PATCH and the POST after it, pipelined on one connection: members get the edit first.
    In a cluster an edit takes Redis round trips before its announcement, and the post sent
    after it used to reach the members first."""
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    _, client = join(server, unique("u"), [channel])
    item = server.say(channel, "v1")
    client.next()
    headers = {**server.sign(), "Content-Type": "application/json"}
    edited = json.dumps([{"uuid": item["uuid"], "channel": channel, "message": {"v": 2}}])
    posted = json.dumps([{"user": "u", "channel": channel, "message": {"v": 3}}])
    with open_socket(server.api_port) as sock:
        sock.sendall(request("PATCH", "/message", headers, edited.encode()) +
                     request("POST", "/message", headers, posted.encode()))
        assert [read_response(sock)[0] for _ in range(2)] == [200, 200]
    assert [client.next()["type"] for _ in range(2)] == ["message:edit", "message"]


def test_patch_respects_pm_and_exclude_users(server, crowd):
    channel, members = crowd(server)
    (a, _), (b, _), (c, _) = members
    item = server.say(channel, "v1")
    received_before_sentinel(server, channel, members)
    edit(server, uuid=item["uuid"], channel=channel, pm_users=[a, b], exclude_users=[b], message={"v": 2})
    got = received_before_sentinel(server, channel, members)
    assert [e["type"] for e in got[a]] == ["message:edit"]
    assert got[b] == [] and got[c] == []


def test_patch_direct_message_reaches_pm_users(server, open_ws):
    username = unique("dm")
    clients = [open_ws(server.connect(username)), open_ws(server.connect(username))]
    (item,) = server.message({"user": "b", "pm_users": [username], "message": {"v": 1}})
    echoed = edit(server, uuid=item["uuid"], pm_users=[username], message={"v": 2})
    for client in clients:
        assert client.next() == delivered(item)
        assert client.next() == {
            "type": "message:edit",
            "uuid": item["uuid"],
            "channel": None,
            "edited": echoed["edited"],
            "message": {"v": 2},
        }


def test_patch_without_uuid_is_422(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    response = server.patch("/message", [{"channel": channel, "message": {}}])
    assert response.status_code == 422
    assert "uuid" in response.json()["0"]


def test_patch_updates_stored_frame_when_not_in_history(server, open_ws, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    seen = witness(server, reply)
    item = server.say(channel, "v1")
    echoed = edit(server, uuid=item["uuid"], channel=channel, message={"text": "v2"})
    seen.until(lambda envelope: envelope["type"] == "message:edit")
    client = open_ws(reply)
    replay = client.until_uuid(server.sentinel(channel))
    originals = [e for e in replay if e["type"] == "message" and e["uuid"] == item["uuid"]]
    assert len(originals) == 1
    assert originals[0]["message"] == {"text": "v2"}
    assert originals[0]["edited"] == echoed["edited"]
    assert originals[0]["catchup"] is True


def test_patch_with_one_invalid_item_edits_nothing(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    item = server.say(channel, "v1")
    response = server.patch(
        "/message", [{"uuid": item["uuid"], "channel": channel, "message": {"text": "v2"}}, {"uuid": "nope"}]
    )
    assert response.status_code == 422
    assert set(response.json()) == {"1"}
    assert server.history(channel)[0]["message"] == {"text": "v1"}


# ----------------------------------------------------------------------------- DELETE


def test_delete_removes_history_entry(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    gone, kept = server.say(channel, "gone"), server.say(channel, "kept")
    server.ok("DELETE", "/message", [{"uuid": gone["uuid"], "channel": channel}])
    assert [entry["uuid"] for entry in server.history(channel)] == [kept["uuid"]]


def test_delete_delivers_delete_envelope(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    item = server.say(channel, "doomed")
    client.next()
    server.ok("DELETE", "/message", [{"uuid": item["uuid"], "channel": channel}])
    assert client.next() == {"type": "message:delete", "uuid": item["uuid"], "channel": channel}


def test_delete_respects_pm_and_exclude_users(server, crowd):
    channel, members = crowd(server)
    (a, _), (b, _), (c, _) = members
    item = server.say(channel, "doomed")
    received_before_sentinel(server, channel, members)
    server.ok("DELETE", "/message", [{"uuid": item["uuid"], "channel": channel, "exclude_users": [b]}])
    got = received_before_sentinel(server, channel, members)
    expected = [{"type": "message:delete", "uuid": item["uuid"], "channel": channel}]
    assert got == {a: expected, b: [], c: expected}


def test_delete_direct_message_reaches_pm_users(server, open_ws):
    username = unique("dm")
    client = open_ws(server.connect(username))
    (item,) = server.message({"user": "b", "pm_users": [username], "message": {}})
    assert client.next() == delivered(item)
    server.ok("DELETE", "/message", [{"uuid": item["uuid"], "pm_users": [username]}])
    assert client.next() == {"type": "message:delete", "uuid": item["uuid"], "channel": None}


def test_delete_removes_stored_frame_from_catchup(server, open_ws, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    seen = witness(server, reply)
    gone, kept = server.say(channel, "gone"), server.say(channel, "kept")
    server.ok("DELETE", "/message", [{"uuid": gone["uuid"], "channel": channel}])
    seen.until(lambda envelope: envelope["type"] == "message:delete")
    client = open_ws(reply)
    replay = client.until_uuid(server.sentinel(channel))
    messages = [e for e in replay if e["type"] == "message"]
    assert messages == [delivered(kept, catchup=True)]


def test_delete_with_one_invalid_item_deletes_nothing(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    item = server.say(channel, "survives")
    response = server.delete("/message", [{"uuid": item["uuid"], "channel": channel}, {"channel": channel}])
    assert response.status_code == 422
    assert set(response.json()) == {"1"}
    assert [entry["uuid"] for entry in server.history(channel)] == [item["uuid"]]


def test_delete_removes_direct_message_from_catchup(server, open_ws, witness):
    username = unique("dm")
    reply = server.connect(username)
    seen = witness(server, reply)
    gone, kept = server.message(
        {"user": "b", "pm_users": [username], "message": {"n": 1}},
        {"user": "b", "pm_users": [username], "message": {"n": 2}},
    )
    server.ok("DELETE", "/message", [{"uuid": gone["uuid"], "pm_users": [username]}])
    seen.until(lambda envelope: envelope["type"] == "message:delete")
    client = open_ws(reply)
    replay = client.until_uuid(server.sentinel(pm_users=[username]))
    assert [e for e in replay if e["type"] == "message"] == [delivered(kept, catchup=True)]


def test_delete_without_uuid_is_422(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    response = server.delete("/message", [{"channel": channel}])
    assert response.status_code == 422
    assert "uuid" in response.json()["0"]

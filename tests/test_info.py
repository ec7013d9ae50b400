"""API.md § GET|POST /info, and the Info object (§ Objects)."""

import pytest

from contract import CHANNEL_INFO_KEYS, is_canonical_uuid, is_timestamp, settings, unique


@pytest.fixture
def populated(server):
    """Two channels with history and members; user ``shared`` is in both."""
    first, second = unique("first"), unique("second")
    shared, only_first = unique("shared"), unique("only")
    configs = {first: {"store_history": True}, second: {"store_history": True}}
    server.connect(shared, [first, second], channel_configs=configs,
                   user_state={"pub": 1, "priv": 2}, state_public_keys=["pub"])  # fmt: skip
    server.connect(shared, [first], state_public_keys=["pub"])
    server.connect(only_first, [first], user_state={"x": "y"})
    posted = {first: server.say(first, "one")["uuid"], second: server.say(second, "two")["uuid"]}
    return {
        "first": first, "second": second, "shared": shared, "only_first": only_first, "posted": posted,
    }  # fmt: skip


def users_by_name(info):
    return {entry["user"]: entry["state"] for entry in info["users"]}


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_info_without_body_lists_every_channel_with_history_users_and_full_state(server, populated, method):
    info = server.ok(method, "/info")
    first = info["channels"][populated["first"]]
    assert set(first) == CHANNEL_INFO_KEYS
    assert [entry["uuid"] for entry in first["history"]] == [populated["posted"][populated["first"]]]
    assert first["users"] == sorted([populated["shared"], populated["only_first"]])
    assert populated["second"] in info["channels"]
    users = users_by_name(info)
    assert users[populated["shared"]] == {"pub": 1, "priv": 2}
    assert users[populated["only_first"]] == {"x": "y"}


def test_info_channel_info_fields(server, populated):
    channel = server.info(channels=[populated["first"]])["channels"][populated["first"]]
    assert set(channel) == CHANNEL_INFO_KEYS
    assert is_canonical_uuid(channel["uuid"])
    assert channel["name"] == populated["first"]
    assert channel["long_name"] is None
    assert channel["settings"] == settings(store_history=True)
    assert is_timestamp(channel["last_active"])
    assert channel["total_connections"] == 3
    assert channel["users"] == sorted([populated["shared"], populated["only_first"]])
    assert channel["total_users"] == 2


def test_info_body_without_info_key_is_422(server):
    response = server.post("/info", {"channels": []})
    assert response.status_code == 422
    assert "info" in response.json()


def test_info_channels_limits_the_listing(server, populated):
    info = server.info(channels=[populated["second"]])
    assert set(info["channels"]) == {populated["second"]}
    assert users_by_name(info) == {populated["shared"]: {"pub": 1, "priv": 2}}


def test_info_unknown_channel_names_are_ignored(server, populated):
    info = server.info(channels=[populated["first"], unique("unknown")])
    assert set(info["channels"]) == {populated["first"]}


def test_info_without_channels_lists_all(server, populated):
    info = server.info()
    assert {populated["first"], populated["second"]} <= set(info["channels"])


def test_info_exclude_channels(server, populated):
    info = server.info(exclude_channels=[populated["first"]])
    assert populated["first"] not in info["channels"]
    assert populated["second"] in info["channels"]
    both = server.info(channels=[populated["first"], populated["second"]], exclude_channels=[populated["first"]])
    assert set(both["channels"]) == {populated["second"]}


def test_info_include_history_false_empties_history(server, populated):
    info = server.info(channels=[populated["first"]], include_history=False)
    assert info["channels"][populated["first"]]["history"] == []
    assert info["channels"][populated["first"]]["users"] != []


def test_info_include_users_false_empties_users(server, populated):
    info = server.info(channels=[populated["first"]], include_users=False)
    channel = info["channels"][populated["first"]]
    assert channel["users"] == []
    assert channel["total_users"] == 0
    assert info["users"] == []
    assert len(channel["history"]) == 1


def test_info_return_public_state_gives_public_keys_only(server, populated):
    info = server.info(channels=[populated["first"]], return_public_state=True)
    users = users_by_name(info)
    assert users[populated["shared"]] == {"pub": 1}
    assert users[populated["only_first"]] == {}


def test_info_top_level_users_has_one_entry_per_member(server, populated):
    info = server.info(channels=[populated["first"], populated["second"]])
    names = [entry["user"] for entry in info["users"]]
    assert sorted(names) == sorted([populated["shared"], populated["only_first"]])
    assert all(set(entry) == {"user", "state"} for entry in info["users"])


def test_info_counts_connections_and_users_separately(server):
    channel, username = unique("ch"), unique("u")
    for _ in range(3):
        server.connect(username, [channel])
    channel_info = server.channel_info(channel)
    assert channel_info["total_connections"] == 3
    assert channel_info["users"] == [username]
    assert channel_info["total_users"] == 1


def test_info_history_entries_are_in_posting_order(server):
    channel = unique("ch")
    server.channel_config({channel: {"store_history": True}})
    posted = [server.say(channel, str(n))["uuid"] for n in range(4)]
    assert [entry["uuid"] for entry in server.channel_info(channel)["history"]] == posted


def test_info_channel_without_members_is_listed(server):
    channel = unique("ch")
    server.channel_config({channel: {}})
    channel_info = server.channel_info(channel)
    assert channel_info["users"] == []
    assert channel_info["total_connections"] == 0
    assert channel_info["total_users"] == 0


@pytest.mark.parametrize(
    "flags",
    [{"channels": "one"}, {"include_history": "no"}, {"include_users": [1]}, {"exclude_channels": 3}],
    ids=["channels-str", "history-str", "users-list", "exclude-int"],
)
def test_info_bad_flag_is_422(server, flags):
    assert server.post("/info", {"info": flags}).status_code == 422


# ----------------------------------------------------------------------------- pages (new)


def test_info_limit_pages_through_the_channels_by_name(server):
    tag = unique("page")
    names = [f"{tag}-{n}" for n in range(7)]
    members = {name: unique("m") for name in names}
    for name, user in members.items():
        server.connect(user, [name])
    pages, after = [], None
    while len(pages) < 5:
        flags = {"channels": names, "limit": 3, **({"after": after} if after else {})}
        page = server.info(**flags)
        pages.append(page)
        assert [entry["user"] for entry in page["users"]] == sorted(
            members[name] for name in page["channels"])
        after = page["next"]
        if after is None:
            break
    assert [list(page["channels"]) for page in pages] == [names[0:3], names[3:6], names[6:]]
    assert [page["remaining"] for page in pages] == [4, 1, 0]
    assert [page["next"] for page in pages] == [names[2], names[5], None]


def test_info_without_limit_has_no_page_keys(server):
    assert set(server.info()) == {"channels", "users"}
    assert set(server.ok("GET", "/info")) == {"channels", "users"}


@pytest.mark.parametrize("flags", [{"limit": 0}, {"limit": "3"}, {"limit": 2, "after": ""}],
                         ids=["limit-0", "limit-str", "after-empty"])
def test_info_bad_page_flag_is_422(server, flags):
    response = server.post("/info", {"info": flags})
    assert response.status_code == 422
    assert set(response.json()["info"]) <= {"limit", "after"}


@pytest.mark.parametrize("public", [False, True])
def test_info_users_are_the_same_whichever_shard_owns_them(server, public):
    """Each member's entry (state, and with include_connections its connections) is the same
    whether its user is owned by the channel's shard, which answers it with the channel, or by
    another shard, asked after."""
    channel = unique("members")
    expected = {}
    for index in range(9):
        user = unique("m")
        replies = [server.connect(user, [channel], user_state={"pub": index, "priv": -index},
                                  state_public_keys=["pub"]) for _ in range(1 + index % 2)]
        state = {"pub": index} if public else {"pub": index, "priv": -index}
        expected[user] = {"user": user, "state": state,
                          "connections": sorted(reply["conn_id"] for reply in replies)}
    info = server.info(channels=[channel], return_public_state=public, include_connections=True)
    assert info["users"] == [expected[user] for user in sorted(expected)]
    info = server.info(channels=[channel], return_public_state=public)
    assert info["users"] == [{"user": user, "state": expected[user]["state"]}
                             for user in sorted(expected)]

"""API.md § Catch-up.

Delivery is asynchronous, so each test waits on a ``witness`` (see conftest) until what it
posted has reached the connection's shard, and only then attaches the connection.
"""

from contract import delivered, unique

CHANNEL_FRAMES_KEPT = 100
DIRECT_FRAMES_KEPT = 50
RACE_ROUNDS = 60


def messages(envelopes):
    return [e for e in envelopes if e["type"] == "message"]


def test_catchup_replays_messages_posted_between_connect_and_open(server, open_ws, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    seen = witness(server, reply)
    posted = [server.say(channel, str(n)) for n in range(3)]
    seen.until_uuid(posted[-1]["uuid"])
    client = open_ws(reply)
    assert client.take(3) == [delivered(item, catchup=True) for item in posted]


def test_catchup_is_followed_by_live_messages(server, open_ws, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    seen = witness(server, reply)
    early = server.say(channel, "early")
    seen.until_uuid(early["uuid"])
    client = open_ws(reply)
    late = server.say(channel, "late")
    assert client.take(2) == [delivered(early, catchup=True), delivered(late)]


def test_catchup_never_replays_messages_posted_before_connect(server):
    for _ in range(RACE_ROUNDS):  # whichever way the shards interleave
        channel = unique("ch")
        server.connect(unique("first"), [channel])
        server.say(channel, "before")
        reply = server.connect(unique("u"), [channel])
        with server.ws(reply["ws_url"]) as client:
            assert client.until_uuid(server.sentinel(channel)) == []


def test_catchup_never_replays_messages_posted_before_subscribe(server):
    for _ in range(RACE_ROUNDS):
        channel = unique("ch")
        server.connect(unique("first"), [channel])
        reply = server.connect(unique("u"))
        server.say(channel, "before subscribe")
        server.subscribe(reply["conn_id"], [channel])
        with server.ws(reply["ws_url"]) as client:
            assert client.until_uuid(server.sentinel(channel)) == []


def test_catchup_off_when_store_frames_false(server, open_ws, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel], channel_configs={channel: {"store_frames": False}})
    seen = witness(server, reply)
    seen.until_uuid(server.say(channel, "not replayed")["uuid"])
    client = open_ws(reply)
    live = server.say(channel, "live")
    assert client.next() == delivered(live)


def post_across_channels_and_user(server, username: str, alpha: str, beta: str) -> list[dict]:
    """Channel and direct messages interleaved, in one request and over several."""
    posted = server.message({"user": "b", "channel": beta, "message": {"n": 1}},
                            {"user": "b", "pm_users": [username], "message": {"n": "pm"}})
    posted += [server.say(alpha, "2"), server.say(beta, "3")]
    posted += server.message({"user": "b", "pm_users": [username], "message": {"n": "pm 2"}},
                             {"user": "b", "channel": alpha, "message": {"n": 4}})
    return posted


def test_catchup_replays_channels_and_direct_messages_in_publication_order(server, open_ws,
                                                                           witness):
    username, alpha, beta = unique("u"), "a-" + unique("ch"), "b-" + unique("ch")
    reply = server.connect(username, [beta, alpha])
    seen = witness(server, reply)
    posted = post_across_channels_and_user(server, username, alpha, beta)
    seen.take(len(posted))
    client = open_ws(reply)
    assert client.take(len(posted)) == [delivered(item, catchup=True) for item in posted]


def test_listen_replays_channel_then_direct_message_as_posted(server, witness):
    """Channelstream answers [1, "pm"] to a /listen after POST [channel message 1, "pm"]."""
    username, alpha, beta = unique("u"), "a-" + unique("ch"), "b-" + unique("ch")
    reply = server.connect(username, [beta, alpha])
    seen = witness(server, reply)
    posted = post_across_channels_and_user(server, username, alpha, beta)
    seen.take(len(posted))
    assert server.listen(reply["conn_id"]).json() == [delivered(item, catchup=True)
                                                      for item in posted]


def test_catchup_replays_direct_messages(server, open_ws, witness):
    username = unique("u")
    reply = server.connect(username)
    seen = witness(server, reply)
    (item,) = server.message({"user": "b", "pm_users": [username], "message": {"dm": 1}})
    seen.until_uuid(item["uuid"])
    client = open_ws(reply)
    assert client.next() == delivered(item, catchup=True)


def test_catchup_skips_what_pm_users_kept_away(server, open_ws, witness):
    channel, username = unique("ch"), unique("u")
    reply = server.connect(username, [channel])
    seen = witness(server, reply)
    server.say(channel, "for someone else", pm_users=[unique("other")])
    for_me = server.say(channel, "for me", pm_users=[username])
    seen.until_uuid(for_me["uuid"])
    client = open_ws(reply)
    assert messages(client.until_uuid(server.sentinel(channel))) == [delivered(for_me, catchup=True)]


def test_catchup_skips_what_exclude_users_kept_away(server, open_ws, witness):
    channel, username = unique("ch"), unique("u")
    reply = server.connect(username, [channel])
    seen = witness(server, reply)
    server.say(channel, "not for me", exclude_users=[username])
    kept = server.say(channel, "for all")
    seen.until_uuid(kept["uuid"])
    client = open_ws(reply)
    assert messages(client.until_uuid(server.sentinel(channel))) == [delivered(kept, catchup=True)]


def test_catchup_keeps_last_100_channel_frames(server, open_ws, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    seen = witness(server, reply)
    items = [{"user": "b", "channel": channel, "message": {"n": n}} for n in range(CHANNEL_FRAMES_KEPT + 20)]
    posted = server.message(*items)
    seen.until_uuid(posted[-1]["uuid"])
    client = open_ws(reply)
    replay = client.until_uuid(server.sentinel(channel))
    assert replay == [delivered(item, catchup=True) for item in posted[-CHANNEL_FRAMES_KEPT:]]


def test_catchup_keeps_last_50_direct_messages(server, open_ws, witness):
    username = unique("u")
    reply = server.connect(username)
    seen = witness(server, reply)
    items = [{"user": "b", "pm_users": [username], "message": {"n": n}} for n in range(DIRECT_FRAMES_KEPT + 10)]
    posted = server.message(*items)
    seen.until_uuid(posted[-1]["uuid"])
    client = open_ws(reply)
    replay = client.until_uuid(server.sentinel(pm_users=[username]))
    assert replay == [delivered(item, catchup=True) for item in posted[-DIRECT_FRAMES_KEPT:]]


def test_catchup_is_delivered_by_listen(server, witness):
    channel = unique("ch")
    reply = server.connect(unique("u"), [channel])
    seen = witness(server, reply)
    item = server.say(channel, "waiting")
    seen.until_uuid(item["uuid"])
    response = server.listen(reply["conn_id"])
    assert response.status_code == 200
    assert response.json() == [delivered(item, catchup=True)]


def test_catchup_not_repeated_after_delivery(server):
    channel = unique("ch")
    conn_id = server.connect(unique("u"), [channel])["conn_id"]
    server.say(channel, "once")
    assert len(server.listen(conn_id).json()) == 1
    assert server.listen(conn_id).json() == []

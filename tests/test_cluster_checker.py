"""A randomized checker: publishers on every node post to several channels at once, in random
batches; every subscriber on every node must get every message of its channels exactly once,
all subscribers of a channel in the same order, and each publisher's messages in the order it
posted them."""

from __future__ import annotations

import random
import threading
from collections import defaultdict

from contract import delivered, unique

CHANNELS = 3
READERS_PER_NODE = 2
POSTS_PER_PUBLISHER = 40
SEED = 20261130


def publish(node, channels: list[str], publisher: str, rng: random.Random,
            posted: list[dict]) -> None:
    for _ in range(POSTS_PER_PUBLISHER):
        batch = [{"user": publisher, "channel": rng.choice(channels),
                  "message": {"publisher": publisher, "n": len(posted) + i}}
                 for i in range(rng.randint(1, 4))]
        posted += node.message(*batch)


def test_randomized_publishing_from_every_node_is_seen_once_in_one_order(cluster, open_ws):
    rng = random.Random(SEED)
    channels = [unique("rc") for _ in range(CHANNELS)]
    cluster[0].channel_config({name: {} for name in channels})
    readers = []            # (the channels it is in, its client)
    for node in cluster:
        for _ in range(READERS_PER_NODE):
            mine = rng.sample(channels, rng.randint(1, CHANNELS))
            readers.append((set(mine), open_ws(node.connect(unique("r"), mine))))
    posted: dict[str, list[dict]] = {}
    threads = []
    for index, node in enumerate(cluster):
        for publisher in (f"node{index}-a", f"node{index}-b"):
            posted[publisher] = []
            threads.append(threading.Thread(target=publish, args=(
                node, channels, publisher, random.Random(rng.random()), posted[publisher])))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    ends = {name: cluster[1].sentinel(name) for name in channels}

    orders: dict[str, list[str]] = {}
    for mine, client in readers:
        by_channel: dict[str, list[dict]] = defaultdict(list)
        open_channels = set(mine)
        while open_channels:
            envelope = client.next(timeout=10)
            if envelope["uuid"] in ends.values():
                open_channels.discard(envelope["channel"])
            else:
                by_channel[envelope["channel"]].append(envelope)
        for name in mine:
            got = by_channel[name]
            expected = [item for items in posted.values() for item in items
                        if item["channel"] == name]
            assert sorted(e["uuid"] for e in got) == sorted(i["uuid"] for i in expected)
            assert len({e["uuid"] for e in got}) == len(got)            # each once
            by_uuid = {item["uuid"]: item for item in expected}
            assert got == [delivered(by_uuid[e["uuid"]]) for e in got]
            order = [e["uuid"] for e in got]
            assert orders.setdefault(name, order) == order              # one order for all
            for items in posted.values():                               # each publisher's
                own = [i["uuid"] for i in items if i["channel"] == name]
                assert [u for u in order if u in set(own)] == own

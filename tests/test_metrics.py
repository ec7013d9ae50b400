"""/metrics (Prometheus text format) and structured JSON logs, on a server of this module's own."""

import json
import os
import signal

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from contract import unique, wait_until
from harness import CONTRACT_ENV, Server
from test_slow_consumer import PAYLOAD, StalledClient

WORKERS = 2
SEND_BUFFER = 64 * 1024


@pytest.fixture(scope="module")
def server():
    server = Server(WORKERS, {**CONTRACT_ENV, "SHARDCAST_LOG_FORMAT": "json",
                              "SHARDCAST_SEND_BUFFER_SIZE": str(SEND_BUFFER)}).start()
    yield server
    server.stop()


def scrape(server: Server) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}}."""
    response = requests.get(server.api + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def per_shard(samples: dict, name: str) -> dict[str, float]:
    return {dict(labels)["shard"]: value for labels, value in samples[name].items()}


def test_every_shard_reports_its_figures(server):
    samples = scrape(server)
    for name in ("shardcast_shard_up", "shardcast_connections", "shardcast_channels",
                 "shardcast_users", "shardcast_messages_published_total",
                 "shardcast_messages_delivered_total", "shardcast_bytes_sent_total",
                 "shardcast_slow_consumer_disconnects_total", "shardcast_shard_restarts_total",
                 "shardcast_ipc_pending_requests", "shardcast_ipc_queued_bytes"):
        assert set(per_shard(samples, name)) == {"0", "1"}, name
    assert set(per_shard(samples, "shardcast_shard_up").values()) == {1.0}


def test_messages_and_bytes_are_counted(server, join):
    before = scrape(server)
    room = unique("room")
    _, client = join(server, unique("u"), [room])
    for n in range(5):
        server.say(room, f"m{n}")
    client.take(5)
    after = scrape(server)

    def grown(name):
        return (sum(per_shard(after, name).values()) - sum(per_shard(before, name).values()))
    assert grown("shardcast_messages_published_total") == 5
    assert grown("shardcast_messages_delivered_total") == 5
    assert grown("shardcast_bytes_sent_total") > 5 * len("m0")
    assert sum(per_shard(after, "shardcast_connections").values()) >= 1


def test_api_requests_are_counted_and_timed_by_endpoint(server):
    room = unique("room")
    server.channel_config({room: {}})
    before = scrape(server)
    for _ in range(3):
        server.say(room)
    requests.get(server.api + f"/no/such/{unique('path')}")
    after = scrape(server)
    key = (("endpoint", "/message"), ("method", "POST"), ("status", "200"))
    counted = after["shardcast_api_requests_total"]
    assert counted[key] - before["shardcast_api_requests_total"].get(key, 0) == 3
    assert counted[(("endpoint", "other"), ("method", "GET"), ("status", "404"))] >= 1
    timed = after["shardcast_api_request_duration_seconds_count"]
    assert timed[(("endpoint", "/message"), ("method", "POST"))] >= 3


def test_slow_consumers_are_counted(server):
    room = unique("room")
    answer = server.connect(unique("slow"), [room])
    stalled = StalledClient(answer["ws_url"])
    items = [{"user": "feed", "channel": room, "message": {"text": PAYLOAD}}] * 50

    def dropped():
        server.message(*items)
        samples = scrape(server)
        return sum(per_shard(samples, "shardcast_slow_consumer_disconnects_total").values())
    try:
        assert wait_until(dropped, 20, interval=0.05) >= 1
    finally:
        stalled.sock.close()


def test_shard_restarts_are_counted_and_logged_as_json(server):
    stats = server.ok("GET", "/admin/admin.json")["shards"]
    os.kill(stats[1]["pid"], signal.SIGKILL)

    def restarted():
        samples = scrape(server)
        return (per_shard(samples, "shardcast_shard_restarts_total")["1"] == 1
                and per_shard(samples, "shardcast_shard_up")["1"] == 1)
    wait_until(restarted, 20, interval=0.3)
    records = [json.loads(line) for line in server.output().splitlines() if line.startswith("{")]
    died = [r for r in records if r["process"] == "supervisor" and "died" in r["message"]]
    assert died and died[0]["level"] == "error" and died[0]["logger"] == "shardcast.supervisor"
    assert {"time", "level", "process", "logger", "message"} <= set(died[0])

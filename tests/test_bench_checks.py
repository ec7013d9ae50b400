"""The bench's own rules: what a subscriber accepts as a frame, when a rate is sustained, what
the tables divide by what, what --workers names and when a cluster meets its targets."""

from __future__ import annotations

import orjson
import pytest

pytest.importorskip("rich", reason="the bench extra is not installed (pip install '.[bench]')")

from bench.cluster import Shape, parse_shapes  # noqa: E402
from bench.frames import body_decoder, frame_decoder, message_body, padding  # noqa: E402
from bench.goals import goal_lines, node_goal_lines  # noqa: E402
from bench.overload import MUST_BE_ZERO, next_rate, shortfalls  # noqa: E402
from bench.report import scenario_rows  # noqa: E402
from shardcast.envelopes import message  # noqa: E402

PAD = padding(8)


def published(**changes: object) -> dict:
    """The envelope shardcast sends for a bench message, with ``changes``."""
    item = {"channel": "c", "user": "bench", "uuid": "u-1", "timestamp": "2026-01-01T00:00:00",
            "message": {"p": "0.0", "s": 3, "t": 12.5, "pad": PAD}}
    return {**message(item), **changes}


def test_a_published_envelope_is_accepted_field_for_field() -> None:
    (envelope,) = frame_decoder(PAD)(orjson.dumps([published()]))
    assert (envelope.channel, envelope.message.p, envelope.message.s) == ("c", "0.0", 3)


@pytest.mark.parametrize("frame", [
    orjson.dumps([published(message={"p": "0.0", "s": 3, "t": 12.5, "pad": "xxxxxxxy"})]),
    orjson.dumps([published(message={"p": "0.0", "s": 3, "t": 12.5, "pad": PAD, "x": 1})]),
    orjson.dumps([published(message={"p": "0.0", "s": -1, "t": 12.5, "pad": PAD})]),
    orjson.dumps([published(user="other")]),
    orjson.dumps([published(catchup=True)]),
    orjson.dumps([published(type="message:edit")]),
    orjson.dumps(published()),
    orjson.dumps([published()])[:-5],
    orjson.dumps([published()]).replace(b'"c"', b'"\xff"'),
], ids=["padding", "extra-field", "negative-sequence", "user", "catchup", "type", "not-a-list",
        "truncated", "invalid-utf8"])
def test_a_frame_that_differs_from_what_was_published_is_refused(frame: bytes) -> None:
    with pytest.raises(ValueError):
        frame_decoder(PAD)(frame)


BODY = orjson.dumps(message_body("0.0", 3, 12.5, PAD))


def test_an_nchan_frame_is_accepted_when_it_is_the_body_published() -> None:
    stamp = body_decoder(PAD)(BODY)
    assert (stamp.p, stamp.s, stamp.t, stamp.pad) == ("0.0", 3, 12.5, PAD)


@pytest.mark.parametrize("frame", [
    BODY.replace(b",", b", "),
    orjson.dumps({"s": 3, "p": "0.0", "t": 12.5, "pad": PAD}),
    orjson.dumps({**message_body("0.0", 3, 12.5, PAD), "x": 1}),
    orjson.dumps(message_body("0.0", 3, 12.5, "xxxxxxxy")),
    orjson.dumps([message_body("0.0", 3, 12.5, PAD)]),
    BODY + b" ",
    BODY[:-1],
], ids=["spaces", "reordered", "extra-field", "padding", "in-a-list", "trailing-space",
        "truncated"])
def test_an_nchan_frame_that_is_not_byte_for_byte_the_body_is_refused(frame: bytes) -> None:
    with pytest.raises(ValueError):
        body_decoder(PAD)(frame)


def test_tables_divide_shardcast_by_each_other_server_and_w2_by_w1() -> None:
    runs = [{"scenario": "fanout", "target": target, "delivered_msgs_per_s": rate}
            for target, rate in (("shardcast w=1", 100.0), ("shardcast w=2", 150.0),
                                 ("channelstream 0.7.1", 10.0), ("nchan 1.3.6", 200.0))]
    header, rows = scenario_rows(runs, "fanout")
    assert header[5:] == ["w=1 / cs", "w=2 / cs", "w=1 / nchan", "w=2 / nchan", "w=2 / w=1"]
    (delivered,) = [row for row in rows if row[0].startswith("delivered_msgs_per_s")]
    assert delivered[5:] == ["10×", "15×", "0.5×", "0.75×", "1.5×"]


def test_a_rate_is_sustained_only_without_fault_within_the_latency_bound() -> None:
    clean = {**dict.fromkeys(MUST_BE_ZERO, 0), "lat_p99_ms": 40.0, "target_msgs_per_s": 100.0,
             "offered_msgs_per_s": 99.5}
    assert shortfalls(clean) == []
    assert shortfalls({**clean, "slow_consumer_closes": 2}) == ["slow_consumer_closes 2"]
    assert shortfalls({**clean, "lat_p99_ms": 140.0}) == ["p99 140 ms"]
    assert shortfalls({**clean, "offered_msgs_per_s": 80.0}) == ["publisher sent 80.0 msg/s"]


def test_the_search_doubles_halves_then_bisects() -> None:
    assert next_rate(200.0, None) == 400.0
    assert next_rate(None, 200.0) == 100.0
    assert next_rate(400.0, 800.0) == 566.0


def test_workers_name_one_node_or_nodes_over_redis() -> None:
    assert parse_shapes("1,2,3x1") == [Shape(1), Shape(2), Shape(1, nodes=3)]
    for bad in ("0", "2x0", "x2", "3y1", ""):
        with pytest.raises(ValueError):
            parse_shapes(bad)


def test_a_resumed_frame_carries_positions_and_starts_with_the_recovery() -> None:
    decode = frame_decoder(PAD, positions=True)
    recovery = {"type": "recovery", "channels": {"c": {"recovered": True, "epoch": "e",
                                                       "offset": 7}}}
    caught_up = published(catchup=True, epoch="e", offset=5)
    (status, envelope) = decode(orjson.dumps([recovery, caught_up]))
    assert status.channels["c"].recovered and (envelope.epoch, envelope.offset) == ("e", 5)
    with pytest.raises(ValueError):          # a message without its position
        decode(orjson.dumps([published(catchup=True)]))
    with pytest.raises(ValueError):          # catch-up where no resume was asked for
        frame_decoder(PAD)(orjson.dumps([caught_up]))


def test_cluster_targets_are_judged_against_one_node_of_the_same_run() -> None:
    node = {"scenario": "fanout", "target": "shardcast w=2", "nodes": None, "workers": 2,
            "delivered_msgs_per_s": 400_000.0, "options": {"clients": 1000}}
    cluster = {**node, "target": "shardcast 3 nodes × w=1", "nodes": 3, "workers": 1}
    nchan = {**node, "target": "nchan 1.3.6", "workers": 4, "delivered_msgs_per_s": 1.0}
    met, missed = (goal_lines([node, nchan, {**cluster, "delivered_msgs_per_s": rate}])[0]
                   for rate in (250_000.0, 150_000.0))
    assert "0.62× one node's 400,000" in met and met.endswith(": met.")
    assert missed.endswith(": NOT met.")
    slow = {"scenario": "latency", "nodes": None, "workers": 2, "target": "shardcast w=2",
            "lat_p99_ms": 2.5, "options": {"clients": 100, "rate": 200.0}}
    (line,) = goal_lines([slow, {**slow, "nodes": 3, "lat_p99_ms": 5.0, "target": "c"}])
    assert "Redis adds +2.50 ms" in line and line.endswith("NOT met.")


def test_node_targets_are_judged_on_each_run_of_one_shardcast_node() -> None:
    fanout = {"scenario": "fanout", "target": "shardcast w=2", "nodes": None, "workers": 2,
              "server_cpu_us_per_frame": 11.37, "server_cpu_us_per_msg": 0.39}
    api = {"scenario": "api", "target": "shardcast w=1", "nodes": None, "workers": 1,
           "server_cpu_us_per_msg": 21.46}
    others = [{**fanout, "target": "nchan 1.3.6"}, {**fanout, "nodes": 3},
              {**fanout, "failed": "boom"}, {**api, "scenario": "churn"}]
    assert node_goal_lines([fanout, *others, api]) == [
        "shardcast w=2, fanout: 11.4 µs of server CPU per websocket frame written; "
        "target ≤ 4: NOT met.",
        "shardcast w=2, fanout: 0.39 µs of server CPU per delivery; target ≤ 0.5: met.",
        "shardcast w=1, api: 21.5 µs of server CPU per POST /message; target ≤ 20: NOT met."]

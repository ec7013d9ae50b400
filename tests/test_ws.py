"""API.md § GET /ws (websocket transport)."""

import json
import uuid

import pytest
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from contract import delivered, unique
from harness import GC_HEARTBEAT_INTERVAL
from wsclient import open_websocket

REFUSED = (InvalidHandshake, OSError)


def ws_url(port, query):
    return f"ws://127.0.0.1:{port}/ws{query}"


def assert_refused(url):
    with pytest.raises(REFUSED):
        open_websocket(url).close()


def assert_closed_1000_without_data_or_refused(url):
    try:
        client = open_websocket(url)
    except REFUSED:
        return
    with client:
        try:
            data = client.connection.recv(timeout=3)
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1000, closed
            return
        except TimeoutError:
            raise AssertionError("websocket of an unknown connection was left open") from None
        raise AssertionError(f"websocket of an unknown connection received {data!r}")


def test_ws_unknown_conn_id_gets_no_data_and_is_closed_or_refused(server):
    for port in server.ws_ports:
        assert_closed_1000_without_data_or_refused(ws_url(port, f"?conn_id={uuid.uuid4()}"))


def test_ws_disconnected_conn_id_gets_no_data_and_is_closed_or_refused(server):
    reply = server.connect(unique("u"))
    assert server.post("/disconnect", {"conn_id": reply["conn_id"]}, sign=False).json() is True
    assert_closed_1000_without_data_or_refused(reply["ws_url"])


@pytest.mark.parametrize("query", ["?conn_id=not-a-uuid", "?conn_id=", "", "?other=1"])
def test_ws_invalid_or_missing_conn_id_is_refused(server, query):
    for port in server.ws_ports:
        assert_refused(ws_url(port, query))


def test_ws_server_frames_are_json_arrays_of_envelopes(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    item = server.say(channel, "framed")
    frame = client.recv_frame()
    while frame == []:  # a heartbeat may come first
        frame = client.recv_frame()
    assert frame == [delivered(item)]


def test_ws_client_heartbeat_frames_are_accepted(server, join):
    channel = unique("ch")
    _, client = join(server, unique("u"), [channel])
    for _ in range(3):
        client.connection.send(json.dumps({"type": "heartbeat"}))
    item = server.say(channel, "still open")
    assert client.next() == delivered(item)


def test_ws_heartbeat_is_an_empty_array(gc_server, open_ws):
    client = open_ws(gc_server.connect(unique("u")))
    assert client.recv_frame(timeout=GC_HEARTBEAT_INTERVAL + 3) == []


def test_ws_heartbeats_repeat_while_attached(gc_server, open_ws):
    client = open_ws(gc_server.connect(unique("u")))
    for _ in range(3):
        assert client.recv_frame(timeout=GC_HEARTBEAT_INTERVAL + 3) == []

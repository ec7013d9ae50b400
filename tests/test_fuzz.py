"""Fuzzing: whatever arrives at the API port, a shard's websocket port or an IPC decoder is
answered or refused cleanly — never a 5xx, never a crashed or restarted shard, never a hang.

The normal run tries FUZZ_EXAMPLES examples per test; ``tox -e fuzz`` (SHARDCAST_FUZZ=1) many more.
"""

from __future__ import annotations

import os
import socket
import struct
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from contract import unique
from harness import Server
from shardcast import ipc
from wsclient import raw_handshake

FUZZ_EXAMPLES = 150
settings.register_profile("shardcast", max_examples=FUZZ_EXAMPLES, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("shardcast-fuzz", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("shardcast-fuzz" if os.environ.get("SHARDCAST_FUZZ") else "shardcast")

ENDPOINTS = [
    ("POST", "/connect"), ("POST", "/subscribe"), ("POST", "/unsubscribe"),
    ("POST", "/message"), ("PATCH", "/message"), ("DELETE", "/message"),
    ("POST", "/user_state"), ("POST", "/channel_config"), ("GET", "/info"), ("POST", "/info"),
    ("GET", "/admin/admin.json"), ("POST", "/admin/admin.json"),
    ("GET", "/disconnect"), ("POST", "/disconnect"), ("GET", "/listen"),
]
# Every field name the API knows, so that fuzzed objects get past the first type check.
FIELDS = [
    "username", "conn_id", "channels", "fresh_user_state", "user_state", "state_public_keys",
    "channel_configs", "info", "user", "channel", "pm_users", "exclude_users", "no_history",
    "uuid", "timestamp", "message", "edited", "exclude_channels", "include_history",
    "include_users", "return_public_state", "include_connections", "notify_presence",
    "store_history", "history_size", "broadcast_presence_with_user_lists", "notify_state",
    "store_frames", "callback", "secret",
]
TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz", min_size=1,
                max_size=20)
HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                              blacklist_characters="\x7f"), max_size=60)
INT64 = st.integers(-(2**63), 2**63 - 1)


def json_values(keys=st.sampled_from(FIELDS) | st.text(max_size=10), integers=st.integers()):
    scalars = (st.none() | st.booleans() | integers
               | st.floats(allow_nan=False, allow_infinity=False)
               | st.text(max_size=30) | st.uuids().map(str) | st.sampled_from(["", "a" * 600]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(keys, inner, max_size=5), max_leaves=12)


# A body: an object of known fields, a list of such objects (/message), or any JSON at all.
OBJECTS = st.dictionaries(st.sampled_from(FIELDS), json_values(), max_size=8)
BODIES = OBJECTS | st.lists(OBJECTS, max_size=4) | json_values()
# Connections the fuzzing server knows, so that shaped bodies reach the shards.
KNOWN_CONNS = ["6f1c2a52-9d0e-4a53-8a4e-0c3b8f1f2a01", "0b7e8c1d-3f4a-4e5b-9c6d-7e8f9a0b1c02"]
NAMES = st.text(min_size=1, max_size=12) | st.sampled_from(["fuzz-a", "fuzz-b", "u"])
STATE = st.dictionaries(st.text(max_size=8), st.none() | st.booleans() | INT64 | st.floats()
                        | st.text(max_size=8), max_size=4)


def mostly(strategy: st.SearchStrategy) -> st.SearchStrategy:
    """Values of ``strategy``, but one time in ten any JSON value at all."""
    return st.integers(0, 9).flatmap(lambda n: json_values() if n == 0 else strategy)


def shaped(**fields) -> st.SearchStrategy:
    """An object of these fields, each mostly valid."""
    return st.fixed_dictionaries({}, optional={
        name: mostly(strategy) for name, strategy in fields.items()})


SETTINGS = shaped(notify_presence=st.booleans(), store_history=st.booleans(),
                  history_size=st.integers(-1, 20), store_frames=st.booleans(),
                  broadcast_presence_with_user_lists=st.booleans(), notify_state=st.booleans())
INFO = shaped(channels=st.lists(NAMES, max_size=3), exclude_channels=st.lists(NAMES, max_size=2),
              include_history=st.booleans(), include_users=st.booleans(),
              return_public_state=st.booleans(), include_connections=st.booleans())
CONN_IDS = st.sampled_from(KNOWN_CONNS) | st.uuids().map(str)
ITEM = shaped(user=NAMES, channel=NAMES, pm_users=st.lists(NAMES, max_size=2),
              exclude_users=st.lists(NAMES, max_size=2), no_history=st.booleans(),
              uuid=st.uuids().map(str), timestamp=st.datetimes().map(lambda d: d.isoformat()),
              message=json_values(), edited=st.datetimes().map(lambda d: d.isoformat()))
SHAPED_BODIES = {
    "/connect": shaped(username=NAMES, conn_id=CONN_IDS, channels=st.lists(NAMES, max_size=3),
                       fresh_user_state=STATE, user_state=STATE,
                       state_public_keys=st.lists(NAMES, max_size=3),
                       channel_configs=st.dictionaries(NAMES, SETTINGS, max_size=2), info=INFO),
    "/subscribe": shaped(conn_id=CONN_IDS, channels=st.lists(NAMES, max_size=3),
                         channel_configs=st.dictionaries(NAMES, SETTINGS, max_size=2), info=INFO),
    "/message": st.lists(ITEM, max_size=3),
    "/user_state": shaped(user=NAMES, user_state=STATE, state_public_keys=st.lists(NAMES)),
    "/channel_config": st.dictionaries(NAMES, SETTINGS, max_size=3),
    "/info": shaped(info=INFO),
    "/disconnect": shaped(conn_id=st.uuids().map(str)),
}
SHAPED_BODIES["/unsubscribe"] = SHAPED_BODIES["/subscribe"]


@pytest.fixture(scope="module")
def fuzzed():
    server = Server(2).start()
    for conn_id in KNOWN_CONNS:
        server.connect("fuzz-a", ["fuzz-a"], conn_id=conn_id)
    yield server
    assert_still_serving(server)
    server.stop()


def assert_still_serving(server: Server) -> None:
    """The supervisor and every shard still run, none restarted, and messages still flow."""
    assert server.process.poll() is None, server.output()
    shards = server.ok("GET", "/admin/admin.json")["shards"]
    assert [shard.get("restarts", 0) for shard in shards] == [0] * server.workers
    channel = unique("alive")
    reply = server.connect(unique("u"), [channel])
    with server.ws(reply["ws_url"]) as client:
        posted = server.say(channel)
        assert client.next()["uuid"] == posted["uuid"]
    assert "Traceback" not in server.output(), server.output()


def send_raw(port: int, data: bytes) -> bytes:
    """Send ``data``, end the stream, and read the answer until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass                      # the server refused early: fine
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except ConnectionResetError:
            pass
        return answer


def assert_no_server_error(answer: bytes) -> None:
    assert not answer.startswith(b"HTTP/1.1 5"), answer[:300]


# -- the HTTP API ---------------------------------------------------------------------------

@given(endpoint=st.sampled_from(ENDPOINTS), body=BODIES, signed=st.booleans())
def test_json_bodies_never_get_a_5xx(fuzzed, endpoint, body, signed):
    method, path = endpoint
    response = fuzzed.request(method, path, json=body, sign=signed)
    assert response.status_code < 500, response.text


@given(endpoint=st.sampled_from([e for e in ENDPOINTS if e[1] in SHAPED_BODIES]), data=st.data())
def test_nearly_valid_bodies_never_get_a_5xx(fuzzed, endpoint, data):
    method, path = endpoint
    body = data.draw(SHAPED_BODIES[path])
    response = fuzzed.request(method, path, json=body)
    event(f"{path} {response.status_code}")
    assert response.status_code < 500, response.text


@given(endpoint=st.sampled_from(ENDPOINTS), body=st.binary(max_size=300),
       content_type=st.sampled_from(["application/json", "text/plain", "", "x/\u00e9"]))
def test_non_json_bodies_never_get_a_5xx(fuzzed, endpoint, body, content_type):
    method, path = endpoint
    response = fuzzed.request(method, path, data=body, headers={"content-type": content_type})
    assert response.status_code < 500, response.text


@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
       path=st.sampled_from([path for _, path in ENDPOINTS]) | st.text(max_size=20).map(
           lambda text: "/" + quote(text)),
       query=st.lists(st.tuples(st.sampled_from(FIELDS) | TOKEN, st.text(max_size=40)),
                      max_size=4),
       headers=st.dictionaries(TOKEN, HEADER_VALUE, max_size=5))
def test_headers_and_query_strings_never_get_a_5xx(fuzzed, method, path, query, headers):
    target = path + ("?" + "&".join(f"{quote(key)}={quote(value)}" for key, value in query)
                     if query else "")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items()
                   if name not in ("content-length", "transfer-encoding", "connection"))
    request = (f"{method} {target} HTTP/1.1\r\nhost: 127.0.0.1\r\n{head}"
               "content-length: 0\r\nconnection: close\r\n\r\n").encode("latin-1")
    answer = send_raw(fuzzed.api_port, request)
    assert answer.startswith(b"HTTP/1.1 ") or answer == b"", answer[:300]
    assert_no_server_error(answer)


@given(data=st.binary(max_size=400) | st.sampled_from(ENDPOINTS).flatmap(
    lambda endpoint: st.binary(max_size=200).map(
        lambda tail: f"{endpoint[0]} {endpoint[1]} HTTP/1.1\r\n".encode() + tail)))
def test_arbitrary_bytes_at_the_api_port_are_refused_cleanly(fuzzed, data):
    assert_no_server_error(send_raw(fuzzed.api_port, data))


# -- the shards' websocket ports ------------------------------------------------------------

def frame(opcode: int, payload: bytes, fin: bool, mask: bytes | None, rsv: int) -> bytes:
    """A websocket frame as a client would write it, or with any of its rules broken."""
    first = (0x80 if fin else 0) | (rsv & 0x7) << 4 | opcode & 0xF
    size = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if size < 126:
        head = struct.pack("!BB", first, mask_bit | size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, size)
    if mask is None:
        return head + payload
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


FRAMES = st.builds(frame, opcode=st.integers(0, 15), payload=st.binary(max_size=300),
                   fin=st.booleans(), mask=st.none() | st.binary(min_size=4, max_size=4),
                   rsv=st.integers(0, 7))


@given(data=st.binary(max_size=400))
def test_garbage_before_the_handshake_is_refused_cleanly(fuzzed, data):
    assert_no_server_error(send_raw(fuzzed.ws_ports[0], data))


@given(stream=st.lists(FRAMES, min_size=1, max_size=5).map(b"".join) | st.binary(max_size=400))
def test_garbage_frames_after_the_handshake_close_only_that_socket(fuzzed, stream):
    reply = fuzzed.connect(unique("g"))
    with raw_handshake(reply["ws_url"]) as sock:
        try:
            sock.sendall(stream)
        except (BrokenPipeError, ConnectionResetError):
            pass


def test_server_still_serves_after_the_fuzzing(fuzzed):
    assert_still_serving(fuzzed)


# -- the IPC decoder ------------------------------------------------------------------------

VALID_FRAMES = st.lists(
    st.builds(ipc.pack, st.sampled_from(list(ipc.Kind)), st.integers(0, 2**32 - 1),
              st.binary(max_size=50))
    | st.builds(ipc.pack_route, json_values(st.text(max_size=5), INT64).map(lambda v: [v]),
                st.binary(max_size=50)),
    max_size=5).map(b"".join)


@given(stream=VALID_FRAMES | st.binary(max_size=200), noise=st.binary(max_size=20),
       at=st.integers(0, 300), cuts=st.lists(st.integers(1, 64), max_size=10))
def test_frame_decoder_takes_any_bytes_in_any_chunks(stream, noise, at, cuts):
    """Decoded frames or a FrameError, nothing else; a DELIVER body unpacks or FrameErrors."""
    data = stream[:at] + noise + stream[at:]
    decoder = ipc.FrameDecoder()
    chunks, start = [], 0
    for cut in cuts:
        chunks.append(data[start:start + cut])
        start += cut
    chunks.append(data[start:])
    try:
        for chunk in chunks:
            for kind, _, body in decoder.feed(chunk):
                if kind == ipc.Kind.DELIVER:
                    unpack_or_frame_error(body)
    except ipc.FrameError:
        pass
    assert len(decoder.buffer) <= len(data)


def unpack_or_frame_error(body: bytes) -> None:
    try:
        route, _ = ipc.unpack_route(body)
    except ipc.FrameError:
        return
    assert isinstance(route, list)


@given(body=st.binary(max_size=200) | st.builds(
    lambda size, tail: struct.pack("<I", size) + tail, st.integers(0, 2**32 - 1),
    st.binary(max_size=100)))
def test_unpack_route_takes_any_bytes(body):
    unpack_or_frame_error(body)


def test_bad_dict_entry_beside_another_bad_field_is_422(fuzzed):
    """Found by the fuzzing: the error locator looked for the bad entry among valid ones."""
    body = {"channel_configs": {"0": {}, "00": {"notify_presence": None}}, "username": None}
    response = fuzzed.post("/connect", body)
    assert response.status_code == 422
    assert response.json() == {"channel_configs": {"00": {"value": {
        "notify_presence": ["Expected `bool`, got `null`"]}}}}

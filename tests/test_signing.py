"""Signed request bodies: the x-shardcast-signature header, its window and replay refusal."""

from __future__ import annotations

import http.client
import json
import re
import time

import pytest

from contract import unique
from harness import Server
from shardcast import signing
from shardcast.signing import REQUEST_HEADER, ReplayGuard, check_request, sign_request

SECRET = "request-signing-secret"
WINDOW = 60.0
HEADER_FORMAT = re.compile(r"^t=\d+,v1=[0-9a-f]{64}$")
BODY = b'[{"user": "u", "channel": "c", "message": {"n": 1}}]'


def signed_call(server: Server, method: str, target: str, body: bytes = b"",
                signature: str | None = None, headers: dict | None = None) -> tuple[int, object]:
    """Send exactly ``method target body``, signed for that unless ``signature`` is given."""
    if signature is None:
        signature = sign_request(server.secret, method, target, body)
    connection = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=10)
    try:
        connection.request(method, target, body=body, headers={
            REQUEST_HEADER: signature, "content-type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def assert_bad_signature(answer: tuple[int, object]) -> None:
    status, body = answer
    assert status == 401, body
    assert body["request"] == "Bad Signature" and body["hint"], body


# -- the functions ----------------------------------------------------------------------

def test_signature_header_reads_t_and_v1():
    header = sign_request(SECRET, "POST", "/message", BODY, now=1_700_000_000.7)
    assert HEADER_FORMAT.match(header) and header.startswith("t=1700000000,")


def test_signature_verifies_the_request_it_was_made_for():
    header = sign_request(SECRET, "post", "/info?x=1", BODY)
    assert check_request(header, SECRET, "POST", "/info?x=1", BODY, WINDOW) is None


@pytest.mark.parametrize(("change", "value"), [
    ("secret", "other-secret"),
    ("method", "PATCH"),
    ("target", "/message?x=1"),
    ("target", "/info"),
    ("body", BODY.replace(b"1", b"2")),
    ("body", BODY + b" "),
], ids=["secret", "method", "query", "path", "body", "trailing-space"])
def test_signature_refuses_any_other_request(change, value):
    request = {"header": sign_request(SECRET, "POST", "/message", BODY), "secret": SECRET,
               "method": "POST", "target": "/message", "body": BODY, "window": WINDOW}
    request[change] = value
    assert check_request(**request) == "mismatch"


@pytest.mark.parametrize("skew", [-WINDOW - 1, WINDOW + 1], ids=["past", "future"])
def test_signature_outside_the_window_is_stale(skew):
    header = sign_request(SECRET, "GET", "/info", b"", now=time.time() + skew)
    assert check_request(header, SECRET, "GET", "/info", b"", WINDOW) == "stale"


@pytest.mark.parametrize("garbage", [
    "", "t=,v1=", "v1=00", "t=12", "t=12,v1=00,t=13", "t=-5,v1=00", "t=1e9,v1=00",
    "t=١٢٣,v1=00", "t=123,v1=é", "t=99999999999999999999,v1=00", ",,,", "t=1;v1=2",
])
def test_garbage_signature_is_refused_without_error(garbage):
    assert check_request(garbage, SECRET, "GET", "/info", b"", WINDOW) == "malformed"


def test_replay_guard_refuses_a_second_use_until_the_window_passes():
    guard = ReplayGuard(window=10, capacity=100)
    header = sign_request(SECRET, "GET", "/info", b"", now=1000)
    assert guard.first_use(header, now=1000)
    assert not guard.first_use(header, now=1009)
    assert guard.first_use(sign_request(SECRET, "GET", "/info", b"", now=1011), now=1011)
    assert len(guard) == 1   # the first one expired with its window


def test_replay_guard_is_bounded():
    guard = ReplayGuard(window=10, capacity=2)
    headers = [sign_request(SECRET, "GET", f"/info?n={n}", b"", now=1000) for n in range(3)]
    assert guard.first_use(headers[0], now=1000) and guard.first_use(headers[1], now=1000)
    with pytest.raises(ReplayGuard.Full):
        guard.first_use(headers[2], now=1000)
    assert guard.first_use(headers[2], now=1011)


# -- the server ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def replay_server(server_pool):
    """Replays refused; a one-shard server of this module's own."""
    return server_pool.get(1, SHARDCAST_REFUSE_REPLAYED_SIGNATURES="true")


@pytest.fixture(scope="module")
def strict_server(server_pool):
    """Only x-shardcast-signature is accepted, and only 3 signatures are remembered."""
    return server_pool.get(1, SHARDCAST_ALLOW_COMPAT_SIGNATURES="false",
                           SHARDCAST_REFUSE_REPLAYED_SIGNATURES="true",
                           SHARDCAST_REPLAY_CACHE_SIZE=3)


def test_signed_requests_are_served(replay_server):
    channel = unique("signed")
    connect = json.dumps({"username": unique("u"), "channels": [channel]}).encode()
    status, reply = signed_call(replay_server, "POST", "/connect", connect)
    assert status == 200 and reply["channels"] == [channel]
    status, info = signed_call(replay_server, "GET", "/info")
    assert status == 200 and channel in info["channels"]
    status, _ = signed_call(replay_server, "GET", f"/disconnect?conn_id={reply['conn_id']}")
    assert status == 200


@pytest.mark.parametrize(("method", "target", "body"), [
    ("POST", "/info", b'{"info": {}}'),                   # another method
    ("GET", "/admin/admin.json", b""),                   # another path
    ("GET", "/info?channels=x", b""),                    # another query
    ("GET", "/info", b"{}"),                             # another body
], ids=["method", "path", "query", "body"])
def test_signature_of_another_request_is_401(replay_server, method, target, body):
    signature = sign_request(replay_server.secret, "GET", "/info", b"")
    assert_bad_signature(signed_call(replay_server, method, target, body, signature))


def test_tampered_message_body_is_401_and_not_delivered(replay_server):
    channel = unique("tamper")
    body = json.dumps([{"user": "u", "channel": channel, "message": {"amount": 10}}]).encode()
    signature = sign_request(replay_server.secret, "POST", "/message", body)
    tampered = body.replace(b"10", b"99")
    assert_bad_signature(signed_call(replay_server, "POST", "/message", tampered, signature))


def test_wrong_secret_is_401(replay_server):
    signature = sign_request("not-the-secret", "GET", "/info", b"")
    assert_bad_signature(signed_call(replay_server, "GET", "/info", signature=signature))


@pytest.mark.parametrize("skew", [-120, 120], ids=["stale", "future"])
def test_signature_outside_the_window_is_401(replay_server, skew):
    signature = sign_request(replay_server.secret, "GET", "/info", b"", now=time.time() + skew)
    status, body = signed_call(replay_server, "GET", "/info", signature=signature)
    assert_bad_signature((status, body))
    assert "60 s" in body["hint"]


def test_replayed_signature_is_401(replay_server):
    body = json.dumps({"username": unique("u")}).encode()
    signature = sign_request(replay_server.secret, "POST", "/connect", body)
    assert signed_call(replay_server, "POST", "/connect", body, signature)[0] == 200
    status, answer = signed_call(replay_server, "POST", "/connect", body, signature)
    assert_bad_signature((status, answer))
    assert "before" in answer["hint"]


def test_replays_are_accepted_unless_refused(server):
    signature = sign_request(server.secret, "GET", "/info", b"")
    assert signed_call(server, "GET", "/info", signature=signature)[0] == 200
    assert signed_call(server, "GET", "/info", signature=signature)[0] == 200


def test_new_header_is_checked_before_the_compat_one(replay_server):
    bad = sign_request("not-the-secret", "GET", "/info", b"")
    assert_bad_signature(signed_call(replay_server, "GET", "/info", signature=bad,
                                     headers=replay_server.sign()))


def test_compat_signatures_can_be_turned_off(strict_server):
    response = strict_server.get("/info")          # x-channelstream-secret, valid
    assert response.status_code == 401
    assert "allow_compat_signatures" in response.json()["hint"]
    response = strict_server.get("/info", sign=False)
    assert response.status_code == 403 and "x-shardcast-signature" in response.json()["request"]
    assert signed_call(strict_server, "GET", "/info?n=0")[0] == 200


def test_full_replay_cache_is_503_and_forgets_nothing(strict_server):
    """The cache holds 3 live signatures: once full, new ones get 503, old ones stay refused."""
    signatures = [sign_request(strict_server.secret, "GET", f"/info?n={n}", b"")
                  for n in range(1, 5)]
    answers = [signed_call(strict_server, "GET", f"/info?n={n}", signature=signature)
               for n, signature in enumerate(signatures, 1)]
    assert [status for status, _ in answers][-1] == 503
    assert "replay_cache_size" in answers[-1][1]["request"][0]
    accepted = [signature for signature, (status, _) in zip(signatures, answers) if status == 200]
    assert accepted, answers
    assert_bad_signature(signed_call(strict_server, "GET", "/info?n=1", signature=signatures[0]))


def test_compat_memo_still_refuses_a_token_once_it_is_stale():
    verify = signing.CompatVerifier("s3cret", max_age=60)
    token = signing.sign_compat("s3cret", now=time.time() - 59)
    assert verify(token) is True
    assert verify(token) is True                      # from the memo
    stale = signing.sign_compat("s3cret", now=time.time() - 61)
    assert verify(stale) is False
    assert verify(stale) is False                     # authentic, but still too old
    assert verify(token[:-1] + ("A" if token[-1] != "A" else "B")) is False


def test_compat_token_dated_ahead_is_refused_beyond_the_clock_skew():
    now = time.time()
    ahead = signing.sign_compat("s3cret", now=now + signing.CLOCK_SKEW + 2)
    assert signing.verify_compat(ahead, "s3cret", max_age=60, now=now) is False
    assert signing.CompatVerifier("s3cret", max_age=60)(ahead) is False
    near = signing.sign_compat("s3cret", now=now + signing.CLOCK_SKEW - 1)
    assert signing.verify_compat(near, "s3cret", max_age=60, now=now) is True

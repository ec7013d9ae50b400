"""API.md § Authentication, and the CORS rules of § Conventions."""

import http.client
import json
import time
import uuid

import pytest
from itsdangerous import TimestampSigner

from contract import craft_signature, SIGNATURE_HEADER, unique

BAD_SIGNATURE = {"request": "Bad Signature"}
CORS_METHODS = {"GET", "POST", "OPTIONS", "PUT", "DELETE", "PATCH"}

# Every server API endpoint, with a body it would accept once signed.
SIGNED_ENDPOINTS = [
    ("POST", "/connect", {"username": "auth-user"}),
    ("POST", "/subscribe", {"conn_id": "8b2a7e1c-8f57-4ae0-9b1b-5d8c9e3b6a01", "channels": ["a"]}),
    ("POST", "/unsubscribe", {"conn_id": "8b2a7e1c-8f57-4ae0-9b1b-5d8c9e3b6a01", "channels": ["a"]}),
    ("POST", "/message", [{"user": "u", "channel": "auth-none"}]),
    ("PATCH", "/message", [{"uuid": "8b2a7e1c-8f57-4ae0-9b1b-5d8c9e3b6a01", "channel": "auth-none"}]),
    ("DELETE", "/message", [{"uuid": "8b2a7e1c-8f57-4ae0-9b1b-5d8c9e3b6a01", "channel": "auth-none"}]),
    ("POST", "/user_state", {"user": "auth-user", "user_state": {}}),
    ("POST", "/channel_config", {}),
    ("GET", "/info", None),
    ("POST", "/info", {"info": {}}),
    ("GET", "/admin/admin.json", None),
    ("POST", "/admin/admin.json", None),
]
ENDPOINT_IDS = [f"{method} {path}" for method, path, _ in SIGNED_ENDPOINTS]


class OldTimestampSigner(TimestampSigner):
    """An itsdangerous signer whose clock runs ``age`` seconds behind."""

    age = 0

    def get_timestamp(self) -> int:
        return int(time.time()) - self.age


def signed_with(value: str) -> dict:
    return {SIGNATURE_HEADER: value}


def request_from(source_ip, server, method, path, body=None, headers=None):
    """An HTTP request whose packets come from ``source_ip`` (any 127.x.y.z reaches loopback)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=10, source_address=(source_ip, 0))
    try:
        data = None if body is None else json.dumps(body)
        connection.request(method, path, body=data, headers={"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.parametrize(("method", "path", "body"), SIGNED_ENDPOINTS, ids=ENDPOINT_IDS)
def test_missing_signature_is_403(server, method, path, body):
    response = server.request(method, path, json=body, sign=False)
    assert response.status_code == 403


@pytest.mark.parametrize(("method", "path", "body"), SIGNED_ENDPOINTS, ids=ENDPOINT_IDS)
def test_wrong_secret_is_401_bad_signature(server, method, path, body):
    header = {SIGNATURE_HEADER: TimestampSigner("not-the-secret").sign("channelstream").decode()}
    response = server.request(method, path, json=body, sign=False, headers=header)
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


@pytest.mark.parametrize("garbage", ["garbage", "a.b.c", "channelstream..", "....", "éé.x.y"])
def test_garbage_signature_is_401_bad_signature(server, garbage):
    response = server.get("/info", sign=False, headers=signed_with(garbage.encode().decode("latin-1")))
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


def test_tampered_signature_is_401_bad_signature(server):
    value, timestamp, signature = server.sign()[SIGNATURE_HEADER].split(".")
    tampered_signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    for tampered in (
        f"channelstreaM.{timestamp}.{signature}",
        f"{value}.{timestamp}.{tampered_signature}",
        f"{value}.{timestamp}A.{signature}",
    ):
        response = server.get("/info", sign=False, headers=signed_with(tampered))
        assert response.status_code == 401, tampered
        assert response.json() == BAD_SIGNATURE


def test_signature_older_than_60s_is_401_bad_signature(server):
    signer = OldTimestampSigner(server.secret)
    signer.age = 90
    response = server.get("/info", sign=False, headers=signed_with(signer.sign("channelstream").decode()))
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


def test_handcrafted_stale_signature_is_401(server):
    stale = craft_signature(server.secret, timestamp=int(time.time()) - 3600)
    response = server.get("/info", sign=False, headers=signed_with(stale))
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


def test_signature_younger_than_60s_is_accepted(server):
    signer = OldTimestampSigner(server.secret)
    signer.age = 30
    response = server.get("/info", sign=False, headers=signed_with(signer.sign("channelstream").decode()))
    assert response.status_code == 200


@pytest.mark.parametrize("ahead", [30, 3600])
def test_signature_dated_in_the_future_is_401(server, ahead):
    """Only a small clock skew is forgiven: a token dated ahead would outlive its 60 s."""
    future = craft_signature(server.secret, timestamp=int(time.time()) + ahead)
    response = server.get("/info", sign=False, headers=signed_with(future))
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


def test_signature_a_little_ahead_of_the_clock_is_accepted(server):
    ahead = craft_signature(server.secret, timestamp=int(time.time()) + 2)
    assert server.get("/info", sign=False, headers=signed_with(ahead)).status_code == 200


def test_signature_of_any_value_is_accepted(server):
    header = signed_with(TimestampSigner(server.secret).sign("anything-at-all").decode())
    assert server.get("/info", sign=False, headers=header).status_code == 200


def test_handcrafted_wire_format_signature_is_accepted(server):
    response = server.get("/info", sign=False, headers=signed_with(craft_signature(server.secret)))
    assert response.status_code == 200


def test_secret_query_parameter_is_accepted(server):
    signature = server.sign()[SIGNATURE_HEADER]
    response = server.post(
        "/connect", {"username": unique("query-auth")}, sign=False, params={"secret": signature}
    )
    assert response.status_code == 200
    assert response.json()["username"].startswith("query-auth")


def test_bad_secret_query_parameter_is_401(server):
    response = server.get("/info", sign=False, params={"secret": "garbage"})
    assert response.status_code == 401
    assert response.json() == BAD_SIGNATURE


def test_caller_outside_allow_posting_from_is_403(server):
    status, _ = request_from("127.0.0.2", server, "POST", "/connect", {"username": unique("far")}, server.sign())
    assert status == 403
    status, _ = request_from("127.0.0.1", server, "POST", "/connect", {"username": unique("near")}, server.sign())
    assert status == 200


def test_client_endpoints_accept_any_caller_ip(server):
    conn_id = server.connect(unique("browser"))["conn_id"]
    status, body = request_from("127.0.0.2", server, "GET", f"/disconnect?conn_id={conn_id}")
    assert (status, json.loads(body)) == (200, True)
    status, _ = request_from("127.0.0.2", server, "GET", f"/listen?conn_id={uuid.uuid4()}")
    assert status == 401


@pytest.mark.parametrize("path", ["/connect", "/message", "/info", "/listen", "/ws", "/no-such-path"])
def test_options_is_200_empty_with_cors_headers(server, path):
    response = server.request("OPTIONS", path, sign=False, headers={"Origin": "http://app.example"})
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
    assert methods == CORS_METHODS


def test_every_response_carries_allow_origin(server):
    conn_id = server.connect(unique("cors"))["conn_id"]
    responses = {
        "200 signed": server.get("/info"),
        "403 unsigned": server.get("/info", sign=False),
        "401 bad signature": server.get("/info", sign=False, headers=signed_with("garbage")),
        "404 unknown path": server.get("/no-such-path"),
        "422 invalid body": server.post("/connect", {}),
        "listen": server.listen(conn_id),
        "disconnect": server.get("/disconnect", params={"conn_id": conn_id}, sign=False),
    }
    for name, response in responses.items():
        assert response.headers.get("Access-Control-Allow-Origin") == "*", name


def test_listen_needs_no_signature(server):
    conn_id = server.connect(unique("nosig"))["conn_id"]
    response = server.get("/listen", params={"conn_id": conn_id}, sign=False)
    assert response.status_code == 200
    assert response.json() == []


def test_disconnect_needs_no_signature(server):
    conn_id = server.connect(unique("nosig"))["conn_id"]
    assert server.post("/disconnect", {"conn_id": conn_id}, sign=False).json() is True
    conn_id = server.connect(unique("nosig"))["conn_id"]
    assert server.get("/disconnect", params={"conn_id": conn_id}, sign=False).json() is True

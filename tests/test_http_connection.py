"""HTTP/1.1 connection handling on the API port: keep-alive and Connection: close."""
from __future__ import annotations

import json
import socket
import time
from email.utils import parsedate_to_datetime

import pytest

from rawhttp import open_socket, read_response


def raw_request(server, request: bytes, port: int | None = None) -> bytes:
    """Send raw bytes (to the API port unless told); everything the server answers until it
    closes the connection."""
    with socket.create_connection(("127.0.0.1", port or server.api_port), timeout=5) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_connection_close_on_a_shard_backed_route_answers_then_closes_cleanly(server):
    signature = server.sign()["x-channelstream-secret"]
    answer = raw_request(server, (
        "GET /info HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"x-channelstream-secret: {signature}\r\nConnection: close\r\n\r\n").encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in head.lower()
    assert set(json.loads(body)) == {"channels", "users"}
    assert "Traceback" not in server.output()


def responses(answer: bytes) -> list[tuple[bytes, bytes]]:
    """Split a stream of HTTP responses (each with content-length) into (head, body)."""
    found = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        found.append((head, rest[:length]))
        answer = rest[length:]
    return found


def test_pipelined_requests_are_answered_in_order(server):
    requests = b"".join(
        f"GET /nowhere-{n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for n in range(3))
    answer = raw_request(server, requests + b"GET /last HTTP/1.1\r\nHost: x\r\n"
                                            b"Connection: close\r\n\r\n")
    bodies = [json.loads(body)["path"][0] for _, body in responses(answer)]
    assert [body.rsplit(" ", 1)[1] for body in bodies] == [
        "/nowhere-0", "/nowhere-1", "/nowhere-2", "/last"]


CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def expecting_head(server, body: bytes, version: str = "1.1") -> bytes:
    signature = server.sign()["x-channelstream-secret"]
    return (f"POST /message HTTP/{version}\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\n"
            f"x-channelstream-secret: {signature}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()


def message_body(size: int) -> bytes:
    return json.dumps([{"channel": "expecting", "user": "u",
                        "message": {"text": "x" * size}}]).encode()


def test_a_client_that_expects_100_continue_is_asked_for_its_body_at_once(server):
    """libcurl (PHP's too) sends "Expect: 100-continue" with large bodies and waits a second
    for the go-ahead before sending one: without it every such post took a second."""
    body = message_body(4000)
    with open_socket(server.api_port, timeout=0.5) as sock:   # well within that second
        sock.sendall(expecting_head(server, body))
        assert sock.recv(len(CONTINUE), socket.MSG_WAITALL) == CONTINUE
        sock.sendall(body)
        status, _, answer = read_response(sock)
        assert status == 200 and json.loads(answer)[0]["message"]["text"] == "x" * 4000
        # The next request on the connection is asked for its body the same way.
        sock.sendall(expecting_head(server, body))
        assert sock.recv(len(CONTINUE), socket.MSG_WAITALL) == CONTINUE
        sock.sendall(body)
        assert read_response(sock)[0] == 200


def test_no_100_continue_where_none_is_due(server):
    body = message_body(10)
    with open_socket(server.api_port, timeout=5) as sock:   # the body came with the head
        sock.sendall(expecting_head(server, body) + body)
        assert read_response(sock)[0] == 200
    with open_socket(server.api_port, timeout=5) as sock:   # HTTP/1.0 knows no Expect
        sock.sendall(expecting_head(server, body, version="1.0"))
        sock.settimeout(0.5)
        with pytest.raises(socket.timeout):
            sock.recv(1)
        sock.settimeout(5)
        sock.sendall(body)
        assert read_response(sock)[0] == 200
    with open_socket(server.api_port, timeout=5) as sock:   # refused at its head: 413 alone
        sock.sendall(expecting_head(server, message_body(2 << 20)))
        assert read_response(sock)[0] == 413


def test_head_is_answered_as_get_without_its_body(server):
    """Load balancers and monitors check with HEAD; a body after a HEAD answer would be read
    as the start of the next answer on the connection."""
    paths = ["/health", "/ready", "/metrics", "/openapi.json", "/static/shardcast.js",
             "/message"]
    gets = {path: responses(raw_request(server, (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").encode()))[0]
        for path in paths}
    answer = raw_request(server, "".join(
        f"HEAD {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" for path in paths).encode()
        + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    for path in paths:
        head, _, answer = answer.partition(b"\r\n\r\n")
        get_head, get_body = gets[path]
        assert head.split(b"\r\n")[0] == get_head.split(b"\r\n")[0], path   # the same status
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        # what GET sends (/metrics: its counts move between the two)
        assert length == len(get_body) or (path == "/metrics" and length > 0), path
        assert answer.startswith(b"HTTP/1.1 "), (path, answer[:80])      # and no body
    ((head, body),) = responses(answer)
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body) == {"status": "ok"}


def test_a_405_lists_the_methods_of_its_path_head_with_get(server):
    for method, path, allowed in (("POST", "/health", b"GET, HEAD"),
                                  ("GET", "/message", b"POST, PATCH, DELETE"),
                                  ("PUT", "/info", b"GET, POST, HEAD")):
        ((head, _),) = responses(raw_request(server, (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 0\r\n"
            f"Connection: close\r\n\r\n").encode()))
        assert head.startswith(b"HTTP/1.1 405"), (method, path)
        assert b"\r\nallow: " + allowed in head, head


def test_an_http10_client_asking_for_keep_alive_is_told_it_has_it(server):
    """HTTP/1.0 keeps a connection only when the answer says so (ab -k, among others)."""
    with open_socket(server.api_port) as sock:
        for _ in range(2):
            sock.sendall(b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = read_response(sock)
            assert status == 200 and headers["connection"] == "keep-alive"
        sock.sendall(b"GET /health HTTP/1.0\r\n\r\n")       # and without it, closed after
        status, headers, _ = read_response(sock)
        assert status == 200 and headers["connection"] == "close"
        assert sock.recv(1) == b""


def test_an_absolute_form_target_is_served_by_its_path(server):
    """RFC 9112: a server accepts "GET http://host/path" (what a client sends to a proxy)."""
    answer = raw_request(server, (
        f"GET http://127.0.0.1:{server.api_port}/health?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        "GET http://127.0.0.1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    ).encode())
    (health_head, health), (root_head, root) = responses(answer)
    assert health_head.startswith(b"HTTP/1.1 200") and json.loads(health) == {"status": "ok"}
    assert json.loads(root) == {"path": ["No such endpoint: /"]}


def test_every_answer_carries_its_date(server):
    """RFC 9110: an origin server with a clock dates its answers (caches and logs read it)."""
    before = time.time()
    answer = raw_request(server, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                                 b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    refused = [raw_request(server, b"NOT HTTP AT ALL\r\n\r\n")]
    ws_port = server.ws_ports[0]
    refused += [raw_request(server, request, ws_port) for request in (  # 400, 404, 426, 400
        b"GET /ws?conn_id=x HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        b"GET /ws?conn_id=nope HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n")]
    statuses = [answer.split(b" ", 2)[1] for answer in refused]
    assert statuses == [b"400", b"400", b"404", b"426", b"400"]
    heads = [head for head, _ in responses(answer)] + [
        answer.partition(b"\r\n\r\n")[0] for answer in refused]
    for head in heads:
        (date,) = [line[6:] for line in head.split(b"\r\n") if line.lower().startswith(b"date: ")]
        sent = parsedate_to_datetime(date.decode()).timestamp()
        assert before - 1 <= sent <= time.time() + 1, head

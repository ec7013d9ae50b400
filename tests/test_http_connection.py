"""HTTP/1.1 connection handling on the API port: keep-alive and Connection: close."""
from __future__ import annotations

import json
import socket


def raw_request(server, request: bytes) -> bytes:
    """Send raw bytes; everything the server answers until it closes the connection."""
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=5) as sock:
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

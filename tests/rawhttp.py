"""HTTP/1.1 over a bare socket: for clients that misbehave on purpose (slow, endless, unread)."""

from __future__ import annotations

import json
import socket
import time

SMALL_BUFFER = 4096


def open_socket(port: int, receive_buffer: int | None = None, timeout: float = 5,
                source: str = "127.0.0.1") -> socket.socket:
    """A loopback connection from ``source``; a small ``receive_buffer`` fills fast when the
    client never reads."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((source, 0))
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    return sock


def send_ignoring_close(sock: socket.socket, data: bytes, chunk: int = 65536) -> None:
    """Send what the server takes; stop quietly when it closes the connection on us."""
    try:
        for start in range(0, len(data), chunk):
            sock.sendall(data[start:start + chunk])
    except OSError:
        pass


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response: (status, headers with lowercase names, body); what follows stays unread."""
    head = b""
    while b"\r\n\r\n" not in head:
        peeked = sock.recv(65536, socket.MSG_PEEK)
        assert peeked, f"connection closed before a response; got {head!r}"
        end = (head + peeked).find(b"\r\n\r\n")
        head += sock.recv(len(peeked) if end < 0 else end + 4 - len(head))
    status_line, *lines = head[:-4].decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines)}
    body = b""
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(min(length - len(body), 1 << 20))
        assert chunk, "connection closed inside a response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def error_of(sock: socket.socket, status: int) -> str:
    """The one message of a JSON error answer with ``status``."""
    got, _, body = read_response(sock)
    assert got == status, (got, body)
    (message,) = json.loads(body)["request"]
    return message


def read_until_closed(sock: socket.socket, timeout: float) -> tuple[int, float | None]:
    """(bytes read, seconds until the server closed or reset it, None if it did not)."""
    start = time.monotonic()
    received = 0
    sock.settimeout(0.1)
    while time.monotonic() - start < timeout:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return received, time.monotonic() - start
        if not chunk:
            return received, time.monotonic() - start
        received += len(chunk)
    return received, None


def request(method: str, target: str, headers: dict[str, str] | None = None,
            body: bytes = b"") -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

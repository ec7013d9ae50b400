"""A websocket client on a bare socket that keeps every byte the server sent and checks the
framing itself (RFC 6455, server side: unmasked), so a corrupted frame cannot hide behind a
client library that resynchronises or drops the connection."""

from __future__ import annotations

import base64
import os
import socket
import ssl
import struct
from dataclasses import dataclass
from urllib.parse import urlsplit

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA


class FramingError(AssertionError):
    """The byte stream is not a sequence of valid server websocket frames."""


@dataclass
class Frame:
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        return struct.unpack_from("!H", self.payload)[0] if len(self.payload) >= 2 else None


def handshake(url: str, rcvbuf: int | None = None, timeout: float = 5.0,
              context: ssl.SSLContext | None = None) -> socket.socket:
    """A socket past the websocket upgrade of ``url``, with no byte of the stream read; over
    TLS with ``context``, in this thread alone (an SSL socket read by one thread and written by
    another is not safe: CPython issues 137583 and 151508)."""
    parts = urlsplit(url)
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect((parts.hostname, parts.port))
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=parts.hostname)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)         # byte by byte: not a byte of the stream beyond it
        if not byte:
            raise ConnectionError(f"closed during the handshake: {head!r}")
        head += byte
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"upgrade refused: {head!r}")
    return sock


def parse_frames(stream: bytes) -> tuple[list[Frame], int]:
    """The complete frames at the start of ``stream`` and how many bytes they took. Raises
    FramingError at the first byte that cannot start a valid server frame."""
    frames = []
    offset = 0
    while offset + 2 <= len(stream):
        first, second = stream[offset], stream[offset + 1]
        opcode = first & 0x0F
        if first & 0x70 or opcode not in (TEXT, CLOSE, PING, PONG):
            raise FramingError(f"bad frame header byte {first:#04x} at offset {offset}")
        if not first & 0x80:
            raise FramingError(f"fragmented frame at offset {offset}: the server sends whole ones")
        if second & 0x80:
            raise FramingError(f"masked server frame at offset {offset}")
        size, start = second & 0x7F, offset + 2
        if size == 126:
            if start + 2 > len(stream):
                break
            (size,) = struct.unpack_from("!H", stream, start)
            start += 2
        elif size == 127:
            if start + 8 > len(stream):
                break
            (size,) = struct.unpack_from("!Q", stream, start)
            start += 8
        if start + size > len(stream):
            break
        frames.append(Frame(opcode, stream[start:start + size]))
        offset = start + size
    return frames, offset


def last_close_code(stream: bytes) -> int | None:
    """The code of the first close frame in a server's byte stream, if any."""
    frames, _ = parse_frames(stream)
    return next((frame.close_code for frame in frames if frame.opcode == CLOSE), None)

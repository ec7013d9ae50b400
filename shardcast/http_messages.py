"""What the API port takes and gives: a parsed request, an answer, and the lines every
answer's head carries."""
from __future__ import annotations

import asyncio
import functools
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Awaitable, Callable, Union
from urllib.parse import parse_qs

import orjson

PHRASES = {status.value: status.phrase for status in HTTPStatus}


class Request:
    __slots__ = ("method", "target", "path", "query", "headers", "body", "client", "keep_alive",
                 "http10")

    def __init__(self, method: str, url: bytes, headers: dict[str, str], body: bytes,
                 client: str, keep_alive: bool = True, http10: bool = False) -> None:
        self.method = method
        self.target = url.decode("latin-1")   # path and query exactly as sent (signed requests)
        path, _, query = self.target.partition("?")
        if path.startswith(("http://", "https://")):   # absolute-form (RFC 9112): its path
            path = "/" + path.split("/", 3)[3] if path.count("/") > 2 else "/"
        self.path = path
        self.query = ({k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
                      if query else {})
        self.headers = headers
        self.body = body
        self.client = client
        self.keep_alive = keep_alive
        self.http10 = http10        # an HTTP/1.0 client keeps its connection only when told


class Response:
    __slots__ = ("status", "body", "content_type", "headers", "after")

    def __init__(self, status: int, body: bytes = b"", content_type: str = "application/json",
                 headers: dict[str, str] | None = None,
                 after: asyncio.Future | None = None) -> None:
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}
        self.after = after      # the answer leaves once this is done (and those before it)


def json_response(value: object, status: int = 200) -> Response:
    return Response(status, orjson.dumps(value))


@functools.lru_cache(maxsize=None)   # a handful of statuses; PHRASES bounds it
def status_line(status: int) -> str:
    return f"HTTP/1.1 {status} {PHRASES[status]}\r\n"


_date = [0, ""]     # the second of the last Date header, and the header


def date_line() -> str:
    """The Date header (every answer of an origin server carries one), formatted once a
    second."""
    second = int(time.time())
    if second != _date[0]:
        _date[:] = second, f"date: {formatdate(second, usegmt=True)}\r\n"
    return _date[1]


Handler = Callable[[Request], Union[Response, Awaitable[Response]]]

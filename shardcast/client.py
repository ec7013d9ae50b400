"""Backend client for the shardcast server API: signed requests, typed calls, clear errors.

``Client`` is synchronous, ``AsyncClient`` the same calls for asyncio; both are built on httpx::

    from shardcast.client import Client
    with Client("http://127.0.0.1:8000", secret="s3cret") as shardcast:
        answer = shardcast.connect("alice", ["lobby"])
        shardcast.publish("lobby", {"text": "hi"}, user="system")

Every call is signed with ``x-shardcast-signature`` (method, path, query, body and time), or,
with ``signature="compat"``, with the Channelstream ``x-channelstream-secret`` header. Each
endpoint is declared once, in ``Endpoints``; the two clients differ only in how they send.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import httpx
import msgspec

from .signing import REQUEST_HEADER, sign_compat, sign_request

COMPAT_HEADER = "x-channelstream-secret"
DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 10.0
Signature = Literal["request", "compat"]
Json = Any


class ShardcastError(Exception):
    """The server refused a call; ``status`` and ``body`` are its answer."""

    def __init__(self, message: str, status: int = 0, body: Json = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


class ServerUnreachable(ShardcastError):
    """No answer: the server is down, the URL is wrong, or the call timed out."""


class Forbidden(ShardcastError):
    """403: no signature, or the caller's IP is not in ``allow_posting_from``."""


class BadSignature(ShardcastError):
    """401: wrong secret, a stale timestamp (check the clock), or a replayed signature."""


class NotFound(ShardcastError):
    """404: no such endpoint (is the URL that of a shardcast server?)."""


class ValidationError(ShardcastError):
    """422: the request breaks the contract; ``errors`` is the server's ``{field: [...]}``."""

    @property
    def errors(self) -> dict:
        return self.body if isinstance(self.body, dict) else {}

    @property
    def fields(self) -> list[str]:
        """The top-level fields (or item indexes, for message lists) at fault."""
        return list(self.errors)


class RequestTooLarge(ShardcastError):
    """413: the body is over the server's ``max_body_size``."""


class ServerError(ShardcastError):
    """5xx: a shard is unavailable or restarting (503), or the server failed; retry later."""


_BY_STATUS: dict[int, type[ShardcastError]] = {
    401: BadSignature, 403: Forbidden, 404: NotFound, 413: RequestTooLarge, 422: ValidationError,
}


def error_for(status: int, body: Json, what: str) -> ShardcastError:
    """The exception for an error answer, its message taken from the server's body."""
    kind = _BY_STATUS.get(status, ServerError if status >= 500 else ShardcastError)
    return kind(f"{what} answered {status}: {_describe(body)}", status, body)


def _describe(body: Json) -> str:
    if isinstance(body, dict):
        return "; ".join(f"{key}: {_describe(value)}" for key, value in body.items())
    if isinstance(body, list):
        return ", ".join(_describe(item) for item in body)
    return str(body)


def _compact(**fields: Any) -> dict:
    """The fields that were given (None means: let the server use its default)."""
    return {key: value for key, value in fields.items() if value is not None}


def _listed(values: Sequence[str] | str | None) -> list[str] | None:
    if values is None:
        return None
    return [values] if isinstance(values, str) else list(values)


class Endpoints:
    """Every endpoint of the server API, as a typed method. Subclasses send the requests."""

    def _call(self, method: str, path: str, body: Json = None, parse: Any = None) -> Any:
        """Send one request; ``parse`` picks the result out of the decoded answer."""
        raise NotImplementedError

    # -- connections -----------------------------------------------------------------

    def connect(self, username: str, channels: Sequence[str] = (), *,
                conn_id: str | UUID | None = None,
                fresh_user_state: Mapping[str, Any] | None = None,
                user_state: Mapping[str, Any] | None = None,
                state_public_keys: Sequence[str] | None = None,
                channel_configs: Mapping[str, Any] | None = None,
                info: Mapping[str, Any] | None = None) -> Any:
        """Create (or reuse) a connection; the answer has ``conn_id`` and ``ws_url``."""
        return self._call("POST", "/connect", _compact(
            username=username, channels=_listed(channels),
            conn_id=str(conn_id) if conn_id else None, fresh_user_state=fresh_user_state,
            user_state=user_state, state_public_keys=_listed(state_public_keys),
            channel_configs=channel_configs, info=info))

    def subscribe(self, conn_id: str | UUID, channels: Sequence[str] | str, *,
                  channel_configs: Mapping[str, Any] | None = None,
                  info: Mapping[str, Any] | None = None) -> Any:
        """Join channels; the answer lists ``channels`` and ``subscribed_to``."""
        return self._call("POST", "/subscribe", _compact(
            conn_id=str(conn_id), channels=_listed(channels), channel_configs=channel_configs,
            info=info))

    def unsubscribe(self, conn_id: str | UUID, channels: Sequence[str] | str, *,
                    info: Mapping[str, Any] | None = None) -> Any:
        """Leave channels; the answer lists ``channels`` and ``unsubscribed_from``."""
        return self._call("POST", "/unsubscribe", _compact(
            conn_id=str(conn_id), channels=_listed(channels), info=info))

    def disconnect(self, conn_id: str | UUID) -> Any:
        """Close a connection: True if it existed."""
        return self._call("POST", "/disconnect", {"conn_id": str(conn_id)})

    # -- messages ----------------------------------------------------------------------

    def publish(self, channel: str | None, message: Mapping[str, Any] | None = None, *,
                user: str, pm_users: Sequence[str] | None = None,
                exclude_users: Sequence[str] | None = None, no_history: bool | None = None,
                uuid: str | UUID | None = None, timestamp: datetime | str | None = None) -> Any:
        """Post one message to a channel, or (channel None) directly to ``pm_users``.

        Answers the normalised item (with its ``uuid`` and ``timestamp``), or None when the
        server dropped it (no channel and no pm_users)."""
        item = _compact(user=user, channel=channel, message=message,
                        pm_users=_listed(pm_users), exclude_users=_listed(exclude_users),
                        no_history=no_history, uuid=str(uuid) if uuid else None,
                        timestamp=timestamp)
        return self._call("POST", "/message", [item], _first)

    def message(self, items: Sequence[Mapping[str, Any]]) -> Any:
        """POST /message with a list of items, as Channelstream's API takes them."""
        return self._call("POST", "/message", list(items))

    def edit(self, uuid: str | UUID, *, channel: str | None = None,
             pm_users: Sequence[str] | None = None, exclude_users: Sequence[str] | None = None,
             message: Mapping[str, Any] | None = None, user: str | None = None,
             timestamp: datetime | str | None = None) -> Any:
        """Change a posted message; members receive a ``message:edit`` envelope."""
        item = _compact(uuid=str(uuid), channel=channel, pm_users=_listed(pm_users),
                        exclude_users=_listed(exclude_users), message=message, user=user,
                        timestamp=timestamp)
        return self._call("PATCH", "/message", [item], _first)

    def delete(self, uuid: str | UUID, *, channel: str | None = None,
               pm_users: Sequence[str] | None = None,
               exclude_users: Sequence[str] | None = None) -> Any:
        """Remove a posted message; members receive a ``message:delete`` envelope."""
        item = _compact(uuid=str(uuid), channel=channel, pm_users=_listed(pm_users),
                        exclude_users=_listed(exclude_users))
        return self._call("DELETE", "/message", [item], _first)

    # -- users and channels ----------------------------------------------------------

    def user_state(self, user: str, user_state: Mapping[str, Any] | None = None, *,
                   state_public_keys: Sequence[str] | None = None) -> Any:
        """Merge into a user's state; ``state_public_keys`` (if given) replaces the public keys."""
        return self._call("POST", "/user_state", _compact(
            user=user, user_state=dict(user_state or {}),
            state_public_keys=_listed(state_public_keys)))

    def channel_config(self, configs: Mapping[str, Mapping[str, Any] | msgspec.Struct]) -> Any:
        """Create channels or replace their settings (omitted keys take the defaults)."""
        return self._call("POST", "/channel_config", dict(configs))

    def info(self, channels: Sequence[str] | None = None, *,
             exclude_channels: Sequence[str] | None = None, include_history: bool | None = None,
             include_users: bool | None = None, return_public_state: bool | None = None,
             include_connections: bool | None = None, limit: int | None = None,
             after: str | None = None) -> Any:
        """Channels (all when ``channels`` is None), members, history and user states; with
        ``limit``, a page of them by name (pass its ``next`` as ``after`` for the next one)."""
        return self._call("POST", "/info", {"info": _compact(
            channels=_listed(channels), exclude_channels=_listed(exclude_channels),
            include_history=include_history, include_users=include_users,
            return_public_state=return_public_state, include_connections=include_connections,
            limit=limit, after=after)})

    def admin(self) -> Any:
        """Server statistics, summed and per shard (``/admin/admin.json``)."""
        return self._call("GET", "/admin/admin.json")


def _first(answer: Json) -> Json:
    return answer[0] if isinstance(answer, list) and answer else None


class _Transport:
    """What both clients share: the base URL, signing, and turning answers into results."""

    def __init__(self, secret: str, signature: Signature) -> None:
        if not secret:
            raise ValueError("a secret is needed: the one the server runs with (--secret)")
        if signature not in ("request", "compat"):
            raise ValueError("signature must be 'request' (x-shardcast-signature) or 'compat'")
        self.secret = secret
        self.signature = signature

    def _build(self, http: httpx.Client | httpx.AsyncClient, method: str, path: str,
               body: Json) -> httpx.Request:
        content = b"" if body is None else msgspec.json.encode(body)
        request = http.build_request(method, path, content=content,
                                     headers={"content-type": "application/json"})
        if self.signature == "request":
            target = request.url.raw_path.decode("ascii")
            request.headers[REQUEST_HEADER] = sign_request(self.secret, method, target, content)
        else:
            request.headers[COMPAT_HEADER] = sign_compat(self.secret)
        return request

    @staticmethod
    def _result(request: httpx.Request, response: httpx.Response, parse: Any) -> Json:
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        if response.status_code != 200:
            raise error_for(response.status_code, body, f"{request.method} {request.url.path}")
        return parse(body) if parse else body

    @staticmethod
    def _unreachable(request: httpx.Request, error: httpx.TransportError) -> ServerUnreachable:
        return ServerUnreachable(f"{request.method} {request.url}: no answer "
                                 f"({type(error).__name__}: {error}); is shardcast running there?")


class Client(_Transport, Endpoints):
    """The server API over blocking HTTP; use it as a context manager or call ``close()``."""

    def __init__(self, url: str = DEFAULT_URL, secret: str = "", *,
                 signature: Signature = "request", timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(secret, signature)
        self.http = httpx.Client(base_url=url, timeout=timeout, transport=transport,
                                 trust_env=False)

    def _call(self, method: str, path: str, body: Json = None, parse: Any = None) -> Json:
        request = self._build(self.http, method, path, body)
        try:
            response = self.http.send(request)
        except httpx.TransportError as error:
            raise self._unreachable(request, error) from error
        return self._result(request, response, parse)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class AsyncClient(_Transport, Endpoints):
    """The same calls for asyncio: ``await client.connect(...)``."""

    def __init__(self, url: str = DEFAULT_URL, secret: str = "", *,
                 signature: Signature = "request", timeout: float = DEFAULT_TIMEOUT,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(secret, signature)
        self.http = httpx.AsyncClient(base_url=url, timeout=timeout, transport=transport,
                                      trust_env=False)

    async def _call(self, method: str, path: str, body: Json = None, parse: Any = None) -> Json:
        request = self._build(self.http, method, path, body)
        try:
            response = await self.http.send(request)
        except httpx.TransportError as error:
            raise self._unreachable(request, error) from error
        return self._result(request, response, parse)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()

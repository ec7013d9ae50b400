"""The admin pages: sign-in with ``admin_user``/``admin_secret``, sessions, and the panel's data.

A session is a random cookie token kept in the supervisor's memory (it ends with the process).
Failed sign-ins are throttled per client address: after a few, each further try must wait,
longer and longer, and gets 429 until then.
"""
from __future__ import annotations

import hmac
import secrets
import time
from typing import Any, Awaitable, Callable
from uuid import UUID

import orjson

from . import assets
from .config import Config
from .http_api import HttpApi
from .http_server import Request, Response, json_response
from .schemas import InfoFlags
from .signing import REQUEST_HEADER, sign_request

COOKIE = "shardcast_admin"
SESSION_SECONDS = 12 * 3600
FREE_FAILURES = 3            # failed sign-ins allowed before the waits begin
MAX_WAIT = 300.0             # the longest wait between tries, in seconds
MAX_TRACKED = 10000          # client addresses remembered for throttling
PANEL_CHANNELS = 200         # the most channels the panel lists at once
TRANSPORTS = {"WebSocketClient": "websocket", "LongPoll": "long poll"}
Handler = Callable[[Request], "Response | Awaitable[Response]"]


class Throttle:
    """Failed attempts per client: the n-th failure past FREE_FAILURES costs 2**n seconds."""

    def __init__(self) -> None:
        self.failures: dict[str, tuple[int, float]] = {}   # client -> (count, next allowed)

    def wait(self, client: str, now: float) -> float:
        """Seconds the client must still wait before it may try again (0: go ahead)."""
        _, allowed = self.failures.get(client, (0, 0.0))
        return max(0.0, allowed - now)

    def failed(self, client: str, now: float) -> None:
        if len(self.failures) >= MAX_TRACKED:
            self.failures = {key: value for key, value in self.failures.items()
                             if value[1] > now}
        count = self.failures.get(client, (0, 0.0))[0] + 1
        delay = min(MAX_WAIT, 2.0 ** (count - FREE_FAILURES)) if count > FREE_FAILURES else 0.0
        self.failures[client] = (count, now + delay)

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)


class Admin:
    def __init__(self, config: Config, api: HttpApi) -> None:
        self.config = config
        self.api = api
        self.sessions: dict[str, float] = {}   # token -> expiry (monotonic)
        self.throttle = Throttle()

    def routes(self) -> dict[str, tuple[dict, bool]]:
        page = assets.file_response(assets.package_file("admin.html"))
        login = assets.file_response(assets.package_file("admin-login.html"))
        return {
            "/admin": ({"GET": self._page(page)}, False),
            "/admin/": ({"GET": self._page(page)}, False),
            "/admin/login": ({"GET": login, "POST": self.login}, False),
            "/admin/logout": ({"POST": self.logout}, False),
            "/admin/admin.json": ({"GET": self.admin_json, "POST": self.admin_json}, False),
            "/admin/channels.json": ({"GET": self._only_signed_in(self.channels)}, False),
            "/admin/lookup.json": ({"GET": self._only_signed_in(self.lookup)}, False),
            "/admin/sign.json": ({"POST": self._only_signed_in(self.sign)}, False),
        }

    # -- sessions -----------------------------------------------------------------------

    def signed_in(self, request: Request) -> bool:
        token = _cookie(request, COOKIE)
        expiry = self.sessions.get(token) if token else None
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self.sessions[token]
            return False
        return True

    def _page(self, serve: Handler) -> Handler:
        def page(request: Request) -> Response | Awaitable[Response]:
            if self.signed_in(request):
                return serve(request)
            return Response(303, b"", "text/plain", {"location": "/admin/login"})
        return page

    def _only_signed_in(self, handler: Handler) -> Handler:
        def guarded(request: Request) -> Response | Awaitable[Response]:
            if not self.signed_in(request):
                return json_response({"request": "Sign in at /admin/login first"}, 403)
            return handler(request)
        return guarded

    def login(self, request: Request) -> Response:
        if not self.config.admin_secret:
            return json_response({"error": "Admin sign-in is off: set admin_secret in the "
                                  "configuration (or SHARDCAST_ADMIN_SECRET)"}, 403)
        now = time.monotonic()
        wait = self.throttle.wait(request.client, now)
        if wait > 0:
            return _too_many(wait)
        try:
            form = orjson.loads(request.body)
            user, password = str(form["user"]), str(form["password"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return json_response({"error": "Send {\"user\": ..., \"password\": ...}"}, 400)
        good_user = hmac.compare_digest(user.encode(), self.config.admin_user.encode())
        good_password = hmac.compare_digest(password.encode(), self.config.admin_secret.encode())
        if not (good_user and good_password):
            self.throttle.failed(request.client, now)
            wait = self.throttle.wait(request.client, now)
            if wait > 0:
                return _too_many(wait)
            return json_response({"error": "Wrong user name or password"}, 401)
        self.throttle.succeeded(request.client)
        token = secrets.token_urlsafe(32)
        self.sessions = {key: expiry for key, expiry in self.sessions.items() if expiry > now}
        self.sessions[token] = now + SESSION_SECONDS
        return Response(200, b'{"ok":true}', headers={"set-cookie": (
            f"{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={SESSION_SECONDS}")})

    def logout(self, request: Request) -> Response:
        token = _cookie(request, COOKIE)
        if token:
            self.sessions.pop(token, None)
        return Response(200, b'{"ok":true}', headers={
            "set-cookie": f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"})

    # -- data ---------------------------------------------------------------------------

    def admin_json(self, request: Request) -> Response | Awaitable[Response]:
        """The API's admin.json: for a signed call, or for a signed-in admin."""
        if not self.signed_in(request):
            refusal = self.api.authorize(request)
            if refusal is not None:
                return refusal
        return self.api.admin(request)

    async def channels(self, request: Request) -> Response:
        """A page for the panel: the first channels by name whose name holds ``filter``
        (whatever the case), and how many more there are."""
        flags = InfoFlags(include_connections=True, limit=PANEL_CHANNELS)
        return json_response(await self.api.commands.info(flags,
                                                          match=request.query.get("filter")))

    async def lookup(self, request: Request) -> Response:
        """A connection by its id, or a user by name with each of its connections."""
        query = request.query.get("q", "").strip()
        if not query:
            return json_response({"q": ["Give a user name or a connection id"]}, 422)
        cluster = self.api.commands.cluster
        conn_id = _canonical_uuid(query)
        if conn_id is not None:
            found = await cluster.call(cluster.owner(conn_id), "conn_info",
                                       {"conn_ids": [conn_id]})
            if conn_id in found:
                return json_response({"connection": {"conn_id": conn_id,
                                                     **_named(found[conn_id])}})
            return json_response({"q": [f"No connection {conn_id}"]}, 404)
        users = await cluster.call(cluster.owner(query), "user_states", {
            "users": [query], "public": False, "connections": True})
        if not users:
            return json_response({"q": [f"No user or connection named {query!r}"]}, 404)
        user = users[0]
        calls = {shard: {"conn_ids": ids} for shard, ids in cluster.group(user["connections"]).items()}
        connections: dict[str, Any] = {}
        for found in await cluster.call_many(calls, "conn_info"):
            connections.update(found)
        user["connections"] = [{"conn_id": conn_id, **_named(info)}
                               for conn_id, info in sorted(connections.items())]
        return json_response({"user": user})

    def sign(self, request: Request) -> Response:
        """A fresh x-shardcast-signature for a request the API explorer is about to send."""
        try:
            wanted = orjson.loads(request.body)
            method, target, body = wanted["method"], wanted["target"], wanted.get("body") or ""
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return json_response({"error": "Send {\"method\", \"target\", \"body\"}"}, 400)
        value = sign_request(self.config.secret, str(method), str(target), str(body).encode())
        return json_response({"header": REQUEST_HEADER, "value": value})


def _too_many(wait: float) -> Response:
    seconds = int(wait) + 1
    return Response(429, orjson.dumps({"error": f"Too many failed sign-ins: wait {seconds} s"}),
                    headers={"retry-after": str(seconds)})


def _named(info: dict) -> dict:
    return {**info, "transport": TRANSPORTS.get(info["transport"], info["transport"])}


def _cookie(request: Request, name: str) -> str | None:
    for part in request.headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _canonical_uuid(text: str) -> str | None:
    try:
        return str(UUID(text))
    except ValueError:
        return None

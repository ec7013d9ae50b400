"""The admin pages: sign-in with ``admin_user``/``admin_secret``, sessions, and the panel's data.

A session is a random token kept in the supervisor's memory (it ends with the process), in a
cookie that also carries a device id signed with admin_secret: it tells a browser that signed
in here before from any other.

Failed sign-ins are throttled twice. Per client (the address, or a known browser's device id):
after a few, each further try must wait, longer and longer. And all unknown browsers together
share a budget of failures that refills slowly, so that guessing from many addresses at once
gets no further than from one. The trade-off: whoever keeps that budget spent keeps sign-in
closed to unknown browsers for as long as they go on (half a minute after they stop); a
browser that signed in here before is let in on its own throttle, and open sessions are never
touched. Requests get 429 with Retry-After while they must wait.

Every POST that acts with the session must come from the admin's own pages (Sec-Fetch-Site,
or Origin against Host): a page elsewhere cannot make the admin's browser send one.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

import orjson

from . import assets
from .config import Config
from .envelopes import canonical_uuid
from .http_api import HttpApi
from .http_messages import Request, Response, json_response
from .schemas import InfoFlags
from .signing import REQUEST_HEADER, sign_request

COOKIE = "shardcast_admin"   # "<session token>.<device id>.<its signature>"
SESSION_SECONDS = 12 * 3600
DEVICE_SECONDS = 365 * 86400  # how long a browser that signed in is known by its cookie
FREE_FAILURES = 3            # failed sign-ins of one client before its waits begin
MAX_WAIT = 300.0             # the longest wait between tries, in seconds
MAX_TRACKED = 10000          # clients remembered for throttling
FAILURE_BUDGET = 20          # failed sign-ins of all unknown browsers together, and then
BUDGET_REFILL = 30.0         # one more every this many seconds
PANEL_CHANNELS = 200         # the most channels the panel lists at once
SAME_SITE = ("same-origin", "none")   # Sec-Fetch-Site of the admin's own pages (none: typed in)
CROSS_SITE = {"request": "Refused: the admin pages take POSTs from their own pages only"}
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


class Budget:
    """Failures shared by all clients: FAILURE_BUDGET, then one more every BUDGET_REFILL
    seconds (a token bucket)."""

    def __init__(self) -> None:
        self.left = float(FAILURE_BUDGET)
        self.counted = time.monotonic()     # when ``left`` was last brought up to date

    def wait(self, now: float) -> float:
        """Seconds until a failure may be spent again (0: go ahead)."""
        self._refill(now)
        return max(0.0, (1 - self.left) * BUDGET_REFILL)

    def spend(self, now: float) -> None:
        self._refill(now)
        self.left -= 1

    def _refill(self, now: float) -> None:
        self.left = min(FAILURE_BUDGET, self.left + (now - self.counted) / BUDGET_REFILL)
        self.counted = now


class Admin:
    def __init__(self, config: Config, api: HttpApi) -> None:
        self.config = config
        self.api = api
        self.sessions: dict[str, float] = {}   # token -> expiry (monotonic)
        self.throttle = Throttle()
        self.budget = Budget()
        secure = config.admin_cookie_secure
        self.secure = secure == "true" or (secure == "auto" and bool(config.ssl_certfile))

    def routes(self) -> dict[str, tuple[dict, bool]]:
        page = assets.file_response(assets.package_file("admin.html"), assets.PAGE_HEADERS)
        login = assets.file_response(assets.package_file("admin-login.html"), assets.PAGE_HEADERS)
        return {
            "/admin": ({"GET": self._page(page)}, False),
            "/admin/": ({"GET": self._page(page)}, False),
            "/admin/login": ({"GET": login, "POST": _same_site(self.login)}, False),
            "/admin/logout": ({"POST": _same_site(self.logout)}, False),
            "/admin/admin.json": ({"GET": self.admin_json, "POST": self.admin_json}, False),
            "/admin/channels.json": ({"GET": self._only_signed_in(self.channels)}, False),
            "/admin/lookup.json": ({"GET": self._only_signed_in(self.lookup)}, False),
            "/admin/sign.json": ({"POST": _same_site(self._only_signed_in(self.sign))}, False),
        }

    # -- sessions -----------------------------------------------------------------------

    def signed_in(self, request: Request) -> bool:
        token, _ = self._cookie(request)
        expiry = self.sessions.get(token) if token else None
        if expiry is None:
            return False
        if expiry < time.monotonic():
            del self.sessions[token]
            return False
        return True

    def _cookie(self, request: Request) -> tuple[str, str | None]:
        """The session token of the cookie, and its device id if this server signed it."""
        token, _, device = (_cookie(request, COOKIE) or "").partition(".")
        device, _, signature = device.partition(".")
        if not (device and hmac.compare_digest(signature, self._signature(device))):
            return token, None
        return token, device

    def _signature(self, device: str) -> str:
        key = self.config.admin_secret.encode()     # a new password forgets every browser
        return hmac.new(key, device.encode(), hashlib.sha256).hexdigest()

    def _set_cookie(self, token: str, device: str) -> dict[str, str]:
        value = f"{token}.{device}.{self._signature(device)}"
        secure = "; Secure" if self.secure else ""
        return {"set-cookie": f"{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; "
                              f"Max-Age={DEVICE_SECONDS}{secure}"}

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
        _, device = self._cookie(request)
        wait = self._wait(request.client, device, now)
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
            self.throttle.failed(device or request.client, now)
            if device is None:
                self.budget.spend(now)
            wait = self._wait(request.client, device, now)
            if wait > 0:
                return _too_many(wait)
            return json_response({"error": "Wrong user name or password"}, 401)
        self.throttle.succeeded(device or request.client)
        token = secrets.token_urlsafe(32)
        self.sessions = {key: expiry for key, expiry in self.sessions.items() if expiry > now}
        self.sessions[token] = now + SESSION_SECONDS
        return Response(200, b'{"ok":true}',
                        headers=self._set_cookie(token, device or secrets.token_urlsafe(16)))

    def _wait(self, client: str, device: str | None, now: float) -> float:
        """Seconds before a sign-in may be tried: a browser known by its device id waits for
        its own failures only, any other for its address's and the shared budget."""
        if device is not None:
            return self.throttle.wait(device, now)
        return max(self.throttle.wait(client, now), self.budget.wait(now))

    def logout(self, request: Request) -> Response:
        """Ends the session; the browser stays known."""
        token, device = self._cookie(request)
        self.sessions.pop(token, None)
        if device is None:
            return Response(200, b'{"ok":true}', headers={
                "set-cookie": f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"})
        return Response(200, b'{"ok":true}', headers=self._set_cookie("", device))

    # -- data ---------------------------------------------------------------------------

    def admin_json(self, request: Request) -> Response | Awaitable[Response]:
        """The API's admin.json: for a signed call, or for a signed-in admin's own pages."""
        if self.signed_in(request):
            return _same_site(self.api.admin)(request)
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
        shards = self.api.commands.shards
        conn_id = canonical_uuid(query)
        if conn_id is not None:
            found = await shards.call(shards.owner(conn_id), "conn_info",
                                       {"conn_ids": [conn_id]})
            if conn_id in found:
                return json_response({"connection": {"conn_id": conn_id,
                                                     **_named(found[conn_id])}})
            return json_response({"q": [f"No connection {conn_id}"]}, 404)
        users = await shards.call(shards.owner(query), "user_states", {
            "users": [query], "public": False, "connections": True})
        if not users:
            return json_response({"q": [f"No user or connection named {query!r}"]}, 404)
        user = users[0]
        calls = {shard: {"conn_ids": ids} for shard, ids in shards.group(user["connections"]).items()}
        connections: dict[str, Any] = {}
        for found in await shards.call_many(calls, "conn_info"):
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


def _same_site(handler: Handler) -> Handler:
    """``handler`` for requests from the admin's own pages, or from no page at all (curl,
    scripts); a page elsewhere making the admin's browser send one gets 403."""
    def guarded(request: Request) -> Response | Awaitable[Response]:
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        if site is not None:
            foreign = site not in SAME_SITE
        else:       # older browsers send Origin only
            foreign = origin is not None and urlsplit(origin).netloc != request.headers.get("host")
        if foreign:
            return json_response(CROSS_SITE, 403)
        return handler(request)
    return guarded


def _named(info: dict) -> dict:
    return {**info, "transport": TRANSPORTS.get(info["transport"], info["transport"])}


def _cookie(request: Request, name: str) -> str | None:
    for part in request.headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None

"""The demo chat's own backend: signs people in, decides what they may do, calls shardcast.

It is what an application in front of shardcast looks like: the browser talks only to these
``/api/*`` endpoints (and receives from shardcast directly); this backend holds the secret and
calls shardcast through ``shardcast.client``.
"""
from __future__ import annotations

import re
import secrets
import zlib
from importlib import resources
from typing import Any, Callable

import orjson

from ..assets import content_type
from ..client import AsyncClient, ShardcastError
from ..http_messages import Request, Response, json_response

ROOMS = ("lobby", "random", "help")
ROOM_SETTINGS = {"notify_presence": True, "store_history": True, "history_size": 50,
                 "broadcast_presence_with_user_lists": True, "notify_state": True}
STATUSES = ("online", "away", "busy")
PUBLIC_KEYS = ["status", "color"]
COLORS = ("#2563eb", "#db2777", "#059669", "#d97706", "#7c3aed", "#0891b2", "#dc2626")
USERNAME = re.compile(r"^[\w .-]{1,24}$")
MAX_TEXT = 2000
SESSION_COOKIE = "demo_session"
INFO = {"include_history": True, "include_users": True, "return_public_state": True}
STATIC_FILES = ("index.html", "demo.js", "demo.css")


class Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class DemoApp:
    def __init__(self, shardcast: AsyncClient, server_url: str) -> None:
        self.shardcast = shardcast
        self.server_url = server_url
        self.sessions: dict[str, str] = {}      # cookie token -> username
        self.authors: dict[str, str] = {}       # message uuid -> who may edit or delete it
        self.connections: dict[str, str] = {}   # conn_id -> its user
        self.routes: dict[tuple[str, str], Callable] = {
            ("POST", "/api/connect"): self.connect,
            ("POST", "/api/subscribe"): self.subscribe,
            ("POST", "/api/unsubscribe"): self.unsubscribe,
            ("POST", "/api/message"): self.message,
            ("PATCH", "/api/message"): self.edit,
            ("DELETE", "/api/message"): self.delete,
            ("POST", "/api/user_state"): self.user_state,
        }
        self.files = {name: (resources.files(__package__) / "static" / name).read_bytes()
                      for name in STATIC_FILES}

    async def setup(self) -> None:
        """The rooms exist from the start, with presence, history and state notices."""
        await self.shardcast.channel_config({room: ROOM_SETTINGS for room in ROOMS})

    # -- dispatch ---------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        if request.method == "GET":
            return self.page(request.path)
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            return json_response({"error": "no such endpoint"}, 404)
        try:
            body = orjson.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise Refused(400, "send a JSON object")
            return await handler(request, body)
        except Refused as refusal:
            return json_response({"error": str(refusal)}, refusal.status)
        except orjson.JSONDecodeError:
            return json_response({"error": "send a JSON object"}, 400)
        except ShardcastError as error:
            return json_response({"error": str(error)}, 502 if error.status >= 500 else 400)

    def page(self, path: str) -> Response:
        if path == "/config.json":
            return json_response({"serverUrl": self.server_url, "rooms": ROOMS,
                                  "statuses": STATUSES})
        name = "index.html" if path == "/" else path.removeprefix("/static/")
        if name not in self.files:
            return json_response({"error": "not found"}, 404)
        return Response(200, self.files[name], content_type(name), {"cache-control": "no-cache"})

    def user(self, request: Request) -> str:
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and value in self.sessions:
                return self.sessions[value]
        raise Refused(401, "sign in first")

    # -- endpoints ----------------------------------------------------------------------

    async def connect(self, request: Request, body: dict) -> Response:
        username = str(body.get("username", "")).strip()
        if not USERNAME.match(username):
            raise Refused(400, "pick a name of 1 to 24 letters, digits, spaces, dots or dashes")
        color = COLORS[zlib.crc32(username.encode()) % len(COLORS)]
        conn_id = body.get("conn_id") or None
        if conn_id is not None and self.connections.get(conn_id, username) != username:
            raise Refused(403, "that connection is someone else's")
        answer = await self.shardcast.connect(
            username, _rooms(body.get("channels")) or [ROOMS[0]], conn_id=conn_id,
            fresh_user_state={"status": "online", "color": color},
            state_public_keys=PUBLIC_KEYS, info=INFO)
        self.connections[answer["conn_id"]] = username
        token = secrets.token_urlsafe(18)
        self.sessions[token] = username
        response = json_response(answer)
        response.headers["set-cookie"] = (f"{SESSION_COOKIE}={token}; Path=/; HttpOnly; "
                                          "SameSite=Strict")
        return response

    async def subscribe(self, request: Request, body: dict) -> Response:
        conn_id, rooms = self._own_connection(request, body)
        return json_response(await self.shardcast.subscribe(conn_id, rooms, info=INFO))

    async def unsubscribe(self, request: Request, body: dict) -> Response:
        conn_id, rooms = self._own_connection(request, body)
        return json_response(await self.shardcast.unsubscribe(conn_id, rooms, info=INFO))

    async def message(self, request: Request, body: dict) -> Response:
        user = self.user(request)
        posted = await self.shardcast.publish(_room(body), {"text": _text(body)}, user=user)
        self.authors[posted["uuid"]] = user
        return json_response(posted)

    async def edit(self, request: Request, body: dict) -> Response:
        uuid = self._own(request, body)
        return json_response(await self.shardcast.edit(uuid, channel=_room(body),
                                                       message={"text": _text(body)}))

    async def delete(self, request: Request, body: dict) -> Response:
        uuid = self._own(request, body)
        self.authors.pop(uuid, None)
        return json_response(await self.shardcast.delete(uuid, channel=_room(body)))

    async def user_state(self, request: Request, body: dict) -> Response:
        user = self.user(request)
        state = body.get("update_state") or {}
        if state.get("status") not in STATUSES:
            raise Refused(400, f"status must be one of {', '.join(STATUSES)}")
        return json_response(await self.shardcast.user_state(user, {"status": state["status"]}))

    def _own_connection(self, request: Request, body: dict) -> tuple[str, list[str]]:
        conn_id = str(body.get("conn_id"))
        if self.connections.get(conn_id) != self.user(request):
            raise Refused(403, "that connection is not yours")
        rooms = _rooms(body.get("channels"))
        if not rooms:
            raise Refused(400, f"channels must name some of {', '.join(ROOMS)}")
        return conn_id, rooms

    def _own(self, request: Request, body: dict) -> str:
        uuid = str(body.get("uuid", ""))
        if self.authors.get(uuid) != self.user(request):
            raise Refused(403, "you can only change your own messages")
        return uuid


def _rooms(value: Any) -> list[str]:
    return [room for room in value if room in ROOMS] if isinstance(value, list) else []


def _room(body: dict) -> str:
    room = body.get("channel")
    if room not in ROOMS:
        raise Refused(400, f"channel must be one of {', '.join(ROOMS)}")
    return room


def _text(body: dict) -> str:
    text = str(body.get("text", "")).strip()
    if not 1 <= len(text) <= MAX_TEXT:
        raise Refused(400, f"write 1 to {MAX_TEXT} characters")
    return text

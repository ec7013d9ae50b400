"""The HTTP API: routes, signatures, IP allow-list, CORS, and 4xx answers for bad input."""
from __future__ import annotations

import functools
import ipaddress
import re
from typing import Any, Awaitable

import orjson

from . import schemas, signing
from .shards import ShardUnavailable
from .commands import Commands
from .config import Config
from .http_messages import Request, Response, json_response
from .ipc import Link
from .schemas import Invalid

ALLOW_METHODS = "GET, POST, OPTIONS, PUT, DELETE, PATCH"
ALLOW_HEADERS = "content-type, x-channelstream-secret, x-shardcast-signature"
CALLBACK = re.compile(r"^[A-Za-z_$][\w$.]{0,127}$")
UNKNOWN_CONNECTION = {"conn_id": ["Unknown connection"]}
MISSING_SIGNATURE = {
    True: "Missing signature: send the x-shardcast-signature (or x-channelstream-secret) header",
    False: "Missing signature: send the x-shardcast-signature header",
}
SIGNATURE_HINTS = {
    signing.MALFORMED: "x-shardcast-signature must read t=<unix seconds>,v1=<hex HMAC-SHA256>",
    signing.STALE: "the signature's t is more than {window:g} s away from the server clock: "
                   "sign each request when you send it, and check the clock",
    signing.MISMATCH: "the signature does not match: sign '<t>.<METHOD>.<path and query as "
                      "sent>.' followed by the exact body bytes, with the shared secret",
}
COMPAT_OFF = ("x-channelstream-secret is turned off here (allow_compat_signatures = false): "
              "sign with x-shardcast-signature")
SHUTTING_DOWN = {"server": ["Shutting down; retry in a moment"]}
REDIS_DOWN = {"error": "Redis is unreachable; retry in a moment"}
REPLAYED = "this signature was accepted before: sign every request afresh"
HEALTHY = orjson.dumps({"status": "ok"})



class HttpApi:
    def __init__(self, config: Config, commands: Commands) -> None:
        self.config = config
        self.commands = commands
        self.allowed = _networks(config.allow_posting_from)
        self.closing = False    # set at shutdown: new requests get 503, those in flight finish
        self.in_flight = 0
        # A backend's next request reaches another API process only if there is one: then
        # what this one queued for the shards must leave before its answer (see decorate).
        self.flush_first = config.api_processes > 1
        self.verify_compat = signing.CompatVerifier(
            config.secret, config.signature_max_age if config.validate_requests else None)
        self.replays = (signing.ReplayGuard(config.signature_window, config.replay_cache_size)
                        if config.refuse_replayed_signatures else None)
        signed = {
            "/connect": {"POST": self.connect},
            "/subscribe": {"POST": self.subscribe},
            "/unsubscribe": {"POST": self.unsubscribe},
            "/message": {"POST": self.message, "PATCH": self.edit, "DELETE": self.delete},
            "/user_state": {"POST": self.user_state},
            "/channel_config": {"POST": self.channel_config},
            "/info": {"GET": self.info, "POST": self.info},
            "/admin/admin.json": {"GET": self.admin, "POST": self.admin},
        }
        public = {
            "/disconnect": {"GET": self.disconnect, "POST": self.disconnect},
            "/listen": {"GET": self.listen},
            "/health": {"GET": self.health},
            "/ready": {"GET": self.ready},
        }
        self.routes = {path: (methods, True) for path, methods in signed.items()}
        self.routes.update({path: (methods, False) for path, methods in public.items()})
        # What a cluster node cannot answer without Redis (/health and /ready say so).
        self.needs_state = frozenset(self.routes) - {"/health", "/ready"}

    # -- dispatch -------------------------------------------------------------------

    def handle(self, request: Request) -> Response | Awaitable[Response]:
        if self.closing:
            request.keep_alive = False      # the answer closes the connection
            return json_response(SHUTTING_DOWN, 503)
        if request.method == "OPTIONS":
            return Response(200, b"", "text/plain", {
                "access-control-allow-methods": ALLOW_METHODS,
                "access-control-allow-headers": ALLOW_HEADERS,
                "access-control-max-age": "86400"})
        route = self.routes.get(request.path)
        if route is None:
            return json_response({"path": [f"No such endpoint: {request.path}"]}, 404)
        methods, signed = route
        # HEAD is GET without the body (HttpProtocol leaves it out): load balancers check so.
        handler = methods.get("GET" if request.method == "HEAD" else request.method)
        if handler is None:
            allowed = [*methods, "HEAD"] if "GET" in methods else list(methods)
            return Response(405, orjson.dumps({"method": [f"Use {', '.join(methods)}"]}),
                            headers={"allow": ", ".join(allowed)})
        if signed:
            refusal = self.authorize(request)
            if refusal is not None:
                return refusal
        if request.path in self.needs_state and self.commands.directory.down():
            return json_response(REDIS_DOWN, 503)      # a cluster node without its Redis
        try:
            result = handler(request)
        except Invalid as error:
            return json_response(error.errors, error.status)
        except ShardUnavailable as error:    # a command sent without waiting (/message)
            return json_response(error.errors(), 503)
        if isinstance(result, Response):
            return result
        return self._guard(result)

    async def _guard(self, pending: Awaitable[Response]) -> Response:
        self.in_flight += 1
        try:
            return await pending
        except Invalid as error:
            return json_response(error.errors, error.status)
        except ShardUnavailable as error:
            return json_response(error.errors(), 503)
        finally:
            self.in_flight -= 1

    def decorate(self, request: Request, response: Response) -> None:
        """Just before an answer leaves. With several API processes, what the request sent the
        shards leaves first: the backend's next request may reach another one, whose frames
        must not overtake these (sequential posts arrive in order; see also ``_sent_on``).
        Alone, this process queues the next request's frames behind these, and a tick's
        requests share a write. CORS on every answer: browsers call /listen and /disconnect
        directly."""
        if self.flush_first:
            self.commands.shards.flush()
        allowed = self.config.allow_cors
        origin = request.headers.get("origin")
        if not allowed:
            response.headers["access-control-allow-origin"] = "*"
        elif origin in allowed:
            response.headers["access-control-allow-origin"] = origin
            response.headers["vary"] = "Origin"

    def authorize(self, request: Request) -> Response | None:
        """The x-shardcast-signature header when present, else the Channelstream one."""
        if not _client_allowed(request.client, self.allowed):
            return json_response({"request": f"IP {request.client} is not allowed to post"}, 403)
        signature = request.headers.get(signing.REQUEST_HEADER)
        if signature is not None:
            return self._check_signed(request, signature)
        token = request.headers.get("x-channelstream-secret") or request.query.get("secret")
        if not token:
            missing = MISSING_SIGNATURE[self.config.allow_compat_signatures]
            return json_response({"request": missing}, 403)
        if not self.config.allow_compat_signatures:
            return _bad_signature(COMPAT_OFF)
        if not self.verify_compat(token):
            return json_response({"request": "Bad Signature"}, 401)
        return None

    def _check_signed(self, request: Request, signature: str) -> Response | None:
        config = self.config
        reason = signing.check_request(signature, config.secret, request.method, request.target,
                                       request.body, config.signature_window)
        if reason is not None:
            return _bad_signature(SIGNATURE_HINTS[reason].format(window=config.signature_window))
        if self.replays is None:
            return None
        try:
            if self.replays.first_use(signature):
                return None
        except signing.ReplayGuard.Full:
            return json_response({"request": [
                f"{config.replay_cache_size} signatures are held against replays "
                "(replay_cache_size); retry in a moment"]}, 503)
        return _bad_signature(REPLAYED)

    # -- endpoints ------------------------------------------------------------------

    async def connect(self, request: Request) -> Response:
        body = schemas.decode(request.body, schemas.ConnectBody)
        return json_response(await self.commands.connect(body, _host(request, self.config)))

    async def subscribe(self, request: Request) -> Response:
        body = schemas.convert(_with_query_conn_id(request), schemas.SubscribeBody)
        return json_response(await self.commands.subscribe(body))

    async def unsubscribe(self, request: Request) -> Response:
        body = schemas.convert(_with_query_conn_id(request), schemas.SubscribeBody)
        return json_response(await self.commands.unsubscribe(body))

    def message(self, request: Request) -> Response:
        return self._sent_on(*self.commands.publish(schemas.decode(request.body,
                                                                   schemas.MessageList)))

    def edit(self, request: Request) -> Response:
        return self._sent_on(*self.commands.edit(schemas.decode(request.body,
                                                                schemas.EditList)))

    def delete(self, request: Request) -> Response:
        return self._sent_on(*self.commands.delete(schemas.decode(request.body,
                                                                  schemas.DeleteList)))

    def _sent_on(self, answer: bytes, links: list[Link]) -> Response:
        """The answer to a request whose last commands went without waiting for the shards
        (casts, or a /user_state's changes to its channels). With several API
        processes it leaves once they are in the links' sockets: flushed, a full socket (its
        shard behind) would keep them in this process, and the backend's next post, through
        another one, could overtake them."""
        if not self.flush_first:
            return Response(200, answer)
        return Response(200, answer, after=self.commands.shards.in_sockets(links))

    async def user_state(self, request: Request) -> Response:
        body = schemas.decode(request.body, schemas.UserStateBody)
        answer, links = await self.commands.user_state(body)
        return self._sent_on(orjson.dumps(answer), links)

    async def channel_config(self, request: Request) -> Response:
        configs = schemas.decode(request.body, schemas.ChannelConfigs)
        return json_response(await self.commands.channel_config(configs))

    async def info(self, request: Request) -> Response:
        if request.body.strip():
            flags = schemas.decode(request.body, schemas.InfoBody).info
            result = await self.commands.info(flags, flags.channels)
        else:
            result = await self.commands.info(schemas.InfoFlags())
        return json_response(result)

    async def admin(self, request: Request) -> Response:
        return json_response(await self.commands.admin())

    def health(self, request: Request) -> Response:
        return Response(200, HEALTHY)

    async def ready(self, request: Request) -> Response:
        down = await self.commands.down_shards()
        if self.commands.directory.down():
            down["redis"] = f"unreachable at {self.commands.directory.redis.address}"
        if down:
            return json_response({"status": "not ready", "down": down}, 503)
        return json_response({"status": "ready", "shards": self.config.workers})

    async def disconnect(self, request: Request) -> Response:
        if request.method == "GET":
            query = schemas.convert({k: v for k, v in request.query.items() if k == "conn_id"},
                                    schemas.ConnIdQuery)
            conn_id = query.conn_id
        else:
            conn_id = schemas.decode(request.body, schemas.DisconnectBody).conn_id
        return json_response(await self.commands.disconnect(str(conn_id)))

    async def listen(self, request: Request) -> Response:
        conn_id = schemas.convert({k: v for k, v in request.query.items() if k == "conn_id"},
                                  schemas.ConnIdQuery).conn_id
        callback = request.query.get("callback")
        if callback is not None and not CALLBACK.match(callback):
            raise Invalid({"callback": ["Must be a JavaScript identifier"]})
        offsets, since = schemas.positions(request.query,
                                           self.config.max_channels_per_connection)
        frames = await self.commands.listen(str(conn_id), offsets, since)
        if frames is None:
            return json_response(UNKNOWN_CONNECTION, 401)
        if callback is None:
            return Response(200, frames)
        return Response(200, callback.encode() + b"(" + frames + b")", "application/javascript")


def _with_query_conn_id(request: Request) -> Any:
    """The JSON body, with ``conn_id`` taken from the query string when the body lacks it."""
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise Invalid(schemas.INVALID_JSON) from None
    if isinstance(body, dict) and "conn_id" not in body and "conn_id" in request.query:
        body["conn_id"] = request.query["conn_id"]
    return body


def _host(request: Request, config: Config) -> str:
    """The host name the backend addressed, for the websocket URL it hands to browsers."""
    host = request.headers.get("host", "")
    if host.startswith("["):
        return host[:host.index("]") + 1] if "]" in host else host
    host = host.rsplit(":", 1)[0]
    if host:
        return host
    return "127.0.0.1" if config.host in ("0.0.0.0", "", "::") else config.host


def _bad_signature(hint: str) -> Response:
    return json_response({"request": "Bad Signature", "hint": hint}, 401)


class Networks(tuple):
    """Allowed networks, hashed by identity: the allow-list cache looks it up per call."""

    __hash__ = object.__hash__
    __eq__ = object.__eq__


def _networks(entries: tuple[str, ...]) -> Networks | None:
    """Allowed networks; None allows everyone (the ``0.0.0.0`` entry)."""
    if "0.0.0.0" in entries:
        return None
    return Networks(ipaddress.ip_network(entry, strict=False) for entry in entries)


@functools.lru_cache(maxsize=4096)   # a backend calls from a few addresses, very often
def _client_allowed(client: str, networks: Networks | None) -> bool:
    if networks is None:
        return True
    try:
        address = ipaddress.ip_address(client)
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)

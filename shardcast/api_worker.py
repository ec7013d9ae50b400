"""An API process: serves the HTTP API on the shared API port (SO_REUSEPORT, so the kernel
spreads connections over the API processes), with links of its own to every shard.

It answers the API, static files, OpenAPI, /health and /ready itself, and hands the admin pages
and /metrics to the supervisor over its control link (their state lives there). It stops when
the supervisor says ``shutdown``: no new connections, new requests on open ones get 503, and it
exits once those in flight are answered (or at shutdown_timeout).
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import orjson
import uvloop

from . import descriptors, listening, logs, site
from .api_counts import RequestCounts
from .commands import Commands
from .config import Config
from .http_api import HttpApi
from .http_limits import HttpLimits
from .http_server import HttpProtocol
from .http_messages import Request, Response
from .ipc import Kind, Link
from .shards import Shards
from .worker import tune_gc

log = logging.getLogger("shardcast.api")
CONTROL_SOCKET = "api.sock"     # in the IPC directory: the supervisor listens there
HANDOVER_TIMEOUT = 15.0         # seconds the supervisor may take to answer a handed-over request
PARENT_CHECK = 1.0


def api_main(index: int, config: Config, ipc_dir: str) -> None:
    """Process entry point."""
    logs.setup(config.log_level, config.log_format, f"api-{index}")
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the supervisor decides when to stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    tune_gc()
    uvloop.run(_serve(index, config, ipc_dir))


async def _serve(index: int, config: Config, ipc_dir: str) -> None:
    await ApiProcess(index, config, ipc_dir).run()      # made inside the loop it keeps


class ApiProcess:
    def __init__(self, index: int, config: Config, ipc_dir: str) -> None:
        self.index = index
        self.config = config
        self.ipc_dir = ipc_dir
        self.loop = asyncio.get_running_loop()
        self.parent = os.getppid()
        self.stopped = self.loop.create_future()
        self.control: Link | None = None
        self.shards = Shards(config.workers, config.max_shard_backlog)
        self.directory = None
        self.api: HttpApi | None = None
        self.counts: RequestCounts | None = None
        self.server: asyncio.AbstractServer | None = None

    async def run(self) -> None:
        _, self.control = await self.loop.create_unix_connection(
            lambda: Link(self.on_control, lambda _: self.stop()),
            os.path.join(self.ipc_dir, CONTROL_SOCKET))
        await self.shards.keep_connected(self.ipc_dir)
        if self.config.redis_url:
            from .redis.node import Directory
            self.directory = Directory(self.config, f"api{self.index}")
            await self.directory.start()
        self.api = api = HttpApi(self.config, Commands(self.shards, self.config, self.directory))
        api.routes.update(site.public_routes())
        self.counts = RequestCounts(lambda path: path in api.routes or site.by_supervisor(path))
        handle = self.counts.instrument(self.route)
        limits = HttpLimits(self.config)
        try:
            self.server = await listening.listen(
                self.loop, lambda: HttpProtocol(handle, limits, api.decorate), self.config,
                self.config.port, reuse_port=True)
        except OSError as error:
            self.control.cast("failed", {"index": self.index, "error": str(error)})
            await asyncio.sleep(0.1)            # let the word leave
            sys.exit(1)
        descriptors.Watch(f"API process {self.index}").start(self.loop)
        self.control.cast("hello", {"index": self.index, "pid": os.getpid()})
        self.loop.call_later(PARENT_CHECK, self.check_parent)
        await self.stopped
        if self.directory is not None:
            self.directory.close()

    def route(self, request: Request) -> Response | asyncio.Future:
        if site.by_supervisor(request.path):
            return asyncio.ensure_future(self.hand_over(request))
        return self.api.handle(request)

    async def hand_over(self, request: Request) -> Response:
        """The supervisor's answer to a request for the admin pages or /metrics."""
        try:
            raw = await asyncio.wait_for(self.control.request("http", {
                "method": request.method, "target": request.target,
                "headers": request.headers, "body": request.body.decode("latin-1"),
                "client": request.client}, raw=True), HANDOVER_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError):
            return Response(503, orjson.dumps({"server": ["The supervisor did not answer; "
                                                          "retry in a moment"]}))
        head, _, body = raw.partition(b"\n")
        status, content_type, headers = orjson.loads(head)
        return Response(status, body, content_type, headers)

    def on_control(self, link: Link, kind: int, request_id: int, body: bytes) -> None:
        command, _ = orjson.loads(body)
        if command == "counts":
            link.reply(request_id, orjson.dumps(self.counts.snapshot(self.shards.links)))
        elif command == "shutdown":
            asyncio.ensure_future(self.drain())
        elif kind == Kind.REQUEST:
            link.reply(request_id, b"null")

    async def drain(self) -> None:
        """Stop taking connections; answer what is in flight, then exit."""
        if self.server is not None:
            self.server.close()
        self.api.closing = True
        deadline = self.loop.time() + self.config.shutdown_timeout
        while self.api.in_flight and self.loop.time() < deadline:
            await asyncio.sleep(0.01)
        self.stop()

    def check_parent(self) -> None:
        if os.getppid() != self.parent:
            log.error("supervisor is gone; API process %d exits", self.index)
            self.stop()
        else:
            self.loop.call_later(PARENT_CHECK, self.check_parent)

    def stop(self) -> None:
        if not self.stopped.done():
            self.stopped.set_result(None)

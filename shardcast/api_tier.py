"""The supervisor's side of its API processes: starts them, restarts one that dies, answers
what they hand over (the admin pages and /metrics, whose state lives here), asks them for
their request counts, and stops them."""
from __future__ import annotations

import asyncio
import errno
import logging
import multiprocessing
import os
import socket
import time
from multiprocessing.process import BaseProcess

import orjson

from .api_worker import CONTROL_SOCKET, api_main
from .config import Config
from .http_messages import Handler, Request, Response, json_response
from .ipc import Link

log = logging.getLogger("shardcast.supervisor")
START_TIMEOUT = 20.0
CLAIM_WAIT = 3.0            # seconds a new server waits for its API port to be free
ASK_TIMEOUT = 2.0           # seconds an API process has to say its counts
SPAWN = multiprocessing.get_context("spawn")


class StartupError(RuntimeError):
    pass


async def claim_port(host: str, port: int) -> list[socket.socket]:
    """``hold_port``, waiting CLAIM_WAIT at most for the port to be free: the API processes
    of a server whose supervisor was killed exit within a second or two."""
    deadline = time.monotonic() + CLAIM_WAIT
    while True:
        try:
            return hold_port(host, port)
        except OSError as error:
            taken = error.errno == errno.EADDRINUSE
            if not taken or time.monotonic() >= deadline:
                hint = "; is another server (another shardcast?) using it?" if taken else ""
                raise StartupError(f"cannot listen on {host}:{port}: "
                                   f"{error.strerror or error}{hint}") from None
        await asyncio.sleep(0.1)


def hold_port(host: str, port: int) -> list[socket.socket]:
    """Hold the API port for this server's API processes, which share it (SO_REUSEPORT), so
    that a second server started on it fails instead of silently taking half its calls. Bound
    without SO_REUSEPORT, these sockets are refused while another server listens there (as
    the second server's are, on ours); then opened to the API processes. Never listening, they
    take no connections. Until an API process listens, SO_REUSEADDR (needed past the TIME_WAIT
    sockets of a restart) would let another server bind as well: a lock, an abstract unix
    socket named for the address (gone with this process, seen in this network namespace
    alone, as the port), refuses one that starts at the same moment."""
    held = [_lock(host, port)]
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        for family, kind, proto, _, address in dict.fromkeys(infos):
            try:
                sock = socket.socket(family, kind, proto)
            except OSError:     # a family this host lacks: uvloop skips it as well
                continue
            held.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:   # as the API processes bind it
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        for sock in held:
            sock.close()
        raise
    return held


def _lock(host: str, port: int) -> socket.socket:
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0shardcast-api {host}:{port}")
    except OSError:
        lock.close()
        raise
    return lock


class ApiTier:
    def __init__(self, config: Config, ipc_dir: str, handle: Handler) -> None:
        self.config = config
        self.ipc_dir = ipc_dir
        self.handle = handle                # the supervisor's routes: admin pages, /metrics
        count = config.api_processes
        self.processes: list[BaseProcess | None] = [None] * count
        self.links: list[Link | None] = [None] * count
        self.pids = [0] * count
        self.restarts = [0] * count
        self.starting: dict[int, asyncio.Future] = {}     # index -> its hello (or failure)
        self.stopping = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_unix_server(lambda: Link(self.on_frame),
                                      os.path.join(self.ipc_dir, CONTROL_SOCKET))
        await asyncio.gather(*(self._start(index) for index in range(len(self.processes))))

    async def _start(self, index: int) -> None:
        loop = asyncio.get_running_loop()
        started = self.starting[index] = loop.create_future()
        process = SPAWN.Process(target=api_main, args=(index, self.config, self.ipc_dir),
                                name=f"shardcast-api-{index}")
        process.start()
        self.processes[index] = process
        loop.add_reader(process.sentinel, self._on_exit, index, process)
        try:
            await asyncio.wait_for(started, START_TIMEOUT)
        except asyncio.TimeoutError:
            raise StartupError(f"API process {index} did not start in {START_TIMEOUT:.0f} s")
        finally:
            self.starting.pop(index, None)

    def on_frame(self, link: Link, kind: int, request_id: int, body: bytes) -> None:
        command, args = orjson.loads(body)
        if command == "http":
            asyncio.ensure_future(self._answer(link, request_id, args))
        elif command == "hello":
            index = args["index"]
            self.links[index], self.pids[index] = link, args["pid"]
            _settle(self.starting.get(index), None)
        elif command == "failed":
            _settle(self.starting.get(args["index"]), StartupError(
                f"cannot listen on {self.config.host}:{self.config.port}: {args['error']}"))

    async def _answer(self, link: Link, request_id: int, args: dict) -> None:
        request = Request(args["method"], args["target"].encode("latin-1"), args["headers"],
                          args["body"].encode("latin-1"), args["client"])
        try:
            result = self.handle(request)
            response = result if isinstance(result, Response) else await result
        except Exception:
            log.exception("handler failed for %s %s", request.method, request.path)
            response = json_response({"_server": ["Internal error"]}, 500)
        head = orjson.dumps([response.status, response.content_type, response.headers])
        link.reply(request_id, head + b"\n" + response.body)

    def _on_exit(self, index: int, process: BaseProcess) -> None:
        asyncio.get_running_loop().remove_reader(process.sentinel)
        if self.processes[index] is not process:
            return
        self.links[index] = None
        process.join(0.1)
        if self.stopping:
            return
        if index in self.starting:
            _settle(self.starting[index], StartupError(
                f"API process {index} exited during start (code {process.exitcode})"))
            return
        log.error("API process %d died (exit code %s); restarting it", index, process.exitcode)
        self.restarts[index] += 1
        asyncio.ensure_future(self._restart(index))

    async def _restart(self, index: int) -> None:
        try:
            await self._start(index)
        except StartupError as error:
            log.error("%s; retrying in 1 s", error)
            await asyncio.sleep(1)
            asyncio.ensure_future(self._restart(index))
            return
        log.warning("API process %d restarted", index)

    async def gather(self, command: str) -> list:
        """``command``'s answer from each API process (None where one did not answer)."""
        return await asyncio.gather(*(self._ask(link, command) for link in self.links))

    @staticmethod
    async def _ask(link: Link | None, command: str):
        if link is None or link.closed:
            return None
        try:
            return await asyncio.wait_for(link.request(command, None), ASK_TIMEOUT)
        except (asyncio.TimeoutError, ConnectionError):
            return None

    def shutdown(self) -> None:
        """Each API process stops taking connections and exits once its calls are answered."""
        self.stopping = True
        for link in self.links:
            if link is not None and not link.closed:
                link.cast("shutdown", None)

    def alive(self) -> list[BaseProcess]:
        return [process for process in self.processes if process and process.is_alive()]


def _settle(future: asyncio.Future | None, error: Exception | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)

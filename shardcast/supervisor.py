"""The supervisor process: starts and restarts the shards and the API processes (which serve
the HTTP API), serves what those hand over (admin pages, metrics), and, in a cluster, keeps this
node's place in it."""
from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
import tempfile
import time

import multiprocessing
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import uvloop

from . import descriptors, ipc, listening
from .api_tier import ApiTier, StartupError, claim_port
from .commands import Commands
from .config import Config
from .http_api import HttpApi
from .ipc import Link
from .shards import Shards
from .site import Site
from .worker import shard_main, standby_main, tune_gc

log = logging.getLogger("shardcast.supervisor")
START_TIMEOUT = 20.0
# Shards are plain spawned processes running uvloop.run(): aiomultiprocess.Process would
# add a SyncManager server process, and once that dies (a process-group SIGTERM kills it)
# no shard can be restarted any more.
SPAWN = multiprocessing.get_context("spawn")


class Supervisor:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.shards = Shards(config.workers, config.max_shard_backlog)
        self.processes: list[BaseProcess | None] = [None] * config.workers
        self.restarts = self.shards.restarts
        self.ipc_dir = tempfile.mkdtemp(prefix="shardcast-")
        self.stopping = False
        self.spare: tuple[BaseProcess, Connection] | None = None
        self.node = None        # this node in its cluster (redis.node.Node), when there is one
        self.api: ApiTier | None = None

    async def start(self) -> None:
        await asyncio.gather(*(self._start_shard(i) for i in range(self.config.workers)))
        self._prepare_spare()

    async def _start_shard(self, index: int, restart: bool = False) -> None:
        process = self._launch(index, restart)
        self.processes[index] = process
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if not process.is_alive():
                raise StartupError(
                    f"shard {index} exited during start (code {process.exitcode}); is port "
                    f"{self.config.ws_port_base + index} free on {self.config.host}?")
            try:
                _, link = await loop.create_unix_connection(
                    lambda: Link(self._unexpected_frame), ipc.socket_path(self.ipc_dir, index))
                await link.request("stats", None)
                break
            except (OSError, ConnectionError):
                if time.monotonic() > deadline:
                    raise StartupError(f"shard {index} did not start in {START_TIMEOUT:.0f} s")
                await asyncio.sleep(0.05)
        self.shards.links[index] = link
        loop.add_reader(process.sentinel, self._on_exit, index)

    def _launch(self, index: int, restart: bool) -> BaseProcess:
        """Shard ``index`` as a new process: the standby one when it is ready (a restart)."""
        spare, self.spare = self.spare, None
        if spare is not None and spare[0].is_alive():
            process, orders = spare
            orders.send(index)
            orders.close()
            return process
        process = SPAWN.Process(target=shard_main,
                                args=(index, self.config, self.ipc_dir, restart),
                                name=f"shardcast-shard-{index}")
        process.start()
        return process

    def _prepare_spare(self) -> None:
        """Start a standby process for the next restart (imported, waiting for an index)."""
        if self.spare is not None or self.stopping:
            return
        theirs, orders = SPAWN.Pipe(duplex=False)
        process = SPAWN.Process(target=standby_main, args=(theirs, self.config, self.ipc_dir),
                                name="shardcast-standby")
        process.start()
        theirs.close()
        self.spare = (process, orders)

    def _unexpected_frame(self, link: Link, kind: int, request_id: int, body: bytes) -> None:
        log.warning("ignoring an unsolicited frame from a shard (kind %d)", kind)

    def _on_exit(self, index: int) -> None:
        process = self.processes[index]
        asyncio.get_running_loop().remove_reader(process.sentinel)
        if self.stopping:
            return
        process.join(0.1)
        log.error("shard %d died (exit code %s); restarting it", index, process.exitcode)
        asyncio.ensure_future(self._restart(index))

    async def _restart(self, index: int) -> None:
        self.restarts[index] += 1
        try:
            await self._start_shard(index, restart=True)
        except (StartupError, OSError) as error:
            log.error("%s; retrying in 1 s", error)
            await asyncio.sleep(1)
            asyncio.ensure_future(self._restart(index))
            return
        log.warning("shard %d restarted", index)
        self._prepare_spare()

    async def stop(self) -> bool:
        """Shards close their websockets (1001) and answer held long polls; API processes stop
        taking connections and exit once their calls in flight are answered; then the shards
        exit. What is left at shutdown_timeout is killed. True when all exited with code 0."""
        self.stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.shutdown_timeout
        self.shards.cast_all("shutdown", None)
        processes = []
        if self.api is not None:
            self.api.shutdown()
            processes = self.api.alive()
            while any(process.is_alive() for process in processes) and loop.time() < deadline:
                await asyncio.sleep(0.01)
        self.shards.cast_all("exit", None)
        processes += [process for process in self.processes if process is not None]
        if self.spare is not None:      # it exits when its orders pipe closes
            spare, orders = self.spare
            orders.close()
            processes.append(spare)
        while any(process.is_alive() for process in processes) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        clean = True
        for process in processes:
            if process.is_alive():
                log.error("%s did not stop within shutdown_timeout; killing it", process.name)
                process.kill()
            process.join(1)
            if process.exitcode != 0:
                log.error("%s exited with code %s", process.name, process.exitcode)
                clean = False
        shutil.rmtree(self.ipc_dir, ignore_errors=True)
        return clean

def serve(config: Config) -> None:
    """Run the supervisor until SIGINT or SIGTERM."""
    descriptors.check_limit(config, descriptors.raise_limit())   # shards inherit the limit
    tune_gc()
    try:
        clean = uvloop.run(_serve(config))
    except StartupError as error:
        log.error("%s", error)
        sys.exit(1)
    if not clean:
        sys.exit(1)


async def _serve(config: Config) -> bool:
    """Serve until SIGINT or SIGTERM; True when every process then stopped cleanly."""
    loop = asyncio.get_running_loop()
    try:
        listening.server_options(config)    # checked here: one error, not one per process
    except OSError as error:    # ssl.SSLError is one too
        raise StartupError(f"cannot use ssl_certfile and ssl_keyfile: {error}")
    if config.redis_url:
        from .redis.node import why_not_join
        refusal = await why_not_join(config)
        if refusal is not None:
            raise StartupError(refusal)
    port = await claim_port(config.host, config.port)   # before any process: one there stops us
    supervisor = Supervisor(config)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await supervisor.start()
        if config.redis_url:
            from .redis.node import Node
            supervisor.node = Node(config, supervisor.shards, ipc.run_id(supervisor.ipc_dir))
            await supervisor.node.start()
        commands = Commands(supervisor.shards, config, supervisor.node)
        if supervisor.node is not None:
            supervisor.node.commands = commands     # it serves what other nodes forward
        site = Site(HttpApi(config, commands), supervisor)
        supervisor.api = ApiTier(config, supervisor.ipc_dir, site.handle)
        await supervisor.api.start()
        _announce(config)
        await stop.wait()
    finally:
        clean = await supervisor.stop()
        if supervisor.node is not None:
            supervisor.node.close()
        for sock in port:
            sock.close()
    return clean


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _announce(config: Config) -> None:
    secure = "s" if config.ssl_certfile else ""
    where = ""
    if config.redis_url:
        from .redis.resp import Address
        where = f", node {config.node} of the cluster at {Address.parse(config.redis_url)}"
    print(f"shardcast API on http{secure}://{config.host}:{config.port} "
          f"({_count(config.api_processes, 'API process', 'API processes')}, "
          f"{_count(config.workers, 'shard', 'shards')}{where})", flush=True)
    for index in range(config.workers):
        print(f"  shard {index}: websockets on ws{secure}://{config.host}:"
              f"{config.ws_port_base + index}/ws", flush=True)

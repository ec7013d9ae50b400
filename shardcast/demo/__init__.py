"""``shardcast demo``: a broker and a small chat application in front of it, on loopback."""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time

import click

from ..client import AsyncClient, ShardcastError
from ..config import Config
from ..http_limits import HttpLimits
from ..http_server import HttpProtocol
from ..http_messages import Request, Response
from .app import DemoApp

START_TIMEOUT = 30.0
MAX_BODY = 65536


def run(host: str, port: int, api_port: int, ws_port_base: int, workers: int) -> None:
    """Start the broker as a child process, then serve the demo app until Ctrl-C or SIGTERM."""
    secret = secrets.token_urlsafe(24)
    admin_password = secrets.token_urlsafe(9)
    broker = subprocess.Popen(
        [sys.executable, "-m", "shardcast", "serve", "--host", host, "--port", str(api_port),
         "--ws-port-base", str(ws_port_base), "--workers", str(workers), "--secret", secret,
         "--log-level", "warning"],
        env={**os.environ, "SHARDCAST_ADMIN_SECRET": admin_password},
        stdout=subprocess.DEVNULL)
    try:
        asyncio.run(_serve(host, port, f"http://{host}:{api_port}", secret, admin_password,
                           broker))
    finally:
        if broker.poll() is None:
            broker.terminate()
            try:
                broker.wait(10)
            except subprocess.TimeoutExpired:
                broker.kill()


async def _serve(host: str, port: int, api: str, secret: str, admin_password: str,
                 broker: subprocess.Popen) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncClient(api, secret) as shardcast:
        await _wait_for_broker(shardcast, broker)
        app = DemoApp(shardcast, api)
        await app.setup()
        limits = HttpLimits(Config(max_body_size=MAX_BODY))
        try:
            server = await loop.create_server(
                lambda: HttpProtocol(app.handle, limits, _plain), host, port)
        except OSError as error:
            raise click.ClickException(f"cannot serve the demo on {host}:{port}: {error}")
        click.echo(f"shardcast demo: open http://{host}:{port}/ in two browser windows\n"
                   f"  broker API:  {api} (the demo backend signs its calls to it)\n"
                   f"  admin panel: {api}/admin  (user admin, password {admin_password})\n"
                   f"  Ctrl-C stops both.", err=True)
        await stop.wait()
        server.close()


async def _wait_for_broker(shardcast: AsyncClient, broker: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if broker.poll() is not None:
            raise click.ClickException(f"the broker exited with code {broker.returncode}; "
                                       "are its ports free? (see --api-port, --ws-port-base)")
        with contextlib.suppress(ShardcastError):
            await shardcast.info(include_users=False, include_history=False)
            return
        if time.monotonic() > deadline:
            raise click.ClickException(f"the broker did not start in {START_TIMEOUT:.0f} s")
        await asyncio.sleep(0.2)


def _plain(request: Request, response: Response) -> None:
    """The demo's pages and API are same-origin: no CORS headers."""

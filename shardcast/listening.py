"""How the API and websocket ports listen: with TLS from the ssl_certfile and ssl_keyfile
settings, and with what the kernel may hold unsent for each socket they accept bounded by
kernel_send_buffer."""
from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Callable

from .config import Config


def server_options(config: Config) -> dict[str, Any]:
    """create_server() arguments: none without a certificate. The handshake gets the time of
    a request's headers, so a client that stalls it is dropped as one that stalls those."""
    if not config.ssl_certfile:
        return {}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
    return {"ssl": context, "ssl_handshake_timeout": config.http_header_timeout}


async def listen(loop: asyncio.AbstractEventLoop, protocol: Callable[[], asyncio.Protocol],
                 config: Config, port: int, **options: Any) -> asyncio.AbstractServer:
    """A server on ``port`` of the configured host. Its sockets get SO_SNDBUF before they
    listen, so every socket they accept has it from its first byte."""
    server = await loop.create_server(protocol, config.host, port, start_serving=False,
                                      **server_options(config), **options)
    if config.kernel_send_buffer:
        for sock in server.sockets:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, config.kernel_send_buffer)
    await server.start_serving()
    return server

"""TLS on the API and websocket ports, from the ssl_certfile and ssl_keyfile settings."""
from __future__ import annotations

import ssl
from typing import Any

from .config import Config


def server_options(config: Config) -> dict[str, Any]:
    """create_server() arguments: none without a certificate. The handshake gets the time of
    a request's headers, so a client that stalls it is dropped as one that stalls those."""
    if not config.ssl_certfile:
        return {}
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
    return {"ssl": context, "ssl_handshake_timeout": config.http_header_timeout}

"""Files served as they are: ``/static/*`` from the package, Swagger UI from its distribution."""
from __future__ import annotations

import mimetypes
from pathlib import Path
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Callable

from .http_messages import Request, Response

STATIC_PREFIX = "/static/"
SWAGGER_PREFIX = "/static/swagger-ui/"
SWAGGER_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png")
TEXT_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
              ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
              ".json": "application/json", ".svg": "image/svg+xml"}
NO_CACHE = {"cache-control": "no-cache", "x-content-type-options": "nosniff"}
# For the pages that act with the admin's session (the panel, its sign-in, the API explorer):
# never in a frame (clickjacking), and scripts, styles and connections from this server only.
PAGE_HEADERS = {
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
}


def content_type(name: str) -> str:
    suffix = name[name.rfind("."):] if "." in name else ""
    return TEXT_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def file_response(source: Traversable,
                  headers: dict[str, str] | None = None) -> Callable[[Request], Response]:
    """A handler that answers with the file's bytes, read once (and ``headers``)."""
    cached: list[bytes] = []
    all_headers = {**NO_CACHE, **(headers or {})}

    def serve(request: Request) -> Response:
        if not cached:
            cached.append(source.read_bytes())
        return Response(200, cached[0], content_type(source.name), dict(all_headers))
    return serve


def package_file(name: str) -> Traversable:
    """A file of shardcast/static (the JS client is a link to clients/js in a checkout)."""
    return resources.files("shardcast") / "static" / name


def swagger_dir() -> Traversable | None:
    """Swagger UI's files, from the swagger-ui-bundle distribution, if installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return None
    return Path(swagger_ui_path)


def routes() -> dict[str, tuple[dict, bool]]:
    """Unsigned GET routes, one per file: the routing table stays a plain lookup."""
    found: dict[str, tuple[dict, bool]] = {}
    for source in (resources.files("shardcast") / "static").iterdir():
        if source.is_file() and not source.name.startswith("."):
            found[STATIC_PREFIX + source.name] = ({"GET": file_response(source)}, False)
    swagger = swagger_dir()
    if swagger is not None:
        for name in SWAGGER_FILES:
            found[SWAGGER_PREFIX + name] = ({"GET": file_response(swagger / name)}, False)
    return found

"""What the API port serves besides the API: static files, OpenAPI and the API explorer (every
API process serves them), and the admin pages and metrics (the supervisor serves them, where
their state lives: sessions, sign-in throttles, every process's counts; API processes hand
those requests over)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from . import assets, openapi
from .admin import Admin
from .http_api import HttpApi
from .http_messages import Handler, Response
from .metrics import Metrics

if TYPE_CHECKING:
    from .supervisor import Supervisor


def by_supervisor(path: str) -> bool:
    """Whether the supervisor answers ``path`` (its API processes hand it over)."""
    return path == "/metrics" or path == "/admin" or path.startswith("/admin/")


def public_routes() -> dict[str, tuple[dict[str, Handler], bool]]:
    """The routes every API process serves besides the API itself."""
    body = orjson.dumps(openapi.document())
    return {
        **assets.routes(),
        "/openapi.json": ({"GET": lambda request: Response(200, body)}, False),
        "/api-explorer": ({"GET": assets.file_response(assets.package_file("explorer.html"),
                                                        assets.PAGE_HEADERS)}, False),
    }


class Site:
    """The supervisor's routes: admin pages and metrics; ``handle`` serves what its API
    processes hand over."""

    def __init__(self, api: HttpApi, supervisor: "Supervisor") -> None:
        self.api = api
        self.admin = Admin(api.config, api)
        api.routes.update(self.admin.routes())
        self.metrics = Metrics(api, supervisor)
        api.routes["/metrics"] = ({"GET": self.metrics.render}, False)
        self.handle = api.handle

"""What the API port serves besides the API: static files, admin pages, OpenAPI, metrics."""
from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

from . import assets, openapi
from .admin import Admin
from .http_api import HttpApi
from .http_server import Request, Response
from .metrics import Metrics

if TYPE_CHECKING:
    from .supervisor import Supervisor


class Site:
    """Adds its routes to the API's table; ``handle`` is what the HTTP protocol calls."""

    def __init__(self, api: HttpApi, supervisor: "Supervisor") -> None:
        self.api = api
        self.supervisor = supervisor
        self.admin = Admin(api.config, api)
        api.routes.update(assets.routes())
        api.routes.update(self.admin.routes())
        api.routes.update({
            "/openapi.json": ({"GET": self.openapi}, False),
            "/api-explorer": ({"GET": assets.file_response(
                assets.package_file("explorer.html"), assets.PAGE_HEADERS)}, False),
        })
        self.metrics = Metrics(api, supervisor)
        api.routes["/metrics"] = ({"GET": self.metrics.render}, False)
        self.openapi_body = orjson.dumps(openapi.document())
        self.handle = self.metrics.instrument(api.handle)

    def openapi(self, request: Request) -> Response:
        return Response(200, self.openapi_body)

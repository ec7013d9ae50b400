"""What the API port serves besides the API: static files, admin pages, OpenAPI, metrics."""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import assets
from .admin import Admin
from .http_api import HttpApi

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
        self.handle = api.handle

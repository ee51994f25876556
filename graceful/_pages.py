"""
The operational pages a server can carry: health and admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._health import HealthResource

if TYPE_CHECKING:
    from ._runtime import Runtime
    from ._server import Server


def add_operational_pages(runtime: Runtime, server: Server) -> None:
    if server.health_path:
        server.router.add_resource(server.health_path, HealthResource(runtime))
    if server.admin_prefix:
        from ._admin import AdminResource

        server.router.mount(server.admin_prefix, AdminResource(runtime, server))

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

        if not server.admin_token:
            # Now, not at the first request: a token that cannot be kept is
            # logged as the server starts.
            from ._admin_token import generated_token

            generated_token(runtime)
        server.router.mount(server.admin_prefix, AdminResource(runtime, server))


def prepare_admin_token(runtime: Runtime) -> None:
    """
    Make (or read) the generated admin token before serving, and before
    any worker starts, so that every worker reads the same one.
    """
    from ._admin_token import generated_token, needs_generated_token

    if needs_generated_token(runtime):
        generated_token(runtime)

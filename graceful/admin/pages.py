# -*- test-case-name: tests.unit.admin.test_resource -*-
"""
The operational pages a server can carry: health and admin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING


if TYPE_CHECKING:
    from twisted.web.server import Site

    from .host import AdminHost
    from ..http.server import Server


def add_operational_pages(runtime: AdminHost, server: Server) -> None:
    if server.health_path:
        from .health import HealthResource

        server.router.add_resource(server.health_path, HealthResource(runtime))
    if server.admin_prefix:
        from .operations import OperationsAdmin

        if not server.admin_token:
            # Now, not at the first request: a token that cannot be kept is
            # logged as the server starts.
            from .token import generated_token

            generated_token(runtime)
        server.router.mount(server.admin_prefix, OperationsAdmin(runtime, server))


def prepare_admin_token(runtime: AdminHost) -> None:
    """
    Make (or read) the generated admin token before serving, and before
    any worker starts, so that every worker reads the same one.
    """
    from .token import generated_token, needs_generated_token

    if needs_generated_token(runtime):
        generated_token(runtime)


def admin_socket_site(runtime: AdminHost) -> Site:
    """
    The site of the private admin socket: the admin pages of the whole
    process, without a token.
    """
    from twisted.web.server import Site

    from .operations import OperationsAdmin
    from ..http.routing import Router
    from ..http.server import DEFAULT_ADMIN_PREFIX, Server

    router = Router()
    # A stand-in server: the admin socket shows the whole process.
    pages = Server("admin_socket", runtime, admin_prefix=DEFAULT_ADMIN_PREFIX)
    router.mount(DEFAULT_ADMIN_PREFIX, OperationsAdmin(runtime, pages, private=True))
    site = Site(router)
    site.noisy = False
    # The admin logs its actions itself; status polls need no lines.
    site.log = lambda request: None  # type: ignore[method-assign]
    return site

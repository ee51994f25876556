# -*- test-case-name: tests.unit.http.test_server -*-
"""
What a server serves, as the program declares it: routes and twisted.web
resources join its router at once; WSGI and ASGI apps wait until its site
is built (they need the reactor's thread pool, or the asyncio loop); and
each path is served by one of them only.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from attrs import Factory, define, field
from twisted.web.resource import IResource

from .._errors import ConfigError
from .._settings import DEFAULT_WSGI_THREADS
from .app_options import check_lifespan, check_root_path, wrap_app
from .routing import Handler, Router, ServedPaths, WSGIOnAnySocket


@define
class BuiltApps:
    """
    What a server's site is built with, for the choice of its channel.

    @ivar only_apps: the server serves nothing but these apps (no route, no
        twisted.web resource; its admin and health pages aside).
    @ivar wsgi: its WSGI apps, by prefix.
    @ivar asgi: the resources of its ASGI apps.
    @ivar wsgi_threads: the threads that run each WSGI app at most.
    """

    only_apps: bool
    wsgi: list[tuple[str, Any]]
    asgi: list[Any] = field(factory=list)
    wsgi_threads: int = DEFAULT_WSGI_THREADS


@define(eq=False)
class AppMounts:
    """
    The apps of one server and the paths they claim.

    @ivar owner: who claims the paths, for errors (C{"server 'web'"}).
    @ivar router: the server's router.
    @ivar asgi: whether an ASGI app was mounted on the router.
    @ivar wsgi_apps: the WSGI apps waiting for the site, by prefix.
    """

    owner: str
    router: Router
    asgi: bool = False
    _served: ServedPaths = field(
        default=Factory(lambda self: ServedPaths(self.owner), takes_self=True)
    )
    wsgi_apps: list[tuple[str, Any]] = field(factory=list)
    _asgi_apps: list[tuple[str, Any, int]] = field(factory=list)

    def route(self, path: str, handler: Handler | None = None) -> Any:
        self._served.claim(path, "route()")
        return self.router.route(path, handler)

    def mount(self, prefix: str, resource: IResource) -> None:
        self._served.claim(prefix, "mount()")
        self.router.mount(prefix, resource)

    def mount_wsgi(self, prefix: str, app: Callable[..., Any], root_path: str = "") -> None:
        root_path = self._checked(check_root_path, root_path)
        self._served.claim(prefix, "mount_wsgi()")
        self.wsgi_apps.append((prefix, wrap_app("wsgi", app, root_path, "auto")))

    def mount_asgi(
        self, prefix: str, app: Callable[..., Any], root_path: str = "", lifespan: str = "auto"
    ) -> None:
        from ..asgi.resource import asyncio_reactor_running, ensure_asyncio_reactor

        root_path = self._checked(check_root_path, root_path)
        lifespan = self._checked(check_lifespan, lifespan)
        self._served.claim(prefix, "mount_asgi()")
        ensure_asyncio_reactor()
        if not asyncio_reactor_running():
            raise ConfigError(
                "ASGI apps need Twisted's asyncio reactor, but another reactor is "
                "installed: mount the app before twisted.internet.reactor is imported"
            )
        # Keyed by the app as given: mounted twice, it has one lifespan.
        self._asgi_apps.append((prefix, wrap_app("asgi", app, root_path, lifespan), id(app)))

    def _checked(self, check: Callable[[object], str], value: object) -> str:
        try:
            return check(value)
        except ConfigError as e:
            raise ConfigError(f"{self.owner}: {e}") from None

    def claim_page(self, path: str, what: str) -> None:
        """
        C{path} is for the server's own page (admin, health), which joins
        the router as the site is built, over the apps' paths.
        """
        self._served.claim(path, what, keep=False)

    def build(
        self,
        reactor: Any,
        add_lifespan: Callable[[Any], None],
        websocket_options: Mapping[str, Any] | None = None,
        wsgi_threads: int = DEFAULT_WSGI_THREADS,
    ) -> BuiltApps:
        """
        Mount the WSGI and ASGI apps on the router, with one lifespan per
        ASGI app even when it is mounted twice (given to C{add_lifespan});
        their WebSockets get autobahn's C{websocket_options}, and each WSGI
        app a pool of C{wsgi_threads} threads.
        """
        built = BuiltApps(only_apps=not self.router.served_paths(), wsgi=list(self.wsgi_apps),
                          wsgi_threads=wsgi_threads)
        for prefix, app in self.wsgi_apps:
            self.router.mount(prefix, WSGIOnAnySocket(reactor, app, wsgi_threads))
        self.wsgi_apps.clear()
        if self._asgi_apps:
            from ..asgi.resource import ASGIResource, Lifespan

            lifespans: dict[int, Lifespan] = {}
            for prefix, app, key in self._asgi_apps:
                resource = ASGIResource(
                    app, prefix, lifespans.get(key), websocket_options=websocket_options
                )
                if key not in lifespans:
                    lifespans[key] = resource.lifespan
                    add_lifespan(resource.lifespan)
                self.router.mount(prefix, resource)
                built.asgi.append(resource)
            self.asgi = True
        self._asgi_apps.clear()
        return built

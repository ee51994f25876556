# -*- test-case-name: tests.unit.http.test_native -*-
"""
Which channel serves a server's plain connections: graceful's own HTTP/1.1
channel (L{graceful.http.native}, httptools) where the server serves
nothing but ASGI and WSGI apps (and its admin and health pages), else
twisted.web's.

The native channel costs an ASGI hello ~18 us of CPU a request against
~66 us on twisted.web's Request (wrk -c32 keep-alive, interleaved with
uvicorn[standard] at ~18 us): the parse, the Request object and the extra
reactor pass per response are what it saves.  It applies the proxy headers
and the concurrency limit as twisted.web's path does, with the same code
(L{graceful.http.proxy.proxied} and L{graceful.http.limits.limited} around
each app's dispatch, only when they are on), and the keep-alive timeout.  A
server is served by twisted.web where its C{http_impl} says C{"twisted"} or
C{"h11"}, where it serves more than its apps (and its admin and health
pages), or where httptools is not installed (C{graceful[standard]}).
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any, Callable

from .limits import limited
from .proxy import proxied, root_layers
from .site import DrainingSite

if TYPE_CHECKING:
    from .mounts import BuiltApps
    from .routing import Router

#: The C{http_impl} values that ask for twisted.web's channel.
TWISTED_IMPLS = ("twisted", "h11")

_heap_frozen = False


def freeze_heap() -> None:
    """
    Once serving starts, what the process imported and built is kept out
    of the collector's full passes: under ASGI load a full collection ran
    every ~0.5 s and took 30-50 ms, the p99 (raw ASGI p99 29 ms -> 6 ms).
    Tune the thresholds with C{gc.set_threshold} in the app if need be.
    """
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.freeze()


def wants_native(http_impl: str, settings: Any, built: BuiltApps) -> bool:
    """
    Whether a server whose C{http_impl} and process C{settings} these are
    may be served by the native channel: one that serves ASGI or WSGI apps
    alone (with its admin and health pages), whatever its C{settings} (the
    channel applies C{proxy_headers}, C{limit_concurrency} and
    C{timeout_keep_alive} itself), unless its C{http_impl} asks for
    twisted.web.
    """
    if http_impl in TWISTED_IMPLS or not built.only_apps:
        return False
    return bool(built.asgi or built.wsgi)


def native_front(root: Any) -> Callable[[Any], Any]:
    """
    What stands before each app's dispatch on the native channel: the
    proxy headers and the concurrency limit of the site's C{root}
    (L{graceful.http.proxy.site_root}), the same objects twisted.web's
    requests go through; nothing where they are off.
    """
    trusted, limit = root_layers(root)

    def front(dispatch: Any) -> Any:
        # The limit inside: a refused request is logged with the forwarded client.
        if limit is not None:
            dispatch = limited(dispatch, limit)
        if trusted is not None:
            dispatch = proxied(dispatch, trusted)
        return dispatch

    return front


#: What building and serving a site imports on first use: its channel and
#: dispatch for each app kind, its routes, the WebSocket path, asgiref.
SERVING_MODULES = (
    "graceful.http.mounts",
    "graceful.http.routing",
    "graceful.http.native_site",
    "graceful.asgi.native",
    "graceful.http.wsgi_native",
    "graceful.http.websocket",
    "graceful.asgi.resource",
    "asgiref.compatibility",
)


def import_serving_modules() -> None:
    """
    Import L{SERVING_MODULES} (those installed: httptools and asgiref are
    optional).  A worker template does before it forks, so that its
    workers share them: 4 FastAPI workers' PSS went down by 5 MiB each.
    """
    import importlib

    for name in SERVING_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def native_dispatch(
    reactor: Any, router: Router, built: BuiltApps, front: Callable[[Any], Any] = lambda d: d
) -> Any:
    """
    The native channel's dispatch for a server's apps (each behind
    C{front}), or C{None} where httptools is missing.
    """
    try:
        from .native_site import prefix_dispatch
    except ImportError:  # httptools is not installed: graceful[standard]
        return None
    apps: list[tuple[bytes, Any]] = []
    if built.asgi:
        from ..asgi.native import NativeASGI

        apps += [
            (r.root_path.encode("utf-8"), NativeASGI(r.app, r.root_path, r.lifespan))
            for r in built.asgi
        ]
    if built.wsgi:
        from .wsgi_native import NativeWSGI

        apps += [
            (prefix.rstrip("/").encode("utf-8"),
             NativeWSGI(reactor, app, prefix, built.wsgi_threads))
            for prefix, app in built.wsgi
        ]
    prefixes = {prefix for prefix, _ in apps}
    others = [p for p in router.served_paths() if p not in prefixes]
    return prefix_dispatch([(prefix, front(app)) for prefix, app in apps], others)


def build_site(
    name: str, http_impl: str, runtime: Any, router: Router, built: BuiltApps, root: Any
) -> DrainingSite:
    """
    The site of server C{name}, serving C{root} (its C{router}, perhaps
    behind the proxy headers and the concurrency limit).

    @param runtime: its process (the reactor, settings and access log).
    """
    options: dict[str, Any] = dict(
        server_name=name,
        access_log=runtime.access_log(),
        keep_alive=runtime.settings.timeout_keep_alive,
        reactor=runtime.reactor,
    )
    native = None
    if wants_native(http_impl, runtime.settings, built):
        native = native_dispatch(runtime.reactor, router, built, native_front(root))
    if native is not None:
        from .native_site import NativeSite

        site: DrainingSite = NativeSite(root, native, **options)
    else:
        site = DrainingSite(root, **options)
    if built.asgi:
        from ..asgi.resource import ASGIRequest

        # Its requests reach an ASGI app before their body has arrived.
        site.requestFactory = ASGIRequest
    return site

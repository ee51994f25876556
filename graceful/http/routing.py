# -*- test-case-name: tests.unit.http.test_routing -*-
"""
Routing: exact paths to handler functions, prefixes to whole resources.
"""

from __future__ import annotations

import inspect
import re
from typing import Any, Awaitable, Callable, Coroutine, Union, cast

from attrs import frozen
from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from .._logging import NamedLogger
from .._errors import ConfigError

HandlerResult = Union[bytes, str, "Deferred[Any]", Awaitable[Any]]
Handler = Callable[[Request], HandlerResult]


def _segments(path: str) -> tuple[bytes, ...]:
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    parts = path.encode("utf-8").split(b"/")[1:]
    if parts and parts[-1] == b"" and len(parts) > 1:
        parts = parts[:-1]
    return tuple(parts)


class ServedPaths:
    """
    Which call serves each exact path of a server or router.  A second call
    on the same path would silently take over from the first (a mount
    replaces a mount, a route shadows a mount's own path), so it is refused.
    """

    def __init__(self, owner: str = "") -> None:
        #: Whose paths: a server's errors name it.
        self._owner = f"{owner}: " if owner else ""
        self._by: dict[str, str] = {}

    def claim(self, path: Any, what: str, keep: bool = True) -> None:
        """
        Record that C{what} (C{"mount()"}, C{"route()"}, ...) serves C{path};
        with C{keep=False}, only check that nothing does yet.

        @raise ConfigError: naming the path, and what serves it already.
        """
        if not isinstance(path, str) or not path.startswith("/"):
            raise ConfigError(f"{self._owner}{what} needs a path starting with '/', not {path!r}")
        shown = "/" + "/".join(s.decode("utf-8") for s in _segments(path) if s)
        previous = self._by.get(shown)
        if previous is not None:
            raise ConfigError(
                f"{self._owner}{shown!r} is served twice: by {previous} and by {what}"
            )
        if keep:
            self._by[shown] = what


class HandlerResource(Resource):
    """
    Serves one handler function: C{handler(request)} may return bytes, str,
    a Deferred or a coroutine (of bytes or str).
    """

    isLeaf = True
    _log = NamedLogger("graceful._routing.HandlerResource")

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self._handler = handler

    def render(self, request: Request) -> bytes | int:
        try:
            result = self._handler(request)
        except Exception:
            self._log.failure("handler {handler!r} failed", handler=self._handler)
            return _internal_error(request)
        # Plain bytes and str first: the common case, and the cheapest test.
        kind = type(result)
        if kind is bytes:
            return result  # type: ignore[return-value]
        if kind is str:
            return _body(request, result)
        if inspect.isawaitable(result) and not isinstance(result, Deferred):
            # Typed as a coroutine for ensureDeferred, which takes no other
            # awaitable (and raises for one).
            result = ensureDeferred(cast("Coroutine[Deferred[Any], Any, Any]", result))
        if isinstance(result, Deferred):
            self._answer_later(request, result)
            return NOT_DONE_YET
        return _body(request, result)

    def _answer_later(self, request: Request, result: Deferred[Any]) -> None:
        finished = request.notifyFinish()
        finished.addErrback(lambda _: result.cancel())

        def write(value: Any) -> None:
            if request.finished or request._disconnected:
                return
            request.write(_body(request, value))
            request.finish()

        def fail(failure: Failure) -> None:
            if request.finished or request._disconnected:
                return
            self._log.failure(
                "handler {handler!r} failed", failure, handler=self._handler
            )
            request.write(_internal_error(request))
            request.finish()

        # fail() also answers when write() cannot (a result of the wrong type).
        result.addCallback(write)
        result.addErrback(fail)


def _body(request: Request, value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        if not request.responseHeaders.hasHeader(b"content-type"):
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return value.encode("utf-8")
    if value is None:
        return b""
    raise TypeError(f"a handler returned {type(value).__name__}, not bytes or str")


def _internal_error(request: Request) -> bytes:
    request.setResponseCode(500)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return b"Internal Server Error\n"


@frozen
class _SocketAddress:
    "What twisted.web.wsgi reads of an address: C{host} and C{port}."

    host: str
    port: str


_HOST_PORT = re.compile(rb":([0-9]+)$")


class WSGIOnAnySocket(Resource):
    """
    A WSGI app, run in a pool of C{threads} threads of its own by
    C{twisted.web.wsgi.WSGIResource}, on TCP and on UNIX sockets alike.

    twisted.web.wsgi reads the environ's C{REMOTE_ADDR}, C{SERVER_NAME}
    and C{SERVER_PORT} from the two ends' host and port, which a UNIX
    socket's addresses lack: every request was a 500.  There the app gets
    what uvicorn and gunicorn give it: C{SERVER_NAME} from the C{Host}
    header (else C{localhost}), C{SERVER_PORT} its port (else C{80}, so a URL
    rebuilt without a C{Host} has none), and an empty C{REMOTE_ADDR} and
    C{REMOTE_PORT}.
    """

    isLeaf = True

    def __init__(self, reactor: Any, app: Callable[..., Any], threads: int | None = None,
                 pool: Any = None) -> None:
        # Imported here: a process without a WSGI app need not load them.
        from twisted.web.wsgi import WSGIResource

        from .wsgi_native import WSGI_THREADS, AppThreads

        super().__init__()
        # A pool of its own, of the wsgi_threads setting's size, as on the
        # native channel, rather than the reactor's: that one's 10 threads
        # are shared with DNS lookups and anyio's worker threads.
        self.threads = AppThreads(reactor, threads or WSGI_THREADS, pool)
        self._wsgi = WSGIResource(reactor, self.threads, app)

    def render(self, request: Request) -> Any:
        if not isinstance(request.getHost(), UNIXAddress):
            return self._wsgi.render(request)
        host = request.getHeader(b"host") or b""
        port = _HOST_PORT.search(host)
        ends = request.client, request.host
        # Read by the environ only while render() runs; the access log and
        # the admin's trust of the socket see the real addresses after.
        request.client = _SocketAddress("", "")
        request.host = _SocketAddress(
            "localhost", port.group(1).decode() if port else "80"
        )
        try:
            return self._wsgi.render(request)
        finally:
            request.client, request.host = ends


class Router(Resource):
    """
    The root resource of a server: exact routes first, then the longest
    mounted prefix.
    """

    def __init__(self) -> None:
        super().__init__()
        self._routes: dict[tuple[bytes, ...], IResource] = {}
        self._mounts: dict[tuple[bytes, ...], IResource] = {}
        # Longest prefix first, sorted when mounting rather than per request.
        self._mount_order: list[tuple[tuple[bytes, ...], IResource]] = []
        self._served = ServedPaths()
        #: The resource mounted at the root, when nothing else is served
        #: and it is not a leaf.
        self._root_only: IResource | None = None

    def route(self, path: str, handler: Handler | None = None) -> Any:
        """
        Serve C{path} with C{handler(request)}; without C{handler}, a
        decorator.  A Router is a twisted.web resource, so a config's C{app}
        may be one.
        """
        if handler is None:

            def decorate(h: Handler) -> Handler:
                self.add_route(path, h)
                return h

            return decorate
        self.add_route(path, handler)
        return handler

    def add_route(self, path: str, handler: Handler) -> None:
        segments = _segments(path)
        self._served.claim(path, "route()")
        self._routes[segments] = HandlerResource(handler)
        self._reindex()

    def add_resource(self, path: str, resource: IResource) -> None:
        """
        Serve exactly C{path} with C{resource}.
        """
        segments = _segments(path)
        self._served.claim(path, "add_resource()")
        self._routes[segments] = resource
        self._reindex()

    def mount(self, prefix: str, resource: IResource) -> None:
        """
        Serve everything under C{prefix} with C{resource}.

        @raise ConfigError: something serves C{prefix} already.
        """
        segments = _segments(prefix)
        self._served.claim(prefix, "mount()")
        if segments == (b"",):
            segments = ()
        self._mounts[segments] = resource
        self._reindex()

    def _reindex(self) -> None:
        # What requests look up, derived once per change of what is served.
        self._mount_order = sorted(self._mounts.items(), key=lambda item: len(item[0]), reverse=True)
        only = self._mounts.get(()) if len(self._mounts) == 1 and not self._routes else None
        self._root_only = only if only is not None and not only.isLeaf else None

    def served_paths(self) -> list[bytes]:
        """
        The paths of its routes and the prefixes of its mounts (C{b""} for
        the root).
        """
        return [b"/" + b"/".join(p) if p else b"" for p in [*self._routes, *self._mounts]]

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
        root = self._root_only
        if root is not None:
            # Nothing but a resource at the root (a config's app): as if it
            # were the site's root.  What graceful's site adds to plain
            # twisted.web's 19-20 us a request, in process: 5.2 -> 4.0 us.
            return root.getChildWithDefault(name, request)
        # Twisted has moved `name` from postpath to prepath already; both are
        # lists once Site has a request in hand.
        assert request.prepath is not None and request.postpath is not None
        full = (name, *request.postpath)
        route = self._routes.get(full)
        if route is not None:
            request.prepath.extend(request.postpath)
            request.postpath = []
            return route
        for prefix, mounted in self._mount_order:
            if full[: len(prefix)] == prefix:
                return self._enter(mounted, prefix, name, request)
        return notFound()

    def _enter(
        self, resource: IResource, prefix: tuple[bytes, ...], name: bytes, request: Request
    ) -> IResource:
        assert request.prepath is not None and request.postpath is not None
        if not prefix:
            # Mounted at the root: the segment already taken is its first.
            if resource.isLeaf:
                request.prepath.pop()
                request.postpath.insert(0, name)
                return resource
            return resource.getChildWithDefault(name, request)
        for _ in prefix[1:]:
            request.prepath.append(request.postpath.pop(0))
        return resource

    def render(self, request: Request) -> bytes:
        # Only reached for an empty path, which HTTP does not allow.
        return notFound().render(request)

"""
Routing: exact paths to handler functions, prefixes to whole resources.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Coroutine, Union, cast

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from .._logging import NamedLogger

HandlerResult = Union[bytes, str, "Deferred[Any]", Awaitable[Any]]
Handler = Callable[[Request], HandlerResult]


def _segments(path: str) -> tuple[bytes, ...]:
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/': {path!r}")
    parts = path.encode("utf-8").split(b"/")[1:]
    if parts and parts[-1] == b"" and len(parts) > 1:
        parts = parts[:-1]
    return tuple(parts)


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
        self._routes[_segments(path)] = HandlerResource(handler)

    def add_resource(self, path: str, resource: IResource) -> None:
        """
        Serve exactly C{path} with C{resource}.
        """
        self._routes[_segments(path)] = resource

    def mount(self, prefix: str, resource: IResource) -> None:
        segments = _segments(prefix)
        if segments == (b"",):
            segments = ()
        self._mounts[segments] = resource
        self._mount_order = sorted(self._mounts.items(), key=lambda item: len(item[0]), reverse=True)

    def getChildWithDefault(self, name: bytes, request: Request) -> IResource:
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
            # Mounted at the root: hand it the segment already taken.
            request.prepath.pop()
            request.postpath.insert(0, name)
            if resource.isLeaf:
                return resource
            segment = request.postpath.pop(0)
            request.prepath.append(segment)
            return resource.getChildWithDefault(segment, request)
        for _ in prefix[1:]:
            request.prepath.append(request.postpath.pop(0))
        return resource

    def render(self, request: Request) -> bytes:
        # Only reached for an empty path, which HTTP does not allow.
        return notFound().render(request)

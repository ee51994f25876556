"""
Unit tests for L{graceful.http.routing}: exact routes to handler functions and
prefixes to mounted resources, rendered through a real C{twisted.web} Site
over an in-memory transport.

Also home of L{HTTPConnection} and L{parse_responses}, the in-memory HTTP
client the drain tests share.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from attrs import define, field, frozen
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from twisted.web.wsgi import WSGIResource

from graceful._errors import ConfigError
from graceful.http.routing import Router

# -- an in-memory HTTP/1.1 client ----------------------------------------------


@frozen
class Response:
    """
    One parsed HTTP response.
    """

    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[-1] if values else None


def parse_responses(data: bytes) -> list[Response]:
    """
    Every complete response in C{data} (Content-Length, chunked, or to the
    end of the data when neither is given).
    """
    responses = []
    while data:
        head, separator, data = data.partition(b"\r\n\r\n")
        if not separator:
            raise AssertionError(f"incomplete response head: {head!r}")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers: dict[str, list[str]] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        length = headers.get("content-length")
        if length is not None:
            size = int(length[-1])
            body, data = data[:size], data[size:]
        elif "chunked" in headers.get("transfer-encoding", []):
            body, data = _dechunk(data)
        else:
            body, data = data, b""
        responses.append(Response(int(status_line.split()[1]), headers, body))
    return responses


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _, _, rest = data.partition(b"\r\n")
            return body, rest
        body, data = body + data[:size], data[size + 2 :]


@define
class HTTPConnection:
    """
    A client connection to C{site} over a L{StringTransport}.
    """

    site: Site
    transport: StringTransport = field(factory=StringTransport)
    channel: Any = None
    lost: bool = False

    def __attrs_post_init__(self) -> None:
        self.channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        self.channel.makeConnection(self.transport)

    def send(self, data: bytes) -> None:
        self.channel.dataReceived(data)

    def request(
        self, path: str, method: str = "GET", headers: dict[str, str] | None = None
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: test"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.send(("\r\n".join(lines) + "\r\n\r\n").encode())

    def responses(self) -> list[Response]:
        return parse_responses(self.transport.value())

    def only_response(self) -> Response:
        [response] = self.responses()
        return response

    @property
    def closing(self) -> bool:
        """
        Whether the server closed (or aborted) the connection.
        """
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """
        Deliver the end of the connection to the server, once.
        """
        if not self.lost:
            self.lost = True
            self.channel.connectionLost(Failure(ConnectionDone()))


def get(resource: Resource, path: str) -> Response:
    """
    Serve one GET of C{path} with C{resource} as the root.
    """
    connection = HTTPConnection(Site(resource, reactor=Clock()))
    connection.request(path)
    return connection.only_response()


# -- resources used by the tests ----------------------------------------------


class Recorder(Resource):
    """
    A leaf that answers with its name and the request's prepath and postpath.
    """

    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Request) -> bytes:
        return describe(self.name, request)


def describe(name: str, request: Request) -> bytes:
    pre = b"/".join(request.prepath)
    post = b"/".join(request.postpath)
    return name.encode() + b" pre=" + pre + b" post=" + post


class SyncThreadPool:
    """
    A thread pool that runs its work at once, in the calling thread.
    """

    def callInThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class SyncReactor(Clock):
    """
    A clock whose C{callFromThread} runs the call at once.
    """

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield f"wsgi script={environ['SCRIPT_NAME']} path={environ['PATH_INFO']}".encode()


# -- the tests -----------------------------------------------------------------


class RouteTests(SynchronousTestCase):
    """
    Exact paths served by handler functions, in every form a handler may
    answer.
    """

    def setUp(self) -> None:
        self.router = Router()

    def get(self, path: str) -> Response:
        return get(self.router, path)

    def test_exact_paths(self) -> None:
        self.router.route("/", lambda request: b"root")
        self.router.route("/pid", lambda request: b"pid")
        self.router.route("/a/b", lambda request: b"deep")
        self.assertEqual(self.get("/").body, b"root")
        self.assertEqual(self.get("/pid").body, b"pid")
        self.assertEqual(self.get("/a/b").body, b"deep")
        self.assertEqual(self.get("/pid?x=1").body, b"pid")

    def test_unknown_paths(self) -> None:
        self.router.route("/pid", lambda request: b"pid")
        for path in ("/", "/pids", "/pid/more", "/a"):
            self.assertEqual(self.get(path).status, 404, path)

    def test_trailing_slash_in_route(self) -> None:
        self.router.route("/pid/", lambda request: b"pid")
        self.assertEqual(self.get("/pid").body, b"pid")

    def test_decorator(self) -> None:
        @self.router.route("/hello")
        def hello(request: Request) -> bytes:
            return b"hi"

        self.assertEqual(hello(None), b"hi")  # type: ignore[arg-type]
        self.assertEqual(self.get("/hello").body, b"hi")

    def test_route_returns_handler(self) -> None:
        def handler(request: Request) -> bytes:
            return b""

        self.assertIs(self.router.route("/x", handler), handler)

    def test_path_needs_slash(self) -> None:
        self.assertRaises(ValueError, self.router.route, "pid", lambda request: b"")
        self.assertRaises(ValueError, self.router.mount, "api", Resource())

    def test_bytes(self) -> None:
        self.router.route("/", lambda request: b"\x00bytes")
        response = self.get("/")
        self.assertEqual((response.status, response.body), (200, b"\x00bytes"))
        self.assertEqual(response.header("content-length"), "6")

    def test_str(self) -> None:
        self.router.route("/", lambda request: "h\u00e9llo")
        response = self.get("/")
        self.assertEqual(response.body, "h\u00e9llo".encode())
        self.assertEqual(response.header("content-type"), "text/plain; charset=utf-8")

    def test_str_keeps_content_type_set_by_handler(self) -> None:
        def handler(request: Request) -> str:
            request.setHeader(b"content-type", b"application/json")
            return "{}"

        self.router.route("/", handler)
        self.assertEqual(self.get("/").header("content-type"), "application/json")

    def test_none_is_empty(self) -> None:
        self.router.route("/", lambda request: None)  # type: ignore[arg-type,return-value]
        response = self.get("/")
        self.assertEqual((response.status, response.body), (200, b""))

    def test_request_reaches_handler(self) -> None:
        self.router.route("/echo", lambda request: describe("echo", request))
        self.assertEqual(self.get("/echo?q=1").body, b"echo pre=echo post=")

    def test_deferred(self) -> None:
        later: Deferred[str] = Deferred()
        self.router.route("/", lambda request: later)
        connection = HTTPConnection(Site(self.router, reactor=Clock()))
        connection.request("/")
        self.assertEqual(connection.transport.value(), b"")
        later.callback("done")
        response = connection.only_response()
        self.assertEqual((response.status, response.body), (200, b"done"))
        self.assertEqual(response.header("content-type"), "text/plain; charset=utf-8")

    def test_coroutine(self) -> None:
        async def handler(request: Request) -> bytes:
            return b"async"

        self.router.route("/", handler)
        self.assertEqual(self.get("/").body, b"async")

    def test_coroutine_awaiting(self) -> None:
        later: Deferred[bytes] = Deferred()

        async def handler(request: Request) -> bytes:
            return b"got " + await later

        self.router.route("/", handler)
        connection = HTTPConnection(Site(self.router, reactor=Clock()))
        connection.request("/")
        self.assertEqual(connection.transport.value(), b"")
        later.callback(b"it")
        self.assertEqual(connection.only_response().body, b"got it")

    def test_exception_is_500(self) -> None:
        self.router.route("/", lambda request: 1 // 0)  # type: ignore[arg-type,return-value]
        response = self.get("/")
        self.assertEqual(response.status, 500)
        self.assertEqual(response.body, b"Internal Server Error\n")
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_failed_deferred_is_500(self) -> None:
        later: Deferred[bytes] = Deferred()
        self.router.route("/", lambda request: later)
        connection = HTTPConnection(Site(self.router, reactor=Clock()))
        connection.request("/")
        later.errback(KeyError("gone"))
        self.assertEqual(connection.only_response().status, 500)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_failing_coroutine_is_500(self) -> None:
        async def handler(request: Request) -> bytes:
            raise LookupError("no")

        self.router.route("/", handler)
        self.assertEqual(self.get("/").status, 500)
        self.assertEqual(len(self.flushLoggedErrors(LookupError)), 1)

    def test_wrong_result_type_is_500(self) -> None:
        self.router.route("/", lambda request: 42)  # type: ignore[arg-type,return-value]
        self.assertEqual(self.get("/").status, 500)
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_wrong_async_result_type_is_500(self) -> None:
        """
        A coroutine answering something that is not bytes or str must not
        leave the request hanging.
        """

        async def handler(request: Request) -> Any:
            return {"not": "bytes"}

        self.router.route("/", handler)
        connection = HTTPConnection(Site(self.router, reactor=Clock()))
        connection.request("/")
        self.assertEqual([r.status for r in connection.responses()], [500])
        self.assertEqual(len(self.flushLoggedErrors(TypeError)), 1)

    def test_client_gone_cancels(self) -> None:
        cancelled = []
        later: Deferred[bytes] = Deferred(lambda d: cancelled.append(d))
        self.router.route("/", lambda request: later)
        connection = HTTPConnection(Site(self.router, reactor=Clock()))
        connection.request("/")
        connection.lose()
        self.assertEqual(cancelled, [later])
        self.assertEqual(connection.transport.value(), b"")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_exact_resource(self) -> None:
        self.router.add_resource("/status", Recorder("status"))
        self.assertEqual(self.get("/status").body, b"status pre=status post=")
        self.assertEqual(self.get("/status/x").status, 404)


class MountTests(SynchronousTestCase):
    """
    Whole resources mounted under a prefix: the longest prefix wins and the
    resource sees the rest of the path as its postpath.
    """

    def setUp(self) -> None:
        self.router = Router()

    def get(self, path: str) -> Response:
        return get(self.router, path)

    def test_longest_prefix(self) -> None:
        self.router.mount("/api", Recorder("api"))
        self.router.mount("/api/v2", Recorder("v2"))
        self.assertEqual(self.get("/api/x/y").body, b"api pre=api post=x/y")
        self.assertEqual(self.get("/api/v2/y").body, b"v2 pre=api/v2 post=y")
        self.assertEqual(self.get("/api/v2").body, b"v2 pre=api/v2 post=")
        self.assertEqual(self.get("/api").body, b"api pre=api post=")
        self.assertEqual(self.get("/api/v3").body, b"api pre=api post=v3")

    def test_prefix_is_whole_segments(self) -> None:
        self.router.mount("/api", Recorder("api"))
        self.assertEqual(self.get("/apix").status, 404)
        self.assertEqual(self.get("/").status, 404)

    def test_trailing_slash_in_prefix(self) -> None:
        self.router.mount("/api/", Recorder("api"))
        self.assertEqual(self.get("/api/x").body, b"api pre=api post=x")

    def test_route_before_mount(self) -> None:
        self.router.mount("/api", Recorder("api"))
        self.router.route("/api/health", lambda request: b"route")
        self.assertEqual(self.get("/api/health").body, b"route")
        self.assertEqual(self.get("/api/health/x").body, b"api pre=api post=health/x")

    def test_resource_tree_under_prefix(self) -> None:
        tree = Resource()
        tree.putChild(b"users", Recorder("users"))
        self.router.mount("/api", tree)
        self.assertEqual(self.get("/api/users/7").body, b"users pre=api/users post=7")
        self.assertEqual(self.get("/api/other").status, 404)

    def test_resource_tree_at_root(self) -> None:
        tree = Resource()
        tree.putChild(b"", Recorder("index"))
        tree.putChild(b"users", Recorder("users"))
        self.router.mount("/", tree)
        self.router.route("/pid", lambda request: b"pid")
        self.assertEqual(self.get("/").body, b"index pre= post=")
        self.assertEqual(self.get("/users/7").body, b"users pre=users post=7")
        self.assertEqual(self.get("/pid").body, b"pid")
        self.assertEqual(self.get("/nothing").status, 404)

    def test_resource_tree_alone_at_root(self) -> None:
        """
        A tree mounted at C{/} with nothing else beside it (a config's
        resource C{app}) serves each path as it would as the site's own
        root; a route added later is served before it.
        """
        def tree() -> Resource:
            root = Resource()
            root.putChild(b"", Recorder("index"))
            users = Resource()
            users.putChild(b"7", Recorder("seven"))
            root.putChild(b"users", users)
            return root

        self.router.mount("/", tree())
        for path in ("/", "/users/7/x", "/users/8", "/nothing"):
            alone, plain = self.get(path), get(tree(), path)
            self.assertEqual((alone.status, alone.body), (plain.status, plain.body), path)
        self.assertEqual(self.get("/users/7/x").body, b"seven pre=users/7 post=x")
        self.router.route("/users/8", lambda request: b"route")
        self.assertEqual(self.get("/users/8").body, b"route")
        self.assertEqual(self.get("/users/7/x").body, b"seven pre=users/7 post=x")

    def test_leaf_at_root(self) -> None:
        """
        A leaf mounted at C{/} serves every path, which it sees whole.
        """
        self.router.mount("/", Recorder("all"))
        self.assertEqual(self.get("/a/b").body, b"all pre= post=a/b")
        self.assertEqual(self.get("/").body, b"all pre= post=")

    def test_same_path_twice_is_refused(self) -> None:
        """
        A router refuses a second mount, route or resource on a path it
        serves (a g.Router used as an app has no server to name).
        """
        self.router.mount("/api", Recorder("api"))
        self.router.route("/pid", lambda request: b"pid")
        for call, what in [
            (lambda: self.router.mount("/api/", Recorder("again")), "mount()"),
            (lambda: self.router.route("/api", lambda request: b""), "route()"),
            (lambda: self.router.add_resource("/pid", Recorder("pid")), "add_resource()"),
        ]:
            error = self.assertRaises(ConfigError, call)
            self.assertIn("is served twice: by ", str(error))
            self.assertTrue(str(error).endswith(f"and by {what}"), str(error))
        self.assertEqual(self.get("/api/x").body, b"api pre=api post=x")
        self.assertEqual(self.get("/api").body, b"api pre=api post=")

    def test_wsgi_at_root(self) -> None:
        """
        A WSGI app mounted at C{/} (what a config's WSGI C{app} becomes) sees
        the whole path in C{PATH_INFO}.
        """
        reactor = SyncReactor()
        self.router.mount("/", WSGIResource(reactor, SyncThreadPool(), wsgi_app))
        response = self.get("/legacy/page")
        self.assertEqual((response.status, response.body), (200, b"wsgi script= path=/legacy/page"))

    def test_wsgi_under_prefix(self) -> None:
        reactor = SyncReactor()
        self.router.mount("/legacy", WSGIResource(reactor, SyncThreadPool(), wsgi_app))
        self.assertEqual(self.get("/legacy/page").body, b"wsgi script=/legacy path=/page")

"""
ASGI 3 applications as twisted.web resources, run on Twisted's asyncio
reactor.

Each request still goes through graceful's site and channel: it is counted,
drained and written to the access log like any other.  The app runs as an
asyncio task on the loop the reactor runs, so asyncio code in it
(C{asyncio.sleep}, C{create_task}, async drivers, httpx) works.

twisted.web reads the whole request body before it renders (into
C{request.content}); the body is handed to the app from there in chunks of
L{BODY_CHUNK} bytes with C{more_body}, as the spec asks.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from io import BytesIO
from typing import IO, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from .anyio_root import keep_worker_threads
from .scope import (  # noqa: F401  (the ASGI types, named here too)
    ASGI_VERSIONS,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    build_http_scope,
    http_version,
    is_websocket_upgrade,
)



#: Bytes of request body per C{http.request} message.
BODY_CHUNK = 65536


_log = Logger(namespace="graceful.asgi")


def is_asgi_app(obj: Any, required_arguments: int | None) -> bool:
    """
    Whether C{obj} looks like an ASGI 3 app: an async callable taking
    C{scope}, C{receive} and C{send}.
    """
    if required_arguments != 3:
        return False
    if inspect.iscoroutinefunction(obj):
        return True
    call = getattr(obj, "__call__", None)
    return call is not None and inspect.iscoroutinefunction(call)


def asyncio_reactor_running() -> bool:
    """
    Whether the global reactor is Twisted's asyncio reactor.
    """
    reactor = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return False
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    return isinstance(reactor, AsyncioSelectorReactor)


def ensure_asyncio_reactor() -> None:
    """
    Install Twisted's asyncio reactor unless a reactor is installed already.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()


def global_reactor() -> Any:
    """
    The global reactor: this module is the one of asgi/ that names it.
    """
    from twisted.internet import reactor

    return reactor


def reactor_loop() -> asyncio.AbstractEventLoop:
    """
    The asyncio loop the global (asyncio) reactor runs.
    """
    reactor = global_reactor()
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is None:
        raise RuntimeError("ASGI apps need Twisted's asyncio reactor")
    keep_worker_threads(loop, reactor)
    return loop


class ASGIResource(Resource):
    """
    Serves every request under its mount with one ASGI 3 app.

    @ivar app: the app (an ASGI 2 app is wrapped by asgiref's helper).
    @ivar root_path: the prefix it is mounted at (C{""} at the root).
    @ivar lifespan: the app's lifespan, whose state requests see.
    """

    isLeaf = True

    def __init__(
        self,
        app: Any,
        root_path: str = "",
        lifespan: Lifespan | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__()
        # asgiref is imported only by servers that mount an ASGI app.
        from asgiref.compatibility import guarantee_single_callable

        self.app: ASGIApp = guarantee_single_callable(app)
        self.root_path = root_path.rstrip("/")
        self.lifespan = lifespan if lifespan is not None else Lifespan(self.app, loop)
        self._loop = loop
        self._websocket: Any = None

    def render(self, request: Request) -> int | bytes:
        if self._loop is None:
            self._loop = reactor_loop()
        if is_websocket_upgrade(request):
            # Imported here: it builds on this module (and on autobahn).
            from . import websocket as ws

            if self._websocket is None:
                self._websocket = (
                    ws.websocket_factory(self.app, lambda: self._loop, global_reactor()) or False
                )
            if not self._websocket:
                return ws.not_implemented(request)
            scope = ws.build_websocket_scope(request, self.root_path, self.lifespan.state)
            result: int | bytes = self._websocket(request, scope)
            return result
        scope = build_http_scope(request, self.root_path, self.lifespan.state)
        HTTPCycle(self.app, scope, request).run(self._loop)
        return NOT_DONE_YET


class HTTPCycle:
    """
    One request through the app: its body to C{receive}, the app's messages
    from C{send} to the response.

    @ivar started: C{http.response.start} was sent.
    @ivar complete: the last body message was sent (or the request ended).
    @ivar disconnected: the client went away before the response ended.
    """

    def __init__(self, app: ASGIApp, scope: Scope, request: Request) -> None:
        self.app = app
        self.scope = scope
        self.request = request
        self.started = False
        self.complete = False
        self.disconnected = False
        self._waiting: asyncio.Future[Message] | None = None
        # No Content-Type the app did not set (twisted.web adds text/html).
        request.defaultContentType = None
        # (None only for a request that never had a body stream.)
        self._content: IO[bytes] = request.content or BytesIO()
        self._body_left = self._content.seek(0, 2)
        self._content.seek(0)
        self._body_sent = False
        request.notifyFinish().addErrback(self._client_gone)

    def run(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        # A done callback rather than Deferred.fromFuture: one Deferred less
        # on every request.
        task = asyncio.ensure_future(self.app(self.scope, self.receive, self.send), loop=loop)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[None]) -> None:
        if task.cancelled():
            self._failed(Failure(asyncio.CancelledError()))
            return
        error = task.exception()
        if error is not None:
            self._failed(Failure(error, type(error), error.__traceback__))
        else:
            self._returned(None)

    def _client_gone(self, failure: Failure) -> None:
        self.disconnected = True
        self.complete = True
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result({"type": "http.disconnect"})

    async def receive(self) -> Message:
        if not self._body_sent and not self.disconnected:
            chunk = self._content.read(min(BODY_CHUNK, self._body_left))
            self._body_left -= len(chunk)
            more = self._body_left > 0 and bool(chunk)
            self._body_sent = not more
            return {"type": "http.request", "body": chunk, "more_body": more}
        if self.disconnected or self.complete:
            return {"type": "http.disconnect"}
        # Nothing more to read: wait until the client goes away (or the
        # response ends), as uvicorn does.
        self._waiting = asyncio.get_running_loop().create_future()
        return await self._waiting

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if self.disconnected:
            return  # the client is gone: what the app sends goes nowhere
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected 'http.response.start', got {kind!r}")
            self.started = True
            request = self.request
            request.setResponseCode(int(message["status"]))
            for name, value in message.get("headers", ()):
                request.responseHeaders.addRawHeader(bytes(name), bytes(value))
            return
        if kind != "http.response.body":
            raise RuntimeError(f"expected 'http.response.body', got {kind!r}")
        if self.complete:
            raise RuntimeError("the response is complete already")
        body = bytes(message.get("body", b""))
        if body:
            self.request.write(body)
        if not message.get("more_body", False):
            self.complete = True
            self.request.finish()
            if self._waiting is not None and not self._waiting.done():
                self._waiting.set_result({"type": "http.disconnect"})

    def _returned(self, result: object) -> None:
        if self.complete:
            return
        _log.error("ASGI app returned without completing the response: {path}",
                   path=self.scope["path"])
        self._give_up()

    def _failed(self, failure: Failure) -> None:
        if self.disconnected:
            return
        _log.failure("ASGI app raised on {path}", failure, path=self.scope["path"])
        self._give_up()

    def _give_up(self) -> None:
        self.complete = True
        request = self.request
        if not self.started:
            request.setResponseCode(500)
            request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
            body = b"Internal Server Error\n"
            request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
            request.write(body)
            request.finish()
            return
        # Part of the response is out: only closing tells the client it is
        # cut short.
        transport = request.channel.transport if request.channel is not None else None
        if transport is not None:
            transport.abortConnection()  # type: ignore[attr-defined]


class LifespanFailed(Exception):
    """
    The app's lifespan startup failed; the message says why.
    """


class Lifespan:
    """
    The C{lifespan} scope of one app: startup before the process reports
    ready, shutdown once it has drained.

    An app that raises or returns before it receives C{lifespan.startup}
    does not support lifespan; it is served without (uvicorn's "auto" mode).

    @ivar state: what the app stored in C{scope["state"]}; copied into
    every request's scope.
    @ivar supported: C{False} once the app showed it has no lifespan.
    """

    def __init__(self, app: ASGIApp, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.app = app
        self._loop = loop
        self.state: dict[str, Any] = {}
        self.supported = True
        self.started = False
        self._inbox: asyncio.Queue[Message] | None = None
        self._received_startup = False
        self._answer: asyncio.Future[Message] | None = None
        self._task: asyncio.Future[None] | None = None
        self._shutdown: Deferred[None] | None = None

    def startup(self) -> Deferred[None]:
        """
        Fires once the app completed startup (or has no lifespan); fails
        with L{LifespanFailed}.
        """
        if self._loop is None:
            self._loop = reactor_loop()
        return Deferred.fromFuture(self._loop.create_task(self._startup()))

    async def _startup(self) -> None:
        self._inbox = asyncio.Queue()
        self._answer = asyncio.get_running_loop().create_future()
        scope = {"type": "lifespan", "asgi": dict(ASGI_VERSIONS), "state": self.state}
        self._task = asyncio.get_running_loop().create_task(self._run(scope))
        await self._inbox.put({"type": "lifespan.startup"})
        answer = await self._answer
        kind = answer["type"]
        if kind == "lifespan.startup.complete":
            self.started = True
            return
        if kind == "unsupported":
            self.supported = False
            return
        raise LifespanFailed(answer.get("message") or kind)

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as e:
            if not self._received_startup:
                self._reply({"type": "unsupported"})
            else:
                self._reply(
                    {"type": "raised", "message": f"{type(e).__name__}: {e}".splitlines()[0]}
                )
            if not isinstance(e, Exception):
                raise
            return
        # Returning before it asked for lifespan.startup is the other way an
        # app says it has no lifespan (as uvicorn's "auto" mode takes it).
        self._reply(
            {"type": "returned", "message": "the app returned"}
            if self._received_startup
            else {"type": "unsupported"}
        )

    def _reply(self, message: Message) -> None:
        if self._answer is not None and not self._answer.done():
            self._answer.set_result(message)

    async def _receive(self) -> Message:
        assert self._inbox is not None
        message = await self._inbox.get()
        if message["type"] == "lifespan.startup":
            self._received_startup = True
        return message

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        if kind in ("lifespan.startup.complete", "lifespan.startup.failed"):
            self._reply(message)
        elif kind in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
            self._reply(message)
        else:
            raise RuntimeError(f"unexpected lifespan message {kind!r}")

    def shutdown(self) -> Deferred[None]:
        """
        Ask the app to shut down, once; fires when it answered (or failed:
        logged, never raised).
        """
        if self._shutdown is None:
            if not self.started:
                self._shutdown = Deferred()
                self._shutdown.callback(None)
            else:
                assert self._loop is not None
                self._shutdown = Deferred.fromFuture(self._loop.create_task(self._shut_down()))
        return self._shutdown

    async def _shut_down(self) -> None:
        assert self._inbox is not None
        self._answer = asyncio.get_running_loop().create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        answer = await self._answer
        if answer["type"] != "lifespan.shutdown.complete":
            _log.error(
                "ASGI lifespan shutdown failed: {why}",
                why=answer.get("message") or answer["type"],
            )

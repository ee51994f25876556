# -*- test-case-name: tests.unit.asgi.test_resource -*-
"""
ASGI 3 applications as twisted.web resources, run on Twisted's asyncio
reactor.

Each request still goes through graceful's site and channel: it is counted,
drained and written to the access log like any other.  The app runs as an
asyncio task on the loop the reactor runs, so asyncio code in it
(C{asyncio.sleep}, C{create_task}, async drivers, httpx) works.

On a server with an ASGI mount, a request with a body that routes to an
ASGI app is rendered as soon as its headers are in (L{ASGIRequest}; twisted.web
would wait for the whole body) and the app receives the body as it arrives,
with C{more_body}; the connection is not read while more than L{BODY_BUFFER}
bytes wait for the app.  C{send()} waits while the transport's buffer is over
its high-water mark, so a slow reader holds the app back rather than filling
memory.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import traceback
from io import BytesIO
from typing import IO, Any, AnyStr, Callable, Mapping, Sequence
from urllib.parse import unquote_to_bytes

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from zope.interface import implementer

from .._sockets import TEMPLATE_VARIABLE
from .anyio_root import keep_worker_threads
from .body import BODY_BUFFER, BODY_CHUNK, RequestBody  # noqa: F401  (named here too)
from .scope import (  # noqa: F401  (the ASGI types, named here too)
    ASGI_VERSIONS,
    TRAILERS,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    build_http_scope,
    http_version,
    is_websocket_upgrade,
)





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
    Install Twisted's asyncio reactor unless a reactor is installed already:
    on uvloop's loop where uvloop is installed (C{graceful[standard]}), else
    on asyncio's own.  Chosen once, and logged.
    """
    if "twisted.internet.reactor" not in sys.modules:
        from twisted.internet.main import installReactor

        from .reactor import GracefulAsyncioReactor

        factory, name = loop_factory()
        if TEMPLATE_VARIABLE in os.environ:
            # A worker template: each forked worker makes the chosen loop
            # its own, and this one never runs.  libuv's state does not
            # survive a fork: with the template's uvloop made before it,
            # a worker aborted (SIGABRT) in 2 starts of 47.
            loop = asyncio.new_event_loop()
        else:
            loop = factory()
        asyncio.set_event_loop(loop)
        # Twisted's asyncio reactor, less its per-event log wrapping (asgi/reactor.py).
        reactor = GracefulAsyncioReactor(loop)
        reactor.loop_factory = factory
        installReactor(reactor)
        _log.info("Twisted's asyncio reactor on {loop}", loop=name)
        if name == "uvloop":
            reactor = global_reactor()
            # Once uvloop's loop runs (it takes the wakeup fd as it starts).
            reactor.callWhenRunning(reactor.callLater, 0, hear_children_exit, reactor)


def hear_children_exit(reactor: Any) -> None:
    """
    Give Twisted back the signal wakeup fd that uvloop took when its loop
    started: Twisted hears of SIGCHLD through it, and without it a master
    never reaped its workers (an old master waited for a drained worker,
    a zombie, until drain_timeout, and then for ever).
    """
    signals = getattr(reactor, "_signals", None)
    for handling in getattr(signals, "_signalHandlings", ()):
        waker = getattr(handling, "_childWaker", None)
        if waker is not None:
            waker.install()


def loop_factory() -> tuple[Callable[[], asyncio.AbstractEventLoop], str]:
    """
    What makes an event loop, uvloop's where it is installed, and its name.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop, "asyncio's loop"
    return uvloop.new_event_loop, "uvloop"


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
        websocket_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        # asgiref is imported only by servers that mount an ASGI app.
        from asgiref.compatibility import guarantee_single_callable

        self.app: ASGIApp = guarantee_single_callable(app)
        self.root_path = root_path.rstrip("/")
        self.lifespan = lifespan if lifespan is not None else Lifespan(self.app, loop)
        self._loop = loop
        self._websocket: Any = None
        self._websocket_options = websocket_options

    def render(self, request: Request) -> int | bytes:
        if self._loop is None:
            self._loop = reactor_loop()
        if is_websocket_upgrade(request):
            # Imported here: it builds on this module (and on autobahn).
            from . import websocket as ws

            if self._websocket is None:
                self._websocket = (
                    ws.websocket_factory(
                        self.app, lambda: self._loop, global_reactor(), self._websocket_options
                    )
                    or False
                )
            if not self._websocket:
                return ws.not_implemented(request)
            scope = ws.build_websocket_scope(request, self.root_path, self.lifespan.state)
            result: int | bytes = self._websocket(request, scope)
            return result
        scope = build_http_scope(request, self.root_path, self.lifespan.state)
        HTTPCycle(self.app, scope, request).run(self._loop)
        return NOT_DONE_YET


class ASGIRequest(Request):
    """
    A request that an ASGI app may take before its body has arrived.

    twisted.web renders a request once its whole body is in (spooled to a
    temporary file past 100 kB): a 50 MiB upload reached the app 2.6 s
    late.  The site of a server with an ASGI mount makes its requests with
    this class: once the headers are in, a request with a body that routes
    to an ASGI app is rendered at once, and its body goes to the app's
    C{receive()} as it arrives (L{HTTPCycle.body_received}).  Other requests
    behave as twisted.web's own.

    It also keeps the request's headers in the order they came
    (L{WireOrderHeaders}), which twisted.web's L{Headers} groups by name.

    @ivar streaming: rendered before its body arrived.
    @ivar body_sink: the cycle that receives the body, once there is one.
    """

    streaming = False
    body_sink: HTTPCycle | None = None
    #: The whole body arrived (a streaming request).
    body_in = False
    _finish_due = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requestHeaders = WireOrderHeaders()

    def gotLength(self, length: int | None) -> None:
        channel = self.channel
        # The request line, which twisted.web hands over only with the body.
        command = getattr(channel, "_command", None)
        path = getattr(channel, "_path", None)
        version = getattr(channel, "_version", None)
        if length == 0 or command is None or path is None or version is None:
            super().gotLength(length)
            return
        if not self._routes_to_asgi(channel, command, path):
            super().gotLength(length)
            return
        self.streaming = True
        # Empty: requestReceived parses no form from it; the app reads the
        # body from receive().
        self.content = BytesIO()  # type: ignore[assignment]
        super().requestReceived(command, path, version)

    def _routes_to_asgi(self, channel: Any, command: bytes, path: bytes) -> bool:
        site = getattr(channel, "site", None)
        if site is None:
            return False
        self.method, self.uri = command, path
        self.path = path.split(b"?", 1)[0]
        self.prepath = []
        self.postpath = [unquote_to_bytes(p) for p in self.path[1:].split(b"/")]
        try:
            resource = site.getResourceFor(self)
        except Exception:
            return False  # process() will meet it again, and answer it
        return isinstance(resource, ASGIResource) and not is_websocket_upgrade(self)

    def handleContentChunk(self, data: bytes) -> None:
        if not self.streaming:
            super().handleContentChunk(data)
        elif self.body_sink is not None:
            self.body_sink.body_received(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if not self.streaming:
            super().requestReceived(command, path, version)
            return
        # The body is in (the request was rendered when its headers came).
        self.body_in = True
        if self.body_sink is not None:
            self.body_sink.body_ended()
        if self._finish_due and not self.finished and not self._disconnected:
            super().finish()

    def finish(self) -> None:
        if self.streaming and not self.body_in:
            # Answered before its body all came: the channel must read the
            # rest of it before it parses its next request, so the request
            # ends once it has (the app's response is out already).
            self._finish_due = True
            return
        super().finish()


class WireOrderHeaders(Headers):
    """
    Request headers that also keep the order they arrived in (twisted.web's
    L{Headers} groups them by name: C{A:1, B:2, A:3} read as C{a, a, b}).

    @ivar wire: C{(lowercased name, value)} in the order of C{addRawHeader};
        C{None} once they were changed otherwise (the grouped ones are then
        the truth).
    """

    __slots__ = ("wire",)

    def __init__(self) -> None:
        super().__init__()
        self.wire: list[tuple[bytes, bytes]] | None = []

    def addRawHeader(self, name: str | bytes, value: str | bytes) -> None:
        super().addRawHeader(name, value)
        if self.wire is not None:
            self.wire.append((_as_bytes(name).lower(), _as_bytes(value)))

    def setRawHeaders(self, name: str | bytes, values: Sequence[str | bytes]) -> None:
        super().setRawHeaders(name, values)
        self.wire = None

    def removeHeader(self, name: AnyStr) -> None:
        super().removeHeader(name)
        self.wire = None


def _as_bytes(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


class _NotPausable:
    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass


def _network(request: Request) -> Any:
    """
    What reads the request's connection: pausing it stops reading.
    """
    channel = request.channel
    if channel is None:
        return _NotPausable()
    return getattr(channel, "_networkProducer", None) or channel.transport or _NotPausable()


@implementer(IPushProducer)
class HTTPCycle:
    """
    One request through the app: its body to C{receive}, the app's messages
    from C{send} to the response.

    The request body goes to the app as it arrives; while more than
    L{BODY_BUFFER} bytes of it wait for the app, the connection is not read
    (as uvicorn pauses reading).  C{send} waits while the transport's write
    buffer is over its high-water mark: the cycle is the request's push
    producer, paused and resumed by the transport through the channel.

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
        self._loop: asyncio.AbstractEventLoop | None = None
        # No Content-Type the app did not set (twisted.web adds text/html).
        request.defaultContentType = None
        # What reads the connection, asked each time (it may change).
        def pause() -> None:
            _network(request).pauseProducing()

        def resume() -> None:
            _network(request).resumeProducing()

        if getattr(request, "streaming", False):
            self._body = RequestBody(pause, resume)
            request.body_sink = self  # type: ignore[attr-defined]
        else:
            # A request twisted.web read whole (not streamed: over HTTP/2,
            # or without a body) is read from its content file as the app
            # asks.  (None only for a request that never had a body stream.)
            self._body = RequestBody(pause, resume, request.content or BytesIO())
        #: The app's receive().
        self.receive = self._body.receive
        self._trailers_due = False
        self._writable: asyncio.Future[None] | None = None
        self._producing = False
        self._trailers = False
        self._trailer_lines: list[bytes] = []
        request.notifyFinish().addErrback(self._client_gone)

    def run(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        self._loop = loop
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
        self._body.gone()
        self.resumeProducing()

    # -- the request body (L{RequestBody}) ------------------------------------

    def body_received(self, data: bytes) -> None:
        """
        A piece of the request body arrived (a streaming request).
        """
        self._body.add(data)

    def body_ended(self) -> None:
        """
        The whole request body arrived (a streaming request).
        """
        self._body.end()

    # -- the response ---------------------------------------------------------

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
            self._trailers = bool(message.get("trailers")) and TRAILERS in self.scope.get(
                "extensions", {}
            )
            return
        if self.complete:
            raise RuntimeError("the response is complete already")
        if kind == "http.response.trailers" and self._trailers_due:
            self._add_trailers(message)
            return
        if kind != "http.response.body" or self._trailers_due:
            raise RuntimeError(f"expected 'http.response.body', got {kind!r}")
        body = bytes(message.get("body", b""))
        more = message.get("more_body", False)
        if body:
            request = self.request
            if more and not self._producing:
                # Only a streamed response has a later send() to hold back.
                self._producing = True
                request.registerProducer(self, True)
                if getattr(request.channel, "_waitingForTransport", False):
                    self.pauseProducing()  # its buffer is full already
            request.write(body)
        if not more:
            if self._trailers:
                self._trailers_due = True
                return
            self._end()
            return
        writable = self._writable
        if writable is not None:
            await writable

    def _add_trailers(self, message: Message) -> None:
        for name, value in message.get("headers", ()):
            self._trailer_lines.append(bytes(name) + b": " + bytes(value) + b"\r\n")
        if not message.get("more_trailers", False):
            self._end(trailers=True)

    def _end(self, trailers: bool = False) -> None:
        self.complete = True
        if self._producing:
            self._producing = False
            self.request.unregisterProducer()
        self.resumeProducing()
        if trailers:
            request = self.request
            if not request.startedWriting:
                request.write(b"")
            if getattr(request, "chunked", False) and request.channel is not None:
                # twisted.web writes the last chunk in finish() and knows no
                # trailers: write it with them, and tell finish() not to.
                request.channel.write(b"0\r\n" + b"".join(self._trailer_lines) + b"\r\n")
                request.chunked = False
        self._finish()

    def _finish(self) -> None:
        # A response out before the request body came in: the rest is read
        # and dropped (ASGIRequest.finish ends the request once it is in,
        # before the connection takes its next request).
        self._body.finish()
        if not self.disconnected:
            self.request.finish()

    # IPushProducer, for the request: the transport's buffer is over (under)
    # its high-water mark.

    def pauseProducing(self) -> None:
        if self._writable is None and self._loop is not None:
            self._writable = self._loop.create_future()

    def resumeProducing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def stopProducing(self) -> None:
        self.resumeProducing()

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
        self._body.finish()
        request = self.request
        if self._producing:
            self._producing = False
            request.unregisterProducer()
        if not self.started:
            request.setResponseCode(500)
            request.responseHeaders.setRawHeaders(b"content-type", [b"text/plain; charset=utf-8"])
            body = b"Internal Server Error\n"
            request.responseHeaders.setRawHeaders(b"content-length", [b"%d" % len(body)])
            request.write(body)
            self._finish()
            return
        # Part of the response is out: only closing tells the client it is
        # cut short (no last chunk, or fewer bytes than its Content-Length).
        # A close, not an abort: what was sent still reaches the client, as
        # uvicorn's transport.close() does.  finish() would end the response
        # as if complete, so the access-log line is written here.
        channel = request.channel
        if channel is None:
            return
        site = getattr(channel, "factory", None)
        if site is not None:
            site.log(request)
        channel.loseConnection()


class LifespanFailed(Exception):
    """
    The app's lifespan startup failed.  Its string is one line (the last
    of the app's message: Starlette sends a whole traceback, whose last
    line names the exception); C{message} is the whole of it.
    """

    def __init__(self, message: str) -> None:
        lines = [line for line in message.splitlines() if line.strip()]
        super().__init__(lines[-1].strip() if lines else message)
        self.message = message


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
        #: The app's lifespan task returned or raised.
        self._ended = False

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
        message = str(answer.get("message") or kind)
        if "\n" in message.strip():
            # The reason is one line; the log keeps the whole (a traceback).
            _log.error("ASGI lifespan startup failed:\n{why}", why=message)
        raise LifespanFailed(message)

    async def _run(self, scope: Scope) -> None:
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as e:
            self._ended = True
            if not self._received_startup:
                self._reply({"type": "unsupported"})
            else:
                if self.started:
                    # Past startup: nothing else would say why it ended.
                    _log.failure("ASGI lifespan raised", Failure(e, type(e), e.__traceback__))
                # The whole traceback, as uvicorn prints it: the log keeps it
                # once, the reason is its last line.
                trace = "".join(traceback.format_exception(e)) if not self.started else ""
                self._reply({"type": "raised", "message": trace or f"{type(e).__name__}: {e}"})
            if not isinstance(e, Exception):
                raise
            return
        self._ended = True
        # Returning before it asked for lifespan.startup is the other way an
        # app says it has no lifespan (as uvicorn's "auto" mode takes it);
        # returning after startup ends the lifespan: its shutdown has
        # nothing to wait for.
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
            self.started = kind == "lifespan.startup.complete"
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
        if self._ended:
            return  # the lifespan task ended after startup (uvicorn: no wait)
        self._answer = asyncio.get_running_loop().create_future()
        await self._inbox.put({"type": "lifespan.shutdown"})
        answer = await self._answer
        if answer["type"] == "returned":
            return  # it returned without a word: the shutdown is done
        if answer["type"] != "lifespan.shutdown.complete":
            _log.error(
                "ASGI lifespan shutdown failed: {why}",
                why=answer.get("message") or answer["type"],
            )

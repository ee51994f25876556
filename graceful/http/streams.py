# -*- test-case-name: tests.unit.http.test_streams -*-
"""
Long responses (Server-Sent Events, long polls, long downloads) across a
drain: a request can learn that its process is draining, and
L{EventStream} ends an SSE stream politely with a C{retry:} hint.

    @server.route("/events")
    def events(request):
        stream = graceful.EventStream(request)
        clock = LoopingCall(lambda: stream.send(time.ctime()))
        clock.start(1)
        stream.done.addBoth(lambda _: clock.stop())
        return stream.done

A long poll answers at once when the process leaves::

    d = graceful.draining(request)   # fires when the drain starts

A request that ignores the notice is cut at C{drain_timeout}, as any other.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.web.http import Request


class StreamRegistry:
    """
    A site's requests that asked to hear of the drain.
    """

    def __init__(self) -> None:
        self._waiting: dict[Request, list[Deferred[None]]] = {}
        self._notified = False

    def wait(self, request: Request) -> Deferred[None]:
        """
        A Deferred that fires when the drain starts, or at once if it has;
        the request counts as a stream until it finishes.
        """
        d: Deferred[None] = Deferred()
        if request not in self._waiting:
            self._waiting[request] = []
            request.notifyFinish().addBoth(lambda _: self._waiting.pop(request, None))
        if self._notified:
            d.callback(None)
        else:
            self._waiting[request].append(d)
        return d

    def notify(self) -> None:
        if self._notified:
            return
        self._notified = True
        for request, waiters in list(self._waiting.items()):
            self._waiting[request] = []
            for d in waiters:
                d.callback(None)

    def channels(self) -> set[Any]:
        """
        The channels the streams are on.
        """
        return {request.channel for request in self._waiting}

    def __len__(self) -> int:
        return len(self._waiting)


def _registry(request: Request) -> StreamRegistry | None:
    site = getattr(request, "site", None) or getattr(request.channel, "site", None)
    registry = getattr(site, "streams", None)
    return registry if isinstance(registry, StreamRegistry) else None


def drain_reason(request: Request) -> str | None:
    """
    C{"restart"} or C{"shutdown"} once the process serving C{request}
    drains; C{None} before.
    """
    site = getattr(request, "site", None) or getattr(request.channel, "site", None)
    return getattr(site, "drain_reason", None)


def draining(request: Request) -> Deferred[None]:
    """
    A Deferred that fires when the process serving C{request} starts to
    drain (a restart hands over or a shutdown begins), or at once if it
    already does.  It never fires for a request not served by a graceful
    server.

    While its request is open, the connection counts as a C{"stream"} in the
    admin status and metrics.
    """
    registry = _registry(request)
    if registry is None:
        return Deferred()
    return registry.wait(request)


def _field(name: bytes, value: str | bytes) -> bytes:
    raw = value.encode("utf-8") if isinstance(value, str) else value
    # A line break would end the field early: each line is a field of its own.
    return b"".join(name + b": " + line + b"\n" for line in raw.splitlines() or [b""])


class EventStream:
    """
    A Server-Sent Events response on C{request}, ended politely on a drain.

    When the process drains, the stream sends a last event (C{event:
    drain}, C{data:} the reason, C{restart} or C{shutdown}) with C{retry:}
    set to C{retry} milliseconds, and finishes: an C{EventSource} reconnects
    after that pause, to the new process.

    @ivar done: fires when the stream ends (drained, closed, or the client
        left); render functions can return it.
    @ivar closed: C{True} once the stream ended.
    @ivar retry: the reconnection delay, in milliseconds, sent with the
        last event.
    """

    def __init__(self, request: Request, retry: int = 1000) -> None:
        self.request = request
        self.retry = retry
        self.closed = False
        self.done: Deferred[None] = Deferred()
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        # Proxies such as nginx would otherwise buffer the events.
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.notifyFinish().addBoth(self._gone)
        # A comment: sends the headers now, so the client sees the stream open.
        request.write(b": stream\n\n")
        draining(request).addCallback(self._drain)

    def send(
        self, data: str | bytes, event: str | None = None, id: str | None = None
    ) -> bool:
        """
        Send one event; returns C{False} if the stream has ended.
        """
        if self.closed:
            return False
        out = b""
        if event is not None:
            out += _field(b"event", event)
        if id is not None:
            out += _field(b"id", id)
        out += _field(b"data", data) + b"\n"
        self.request.write(out)
        return True

    def close(self) -> None:
        """
        Finish the response.
        """
        if not self.closed:
            self.closed = True
            self.request.finish()
            self._end()

    def _drain(self, _: None) -> None:
        if self.closed:
            return
        reason = drain_reason(self.request) or "shutdown"
        self.request.write(
            b"event: drain\n" + _field(b"data", reason) + b"retry: %d\n\n" % int(self.retry)
        )
        self.close()

    def _gone(self, result: Any) -> None:
        # The response finished (by close()) or the client left.
        if not self.closed:
            self.closed = True
            self._end()

    def _end(self) -> None:
        # (A caller may have cancelled done already.)
        if not self.done.called:
            self.done.callback(None)

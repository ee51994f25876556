"""
One request and its response on graceful's native HTTP/1.1 channel
(L{graceful.http.native}): the request's parsed fields, and the response
written straight to the connection.

The head of a response waits for the first piece of its body, so that a
response whose body comes in one message leaves in one write (one system
call: the channel writes at once when the transport's buffer is empty).
A response without C{Content-Length} is chunked on HTTP/1.1 and ends with
the connection on HTTP/1.0.

What reads the request (an app's glue, such as L{graceful.asgi.native}) is
the exchange's C{sink}: it hears of the body as it arrives, of the end of
the body, of the client going away and of the connection's write buffer
filling and draining.  The exchange also answers what twisted.web's access
log formatter asks of a request, so the site logs it the same way.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Callable, Protocol, Sequence

#: Statuses without a body (RFC 9110 6.4.1).
_NO_BODY = frozenset({204, 304})


def _status_lines() -> dict[int, bytes]:
    return {
        int(status): b"HTTP/1.1 %d %s\r\n" % (int(status), status.phrase.encode("latin-1"))
        for status in HTTPStatus
    }


_STATUS_LINES = _status_lines()


class _Date:
    """
    The C{Date} header, formatted once a second rather than per response.
    """

    second = -1
    line = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
        return self.line


date_line = _Date()


class ExchangeSink(Protocol):
    """
    What reads a request and writes its response through an L{Exchange}.
    """

    def body(self, data: bytes) -> None:
        "A piece of the request body arrived."

    def body_end(self) -> None:
        "The whole request body arrived."

    def gone(self) -> None:
        "The client went away before the response ended."

    def writable(self, ready: bool) -> None:
        "The connection's write buffer went over (C{False}) or under its mark."


class ExchangeChannel(Protocol):
    "What an exchange needs of its channel (L{graceful.http.native.NativeChannel})."

    site: Any
    peer: Any

    def send(self, data: bytes) -> None: ...

    def answered(self, exchange: Exchange, cut: bool = False) -> None: ...

    def pause_reading(self, why: object) -> None: ...

    def resume_reading(self, why: object) -> None: ...


class Exchange:
    """
    A request received on a L{NativeChannel}, and its response.

    @ivar method: the request method, as sent.
    @ivar uri: the request target, as sent (path and query).
    @ivar clientproto: C{b"HTTP/1.1"} or C{b"HTTP/1.0"}.
    @ivar headers: C{(lowercased name, value)} in the order they came.
    @ivar keep_alive: the connection stays open after this response.
    @ivar code: the response status, once started.
    @ivar sentLength: bytes of response body written.
    @ivar sink: what reads this request (its app's glue).
    @ivar forwarded: what a trusted proxy said of the request
        (L{graceful.http.proxy.Forwarded}), or L{None}.
    @ivar on_finish: called once when the response ends or the connection
        is lost before (a concurrency limit's place), or L{None}.
    """

    __slots__ = (
        "channel", "method", "uri", "clientproto", "headers", "keep_alive", "code",
        "sentLength", "sink", "started", "finished", "body_in", "_chunked", "_head",
        "_body_allowed", "_pending", "dispatched", "_trailers", "forwarded", "client",
        "on_finish",
    )

    def __init__(self, channel: ExchangeChannel, method: bytes, uri: bytes, version: bytes,
                 headers: list[tuple[bytes, bytes]], keep_alive: bool) -> None:
        self.channel = channel
        self.method = method
        self.uri = uri
        self.clientproto = version
        self.headers = headers
        self.keep_alive = keep_alive
        self.code = 0
        self.sentLength = 0
        self.sink: ExchangeSink | None = None
        self.started = False
        self.finished = False
        #: The whole request body was received.
        self.body_in = False
        #: Handed to the app (a pipelined request waits for the one before).
        self.dispatched = False
        self._chunked = False
        self._head: bytes | None = None
        self._body_allowed = True
        #: Body received before the request was dispatched.
        self._pending: list[bytes] | None = None
        self._trailers = False
        self.forwarded: Any = None
        self.on_finish: Callable[[], None] | None = None

    # -- behind a proxy -------------------------------------------------------

    def forward(self, said: Any, client: Any) -> None:
        """
        What a trusted proxy said (L{graceful.http.proxy.Forwarded}) is the
        request's own: its client (at address C{client}, if said), its
        scheme and its C{Host} (replaced where it stands, as twisted.web's
        path replaces it; the C{X-Forwarded-*} headers stay).
        """
        self.forwarded = said
        self.client = client
        if said.host is not None:
            host = said.host.encode("latin-1")
            headers = [(key, host if key == b"host" else value) for key, value in self.headers]
            if (b"host", host) not in headers:
                headers.append((b"host", host))
            self.headers = headers

    # -- what the access log formatter reads ----------------------------------

    def getClientAddress(self) -> Any:
        if self.forwarded is not None and self.client is not None:
            return self.client
        return self.channel.peer

    def getHeader(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    # -- the request body -----------------------------------------------------

    def received(self, data: bytes) -> None:
        sink = self.sink
        if self.finished:
            return  # answered already: the rest of the body is read and dropped
        if sink is None:
            if self._pending is None:
                self._pending = []
            self._pending.append(data)
        else:
            sink.body(data)

    def received_all(self) -> None:
        self.body_in = True
        if self.sink is not None and not self.finished:
            self.sink.body_end()

    def attach(self, sink: ExchangeSink) -> None:
        """
        C{sink} reads this request from now on; what already came is given
        to it at once.
        """
        self.sink = sink
        pending, self._pending = self._pending, None
        for data in pending or ():
            sink.body(data)
        if self.body_in:
            sink.body_end()

    def pause_reading(self) -> None:
        self.channel.pause_reading(self)

    def resume_reading(self) -> None:
        self.channel.resume_reading(self)

    # -- the response ---------------------------------------------------------

    def start(self, status: int, headers: Sequence[tuple[bytes, bytes]],
              trailers: bool = False) -> None:
        """
        The response's status and headers; they leave with its first body.
        """
        self.started = True
        self.code = status
        line = _STATUS_LINES.get(status) or b"HTTP/1.1 %d \r\n" % status
        parts = [line]
        length = False
        closing = False
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                length = True
            elif lower == b"connection" and b"close" in value.lower():
                closing = True
            elif lower == b"transfer-encoding":
                continue  # the channel frames the body itself
            parts.append(name + b": " + value + b"\r\n")
        self._body_allowed = not (status in _NO_BODY or status < 200 or self.method == b"HEAD")
        if self._body_allowed and not length:
            if self.clientproto == b"HTTP/1.1":
                self._chunked = True
                parts.append(b"transfer-encoding: chunked\r\n")
            else:
                self.keep_alive = False  # the end of the body is the end of the connection
        self._trailers = trailers and self._chunked
        if closing or self.channel.site.draining:
            self.keep_alive = False
        if not self.keep_alive:
            if not closing:
                parts.append(b"connection: close\r\n")
        elif self.clientproto == b"HTTP/1.0":
            parts.append(b"connection: keep-alive\r\n")
        parts.append(date_line())
        parts.append(b"\r\n")
        self._head = b"".join(parts)

    def write(self, data: bytes) -> None:
        """
        A piece of the response body.
        """
        if self.finished or not data:
            return
        if not self._body_allowed:
            data = b""
        else:
            self.sentLength += len(data)
            if self._chunked:
                data = b"%x\r\n%b\r\n" % (len(data), data)
        head, self._head = self._head, None
        self.channel.send(head + data if head is not None else data)

    def end(self, trailers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        """
        The response is complete (with its trailers, if it announced them).
        """
        if self.finished:
            return
        last = b""
        if self._chunked:
            last = b"0\r\n" + b"".join(
                name + b": " + value + b"\r\n" for name, value in trailers
            ) + b"\r\n"
        head, self._head = self._head, None
        data = head + last if head is not None else last
        if data:
            self.channel.send(data)
        self.finished = True
        if self.on_finish is not None:
            self._finish()
        self.channel.answered(self)

    def cut(self) -> None:
        """
        The response cannot be completed: what was written reaches the
        client, then the connection closes (no last chunk, or fewer bytes
        than its C{Content-Length}, tell the client it was cut short).
        """
        if self.finished:
            return
        head, self._head = self._head, None
        if head is not None:
            self.channel.send(head)
        self.finished = True
        self.keep_alive = False
        if self.on_finish is not None:
            self._finish()
        self.channel.answered(self, cut=True)

    def lost(self) -> None:
        """
        The connection was lost before the response ended.
        """
        if not self.finished:
            self.finished = True
            if self.on_finish is not None:
                self._finish()
            if self.sink is not None:
                self.sink.gone()

    def _finish(self) -> None:
        on_finish, self.on_finish = self.on_finish, None
        if on_finish is not None:
            on_finish()

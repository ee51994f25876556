# -*- test-case-name: tests.unit.http.test_native -*-
"""
graceful's native HTTP/1.1 channel: requests parsed by httptools (llhttp)
and responses written straight to the transport, for servers whose app is
an ASGI or WSGI callable.

twisted.web's line parser and its Request cost about 25 microseconds of CPU
per request, more than a whole request costs uvicorn (py-spy, hello world
under wrk -c32); this channel parses with llhttp, builds one small
L{Exchange} per request from the parsed fields, and writes a response's
head with its first body in one write, sent at once when the transport's
buffer is empty rather than on the reactor's next pass (5.5 microseconds
a request in the prototype).

It is a channel of the same L{DrainingSite} as twisted.web's: counted by the
site, drained the same way (a response not yet started carries
C{Connection: close} and closes the connection; a connection that is idle,
or becomes idle after a response begun before the drain, gets the site's
C{idle_grace} for one more request, checked for unread bytes before it is
closed), and logged by the site's access log.

What it does not serve itself it hands, with the bytes of the request, to a
twisted.web channel of the same site, which serves the rest of the
connection: a WebSocket upgrade, and the paths of the site that are not the
app's (the admin pages, the health page).

It refuses what request smuggling needs, as llhttp does and more: both
C{Content-Length} and C{Transfer-Encoding}, differing or repeated
C{Content-Length}s, a C{Transfer-Encoding} other than C{chunked} alone or on
HTTP/1.0, obs-fold, bad chunk sizes, a bare CR, NUL, an HTTP/1.1 request
without exactly one C{Host} (400); a header line or header block over
L{MAX_HEADER_BYTES} (431), a request target over L{MAX_TARGET} (414).  Each
is answered with C{Connection: close}, then the connection closes.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol as Interface

import httptools
from twisted.internet import abstract
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from .exchange import Exchange
from .native_relay import Relay
from .site import PENDING_RECHECK, unread_bytes

#: Bytes of header lines a request may send (twisted.web's totalHeadersSize).
MAX_HEADER_BYTES = 16384
#: Header lines a request may send (twisted.web's maxHeaders).
MAX_HEADERS = 500
#: Bytes of request target (twisted.web's line limit).
MAX_TARGET = 16384

_REFUSALS = {
    400: b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    414: b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    431: (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-length: 0\r\nconnection: close\r\n\r\n"
    ),
}

#: A closed channel's parser, which calls back nothing.  The parser and its
#: channel point at each other: left so, every connection waited for the
#: cyclic collector (gen0 passes 622 -> 171 in a Connection: close loop; raw
#: ASGI close, wrk side by side with uvicorn[standard]: 1.03x -> 0.96x).
_NO_PARSER = httptools.HttpRequestParser(object())


class _Refused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


#: What the channel asks of the app's glue: serve this exchange (attach a
#: sink to it and answer it), or C{None} when a twisted.web channel serves
#: the request.
Dispatch = Callable[[Exchange], None]


class NativeSiteView(Interface):
    "What the channel needs of its site (L{graceful.http.native_site.NativeSite})."

    draining: bool
    idle_grace: float
    timeOut: float | None
    keep_alive: float | None
    reactor: Any
    #: Schedules a channel's keep-alive check (L{timer_for} its reactor).
    call_later: Callable[[float, Callable[[], None]], Any]
    requests_served: int
    resets: int

    def dispatch_for(self, target: bytes) -> Dispatch | None: ...

    def twisted_channel(self, addr: Any) -> Any: ...

    def channel_opened(self, channel: Any) -> None: ...

    def channel_closed(self, channel: Any) -> None: ...

    def log(self, request: Any) -> None: ...


class _Draining:
    """
    How a native channel drains, as twisted.web's channels of the site do
    (L{graceful.http.site.DrainableChannel}).
    """

    site: NativeSiteView
    transport: Any
    requests: list[Exchange]
    _in_message: bool
    _closing: bool
    _grace: IDelayedCall | None = None
    #: An IDelayedCall, or an asyncio TimerHandle (L{timer_for}).
    _keep_alive_call: Any = None
    _idle_since = 0.0
    #: Bytes of requests received in pieces (a head over several reads, a
    #: body): what tells a silent client from a slow one.
    _received = 0
    _progress: tuple[float, int] | None = None
    _progress_at = 0.0
    _reading_paused: bool
    #: Whether the transport is the reactor's TCP or UNIX one (see send_now).
    _direct: bool

    def is_idle(self) -> bool:
        """
        No request in hand and no byte of the next one received.
        """
        return not self.requests and not self._in_message

    def drain(self) -> None:
        """
        Answer what is in hand with C{Connection: close}; an idle connection
        gets the site's C{idle_grace} to send a request first.
        """
        if self.is_idle():
            self._start_grace(self.site.idle_grace)
            return
        for exchange in self.requests:
            if not exchange.started:
                exchange.keep_alive = False

    def _start_grace(self, seconds: float) -> None:
        self._cancel_grace()
        self._grace = self.site.reactor.callLater(seconds, self._grace_over)

    def _cancel_grace(self) -> None:
        grace, self._grace = self._grace, None
        if grace is not None and grace.active():
            grace.cancel()

    def _grace_over(self) -> None:
        self._grace = None
        if not self.is_idle():
            # Part of a request came in: it gets the ordinary time to
            # arrive, and is answered with Connection: close.
            self._start_grace(float(self.site.timeOut or 0))
            return
        if unread_bytes(self.transport):
            # A request reached the kernel and not yet us: read and answer it.
            self._start_grace(PENDING_RECHECK)
            return
        self._closing = True
        self._lose_connection()

    def _lose_connection(self) -> None:
        # As twisted.web's channel does: under TLS the transport holds its
        # close (close_notify, then FIN) until no producer is registered.
        transport: Any = self.transport
        if transport is None:
            return
        transport.unregisterProducer()
        if self._direct and not transport.disconnecting and not _buffered(transport):
            # All written already (send_now): close on the loop's next pass,
            # rather than through loseConnection's round of addWriter, a
            # poll, doWrite and removeWriter (~10% of a raw ASGI request's
            # CPU with Connection: close, py-spy).
            transport.disconnecting = True
            transport.stopReading()
            self.site.call_later(0, lambda: _close_written(transport))
            return
        transport.loseConnection()

    def _wait_keep_alive(self) -> None:
        # Idle between requests: the site's keep_alive for the next one
        # (uvicorn's timeout_keep_alive).  One timer a connection, checked
        # when it fires, rather than one made and cancelled per request:
        # that cost ~4 us of a 26 us request on uvloop (and its p99 went
        # from 2 to 14 ms).
        keep_alive = self.site.keep_alive
        if not keep_alive:
            return
        self._idle_since = self.site.reactor.seconds()
        if self._keep_alive_call is None:
            self._keep_alive_call = self.site.call_later(keep_alive, self._keep_alive_over)

    def _keep_alive_over(self) -> None:
        self._keep_alive_call = None
        keep_alive = self.site.keep_alive
        if self.site.draining or not keep_alive or self._closing:
            return  # the drain's grace governs
        if self._in_message:
            self._check_receiving(keep_alive)
            return
        if not self.is_idle():
            return  # being answered: the response's end starts the wait again
        left = self._idle_since + keep_alive - self.site.reactor.seconds()
        if left > 0.001:
            self._keep_alive_call = self.site.call_later(left, self._keep_alive_over)
            return
        # As the drain grace ends: a request unread in the kernel is still
        # answered, and a silent connection gets a quiet FIN.
        self._start_grace(0)

    def _check_receiving(self, every: float) -> None:
        # A request is being received: as on twisted.web's channel, it gets
        # the site's timeOut (60 s) of silence, checked every keep_alive by
        # what arrived since, rather than by a timer moved on every read
        # (so up to keep_alive more).  Silence while the app holds reading
        # paused is not the client's.
        timeout = self.site.timeOut
        if not timeout:
            return
        now = self.site.reactor.seconds()
        progress = (self._idle_since, self._received)
        if progress != self._progress or self._reading_paused:
            self._progress, self._progress_at = progress, now
        elif now - self._progress_at >= timeout:
            self._closing = True
            self.transport.loseConnection()
            return
        self._keep_alive_call = self.site.call_later(every, self._keep_alive_over)

    def _cancel_keep_alive(self) -> None:
        call, self._keep_alive_call = self._keep_alive_call, None
        if call is not None:
            # Never one that ran: it clears _keep_alive_call first.
            call.cancel()

    def abort(self) -> None:
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


def timer_for(reactor: Any) -> Callable[[float, Callable[[], None]], Any]:
    """
    How a channel schedules its keep-alive check, once a connection: on the
    asyncio loop itself where the reactor runs on one (made and cancelled in
    1.9 us on uvloop against 4.7 through the reactor's C{callLater}, which
    keeps its own heap and reschedules the loop's timer), else C{callLater}.
    """
    loop = getattr(reactor, "_asyncioEventloop", None)
    return loop.call_later if loop is not None else reactor.callLater


def _buffered(transport: Any) -> bool:
    return bool(transport.dataBuffer or transport._tempDataBuffer)


def _close_written(transport: Any) -> None:
    """
    Close a reactor transport whose buffer was empty when its protocol
    lost it, as its C{doWrite} would: an orderly close (shutdown, FIN),
    unless something wrote meanwhile, which is then flushed first.
    """
    if not transport.connected:
        return
    if _buffered(transport):
        transport.startWriting()  # doWrite flushes, then closes (disconnecting)
        return
    transport.connectionLost(connectionDone)


def send_now(transport: Any, data: bytes, direct: bool) -> None:
    """
    Write C{data} to a reactor's TCP or UNIX transport (C{direct}) with one
    send(2) when its buffer is empty, rather than on the reactor's next
    pass; what the socket does not take, and every other transport's
    writes, go through C{write()}.
    """
    if direct and not _buffered(transport) and transport.connected and not transport.disconnecting:
        try:
            sent = transport.socket.send(data)
        except OSError:  # EAGAIN; or an error the transport's own write meets and reports
            sent = 0
        if sent == len(data):
            return
        data = data[sent:]
    transport.write(data)


def check_head(headers: list[tuple[bytes, bytes]], version: bytes) -> tuple[bool, bool, bool]:
    """
    Whether a request with C{headers} has a chunked body, whether it asks
    for an upgrade, and whether it expects a C{100 Continue}.

    @raise _Refused: it has no single C{Host} on HTTP/1.1, or a
        C{Transfer-Encoding} other than C{chunked} alone on HTTP/1.1
        (llhttp lets C{gzip, chunked} through, and HTTP/1.0 with it;
        neither is framed the way every proxy in front reads it).
    """
    hosts = 0
    chunked = upgrade = expect = False
    for name, value in headers:
        if name == b"host":
            hosts += 1
        elif name == b"transfer-encoding":
            if value.strip().lower() != b"chunked" or version != b"HTTP/1.1":
                raise _Refused(400)
            chunked = True
        elif name == b"upgrade":
            upgrade = True
        elif name == b"expect":
            expect = value.lower() == b"100-continue" and version == b"HTTP/1.1"
    if version == b"HTTP/1.1" and hosts != 1:
        raise _Refused(400)
    return chunked, upgrade, expect


@implementer(IPushProducer)
class NativeChannel(_Draining, Protocol):
    """
    One HTTP/1.1 connection, parsed by httptools.

    @ivar requests: the exchanges received and not yet answered, oldest
        first; only the first is being answered (pipelined ones wait).
    @ivar kind: what L{DrainingSite.connections_by_kind} counts it as.
    @ivar secure: it came over TLS (its subclass says so, once a connection).
    """

    kind = "http/1.1"
    secure = False
    peer: Any = None

    def __init__(self, site: NativeSiteView) -> None:
        self.site = site
        self.requests: list[Exchange] = []
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._parsing: Exchange | None = None
        #: Bytes received while no request's headers were complete.
        self._head_bytes = 0
        self._in_message = False
        self._reading_paused_by: set[object] = set()
        self._reading_paused = False
        self._direct = False
        self._closing = False
        #: The twisted.web channel that serves the rest of the connection.
        self._relay: Relay | None = None
        self._chunked_in = False
        self._body_writable = True
        #: The status a callback refused the request with.
        self._refusal = 0

    # -- the connection -------------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        self.peer = transport.getPeer()
        # A TCP or UNIX transport of the reactor: written to at once when
        # its buffer is empty (TLS and test transports go through write()).
        self._direct = isinstance(transport, abstract.FileDescriptor) and hasattr(
            transport, "socket"
        )
        transport.registerProducer(self, True)
        self.site.channel_opened(self)
        if self.site.draining:
            self.drain()
        else:
            self._wait_keep_alive()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._parser = _NO_PARSER  # no cycle left for the collector
        self._cancel_grace()
        self._cancel_keep_alive()
        if self.requests:
            self.site.resets += 1  # lost with a request unanswered
        for exchange in self.requests:
            exchange.lost()
        self.requests = []
        if self._relay is not None:
            self._relay.channel.connectionLost(reason)
            return
        self.site.channel_closed(self)

    def dataReceived(self, data: bytes) -> None:
        relay = self._relay
        if relay is not None and not relay.parsing:
            relay.forward(data)
            return
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            # Only a request handed to twisted.web gets here (the channel
            # hands every upgrade over): the rest is the new protocol's.
            if self._relay is not None:
                self._relay.parsing = False
                self._relay.forward(data[upgrade.args[0]:])
            return
        except httptools.HttpParserError:
            # httptools hides what a callback raised behind its own error.
            self._refuse(self._refusal or 400)
            return
        if self._relay is not None and not self._in_message:
            # A message boundary: what comes next is passed on as it is.
            self._relay.parsing = False
        if self._parsing is None and self._in_message and not self._closing:
            self._head_bytes += len(data)
            self._received += len(data)
            if self._head_bytes > MAX_HEADER_BYTES + MAX_TARGET:
                self._refuse(431)

    def _refuse(self, status: int) -> None:
        self._closing = True
        if self._relay is not None:
            self._relay.channel.loseConnection()
            return
        if not self.requests or not self.requests[0].started:
            self.send(_REFUSALS[status])
        self._lose_connection()

    def send(self, data: bytes) -> None:
        """
        Write C{data}: at once if the transport's buffer is empty.
        """
        if self.transport is not None:
            send_now(self.transport, data, self._direct)

    # -- httptools' callbacks -------------------------------------------------

    def on_message_begin(self) -> None:
        self._in_message = True
        self._url = b""
        self._headers = []
        self._header_bytes = 0
        self._chunked_in = False
        self._cancel_grace()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > MAX_TARGET:
            self._refusal = 414
            raise _Refused(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        headers = self._headers
        if self._header_bytes > MAX_HEADER_BYTES or len(headers) >= MAX_HEADERS:
            self._refusal = 431
            raise _Refused(431)
        headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        version = b"HTTP/1.1" if parser.get_http_version() == "1.1" else b"HTTP/1.0"
        headers = self._headers
        self._chunked_in, upgrade, expect = check_head(headers, version)
        self._head_bytes = 0
        method = parser.get_method()
        dispatch = None if upgrade or self._relay else self.site.dispatch_for(self._url)
        if dispatch is None:
            self._hand_over().head(method, self._url, version, headers, self._chunked_in)
            return
        self.site.requests_served += 1
        exchange = Exchange(self, method, self._url, version, headers, parser.should_keep_alive())
        self._parsing = exchange
        self.requests.append(exchange)
        if len(self.requests) == 1:
            if expect:
                # As twisted.web does: curl waits a second for it otherwise.
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            exchange.dispatched = True
            dispatch(exchange)
        else:
            # Pipelined: it waits for the responses before it, unread meanwhile.
            self.pause_reading(self)

    def on_body(self, body: bytes) -> None:
        if self._relay is not None:
            self._relay.body(body)
            return
        self._received += len(body)
        exchange = self._parsing
        if exchange is not None:
            exchange.received(body)

    def on_message_complete(self) -> None:
        self._in_message = False
        self._head_bytes = 0
        if self._relay is not None:
            self._relay.message_complete()
            return
        exchange, self._parsing = self._parsing, None
        if exchange is not None:
            exchange.received_all()
            if exchange.finished and self.requests and self.requests[0] is exchange:
                # Answered before its body all came: done with it now.
                self._next(exchange)

    # -- responses ------------------------------------------------------------

    def answered(self, exchange: Exchange, cut: bool = False) -> None:
        """
        C{exchange}'s response is written whole (or cut short).
        """
        self.site.log(exchange)
        if cut or not exchange.keep_alive:
            self._closing = True
            if self.requests and self.requests[0] is exchange:
                self.requests.pop(0)
            self._lose_connection()
            return
        if not exchange.body_in:
            # The rest of its body is read (and dropped) before the next
            # request is parsed; reading may have been paused for the app.
            self._reading_paused_by.discard(exchange)
            self._update_reading()
            return
        self._next(exchange)

    def _next(self, exchange: Exchange) -> None:
        requests = self.requests
        if requests and requests[0] is exchange:
            requests.pop(0)
        self._reading_paused_by.discard(exchange)
        if requests:
            following = requests[0]
            following.dispatched = True
            self._reading_paused_by.discard(self)
            self._update_reading()
            dispatch = self.site.dispatch_for(following.uri)
            if dispatch is not None:
                dispatch(following)
            return
        self._update_reading()
        if self._relay is not None:
            self._relay.hold(False)
            return
        if self.site.draining:
            # Its response began before the drain: the connection gets the
            # grace for one more request, answered with Connection: close.
            self._start_grace(self.site.idle_grace)
            return
        self._wait_keep_alive()

    # -- reading --------------------------------------------------------------

    def pause_reading(self, why: object) -> None:
        self._reading_paused_by.add(why)
        self._update_reading()

    def resume_reading(self, why: object) -> None:
        self._reading_paused_by.discard(why)
        self._update_reading()

    def _update_reading(self) -> None:
        # Only on a change: most requests never pause reading, and each
        # resumeProducing() is a trip to the reactor's reader set.
        paused = bool(self._reading_paused_by)
        if paused == self._reading_paused:
            return
        transport: Any = self.transport
        if transport is None or self._relay is not None:
            return
        self._reading_paused = paused
        if paused:
            transport.pauseProducing()
        else:
            transport.resumeProducing()

    # IPushProducer, for the transport: its write buffer went over (under)
    # its high-water mark.

    def pauseProducing(self) -> None:
        self._body_writable = False
        if self.requests and self.requests[0].sink is not None:
            self.requests[0].sink.writable(False)

    def resumeProducing(self) -> None:
        self._body_writable = True
        if self.requests and self.requests[0].sink is not None:
            self.requests[0].sink.writable(True)

    def stopProducing(self) -> None:
        self.resumeProducing()

    @property
    def can_write(self) -> bool:
        """
        The transport's write buffer is under its high-water mark.
        """
        return self._body_writable

    # -- handing over to twisted.web ------------------------------------------

    def _hand_over(self) -> Relay:
        """
        A twisted.web channel of the site serves this request and the rest
        of the connection, once the requests before it are answered.
        """
        transport: Any = self.transport
        transport.unregisterProducer()
        # Reading is the twisted.web channel's to pause from now on.
        self._reading_paused_by.clear()
        self._reading_paused = False
        transport.resumeProducing()
        self._cancel_grace()
        # The connection's idle time is the twisted.web channel's (or its
        # WebSocket's) to govern now.
        self._cancel_keep_alive()
        relay = self._relay = Relay(self.site.twisted_channel(self.peer), transport)
        relay.hold(bool(self.requests))
        # It is tracked now, so the site never sees a moment without either.
        self.site.channel_closed(self)
        return relay

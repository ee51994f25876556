# -*- test-case-name: tests.unit.http.test_site -*-
"""
A twisted.web Site that can be drained.

twisted.web has no notion of draining, so the channel class here adds it:
once the site drains, every response still to be written carries
C{Connection: close}, every connection closes after its response, and
connections with no request in hand get a grace to send one (which is then
answered with C{Connection: close}) before they are closed.

Closing an idle keep-alive connection races the client's next request: a
request already sent when the server's FIN arrives is lost (the client sees a
reset, a broken pipe or an empty answer), and a client that does not look
for the FIN before reusing the connection (a plain C{http.client}) loses any
request it sends after the close.  Answering that request with
C{Connection: close} loses nothing, so at a hand-over, where a successor
serves new connections, idle connections are kept open for their next
request up to L{HANDOVER_IDLE_GRACE} (and closed with a FIN, before
C{drain_timeout} would reset them, if still silent).  Measured with
benchmarks/keepalive_reuse.py (benchmarks/RESULTS.md), POSTs with pauses of
0.2-2 s over 10 restarts: closing idle connections at once lost 61 of 172
plain clients' requests, a 1 s grace 18 of 178, 5 s or waiting for the next
request none; with pauses up to 8 s, 5 s lost 5 of 49 and waiting none.
Clients that check before reuse (urllib3, requests) lost none there, but
every close of an idle connection is a chance of the race: with 32 such
clients and pauses of 0.01-0.3 s, closing at once lost 6 of 4,637, waiting
none.  The price: an old process lingers while a client keeps a silent
connection, up to that cap.  At a plain shutdown nobody answers the next
connection anyway, so the short L{IDLE_GRACE} applies.

Before an idle connection is closed, its socket is checked for bytes the
reactor has not read yet: a request that reached the kernel is read and
answered, where closing would have reset it.  (A half-close cannot do that:
after its FIN the server can no longer answer.)

A response whose headers went out before the drain began cannot say
C{Connection: close} any more, and its client, as browsers, connection pools
and proxies do, sends its next request the moment the response ends.
Closing after such a response lost that request: 53 in 16 s with 4 such
clients per route and 5 restarts, on every route whose response is written
in more than one step (chunked, streamed, or WSGI).  Such a connection is
therefore left open when its response ends and treated as idle from then
on: it gets the grace for one more request, answered with C{Connection:
close}.

With h2 installed, a TLS connection that negotiates HTTP/2 becomes an HTTP/2
connection (L{graceful.http.h2}), tracked and drained (with GOAWAY) alike.
"""

from __future__ import annotations

import random
import socket
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IAddress, IProtocol, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request, combinedLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Site

from .._logging import NamedLogger
from .h2 import NegotiatingFactory
from .response_stats import ResponseStats
from .streams import StreamRegistry
from .websocket import TakenConnection, UpgradeDrain, taken_over_by

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport

#: Seconds an idle keep-alive connection may take to send its next request
#: once a shutdown (no successor) starts draining; it is closed after that.
IDLE_GRACE = 1.0

#: Seconds an idle keep-alive connection is kept open at a hand-over, waiting
#: for its next request (answered with C{Connection: close}); it is closed,
#: with a FIN, if still silent then.  Long enough for the pauses of clients
#: that keep a connection between requests, short enough that an old process
#: does not linger long for a connection that will never be used again.
HANDOVER_IDLE_GRACE = 10.0

#: Idle connections are closed at least this many seconds before
#: C{drain_timeout}, whose abort would reset them.
IDLE_CLOSE_MARGIN = 1.0

#: Seconds between checks when an idle connection about to be closed has
#: unread bytes: the reactor reads them meanwhile.
PENDING_RECHECK = 0.05


#: What answers a request the channel refuses before it reaches the site:
#: the connection closes after it, so say so, and that no body follows.
_REFUSAL = b"HTTP/1.1 %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BAD_REQUEST = b"400 Bad Request"
HEADERS_TOO_LARGE = b"431 Request Header Fields Too Large"
URI_TOO_LONG = b"414 URI Too Long"


def handover_idle_grace(drain_timeout: float) -> float:
    """
    The grace idle connections get when a successor takes over: at most
    L{HANDOVER_IDLE_GRACE}, and over before C{drain_timeout} aborts them.
    """
    return max(0.0, min(HANDOVER_IDLE_GRACE, drain_timeout - IDLE_CLOSE_MARGIN))


def unread_bytes(transport: object) -> bool:
    """
    Whether the kernel holds bytes from the peer that the reactor has not
    read yet, on C{transport}'s socket (under TLS, the TCP transport's).
    Closing a socket with unread bytes sends a reset, not a FIN.
    """
    for _ in range(4):  # TCP, TLS over TCP, a wrapper or two
        if transport is None:
            return False
        get_handle = getattr(transport, "getHandle", None)
        handle = get_handle() if get_handle is not None else None
        if isinstance(handle, socket.socket):
            try:
                return bool(handle.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
            except OSError:  # nothing to read (EAGAIN), or already broken
                return False
        transport = getattr(transport, "transport", None)
    return False


_check_persistence = HTTPChannel.checkPersistence


def _first_write_into(transport: object, into: list[bytes]) -> Callable[[], None] | None:
    """
    Keep the first bytes written to C{transport} in C{into} until the
    returned callable puts its C{write} back; C{None} if it cannot be.
    """
    own = vars(transport).get("write") if hasattr(transport, "__dict__") else None
    write = getattr(transport, "write", None)
    if write is None or not hasattr(transport, "__dict__"):
        return None

    def first(data: bytes) -> None:
        if not into:
            into.append(bytes(data[:32]))
        write(data)

    setattr(transport, "write", first)

    def restore() -> None:
        if own is None:
            vars(transport).pop("write", None)
        else:
            setattr(transport, "write", own)

    return restore


def _status_line(answer: list[bytes]) -> int | None:
    """
    The status of an HTTP/1.x response that starts with C{answer[0]}.
    """
    if not answer or not answer[0].startswith(b"HTTP/1."):
        return None
    try:
        return int(answer[0][9:12])
    except ValueError:
        return None


def _ignore(data: bytes) -> None:
    pass


def _nothing() -> None:
    pass


class Connection(Protocol):
    """
    What a L{DrainingSite} tracks of each connection.

    @ivar kind: what the connection speaks (C{"http/1.1"}, C{"h2"}).
    """

    kind: str

    @property
    def requests(self) -> Sequence[object]:
        """
        The requests received and not yet answered.
        """

    def drain(self) -> None: ...

    def abort(self) -> None: ...


class DrainableChannel(HTTPChannel):
    """
    An HTTP/1.1 channel that knows whether its site is draining.

    It also refuses, as h11 and nginx do, what twisted.web lets through or
    drops without a word: an HTTP/1.1 request without exactly one C{Host}
    (400), a header line or header block over C{MAX_LENGTH},
    C{totalHeadersSize} or C{maxHeaders} (431), and a request line over
    C{MAX_LENGTH} (414); each answered with C{Connection: close}, then closed.
    """

    site: DrainingSite
    #: What L{DrainingSite.connections_by_kind} counts this connection as.
    kind = "http/1.1"
    _host: IAddress | None = None
    #: Idle between two requests, on the site's C{keep_alive} timeout rather
    #: than C{timeOut} (which a request being received gets).
    _keeping_alive = False

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channel_opened(self)
        if self.site.draining:
            self.drain()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.requests:
            self.site.resets += 1  # lost with a request unanswered
        super().connectionLost(reason)
        self.site.channel_closed(self)

    def dataReceived(self, data: bytes) -> None:
        if self._keeping_alive:
            # The next request began: it gets the ordinary time to arrive.
            self._keeping_alive = False
            self.timeOut = self.site.timeOut  # type: ignore[assignment]
        super().dataReceived(data)

    def requestDone(self, request: Request) -> None:
        keep_alive = self.site.keep_alive
        if keep_alive and self.persistent and not self.site.draining:
            # Wait keep_alive for the next request: twisted.web restores the
            # saved timeout in requestDone, so it starts the timer with ours
            # at once.  (Setting it after, a timer made sooner, cost a search
            # of the reactor's timer heap per request: +5 us of 23 in
            # process, and an ASGI request on the asyncio reactor went from
            # 68 to 254 us.)  A next request already buffered switches back
            # in dataReceived; a drain that starts meanwhile gives its own
            # grace instead.
            self._keeping_alive = True
            self._savedTimeOut = keep_alive  # type: ignore[assignment]
        super().requestDone(request)

    def getHost(self) -> IAddress:
        # Every Request asks in its __init__, and each answer was a
        # getsockname() call; a connection's own address does not change.
        host = self._host
        if host is None:
            host = self._host = super().getHost()
        return host

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        # Called once per request, when its headers are in: where the site
        # counts requests too, so the request path has one override, not two.
        site = self.site
        site.requests_served += 1
        if site.draining:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return _check_persistence(self, request, version)

    def allHeadersReceived(self) -> None:
        # RFC 9112 3.2: an HTTP/1.1 request without exactly one Host is a
        # 400, as h11 and nginx answer; twisted.web would serve it.  Checked
        # here, before a request factory may start rendering (as ASGI's does
        # for a request with a body) and before a 100 Continue goes out.
        hosts = self.requests[-1].requestHeaders.getRawHeaders(b"host")
        if (hosts is None or len(hosts) != 1) and self._version == b"HTTP/1.1":
            self._refuse(BAD_REQUEST)
            return
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        # A request is rendered in here; a resource such as autobahn's
        # WebSocketResource may take the transport away (setting ours to
        # None) and give it to a protocol of its own.  The site must go on
        # tracking that connection, which this channel will never hear of
        # again.
        transport: ITransport | None = self.transport
        answer: list[bytes] = []
        restore = None
        if transport is not None and self.requests[-1].requestHeaders.hasHeader(b"upgrade"):
            # What the taking protocol answers during the render (autobahn's
            # 101, or its refusal) is the status of the access-log line.
            restore = _first_write_into(transport, answer)
        super().allContentReceived()
        if restore is not None:
            restore()
        if transport is not None and self.transport is None:
            self.site.channel_taken(self, transport, _status_line(answer))

    def lineLengthExceeded(self, line: bytes) -> None:
        # twisted.web closes such a connection without a word.  A request
        # being received means its header lines were too long; else its
        # request line.
        self._refuse(HEADERS_TOO_LARGE if self.requests else URI_TOO_LONG)

    def _respondToBadRequestAndDisconnect(self) -> None:
        # twisted.web's answer to every bad request, including a header
        # block over totalHeadersSize or maxHeaders, which is a 431.
        too_large = (
            self._receivedHeaderSize > self.totalHeadersSize
            or self._receivedHeaderCount > self.maxHeaders
        )
        self._refuse(HEADERS_TOO_LARGE if too_large else BAD_REQUEST)

    def _refuse(self, status: bytes) -> None:
        """
        Answer C{status} to a request the site will not see, and close.
        """
        transport = self.transport
        if transport is None:
            return
        transport.write(_REFUSAL % status)
        # Nothing more of this connection reaches the site: the rest of a
        # refused request is not another one, and the refused one (whose
        # headers may all be in) is not rendered.
        self.dataReceived = _ignore  # type: ignore[method-assign]
        self.allContentReceived = _nothing  # type: ignore[method-assign]
        self.loseConnection()

    def is_idle(self) -> bool:
        """
        No request in hand and no byte of the next one received.
        """
        return not self.requests and not self._buffer and not self._dataBuffer

    def drain(self) -> None:
        """
        Finish what is in hand with C{Connection: close}; give an idle
        connection the site's C{idle_grace} to send a request, then close it.
        A response already on its way ends as it began, and its connection
        is idle from then on.
        """
        if not self.requests:
            # Idle, or the first bytes of a request (timeoutConnection tells
            # the two apart): such a request is still to be answered, which
            # refusing persistence now would have dropped unanswered.
            self.setTimeout(self.site.idle_grace)
            return
        head = self.requests[0]
        if head.startedWriting:
            # Its response went out without Connection: close, and the
            # client may send its next request the moment it ends; the
            # connection stays open for that one.  (Heard of here, not in
            # requestDone: nothing is added to every request's path.)
            head.notifyFinish().addCallbacks(self._response_ended, lambda _: None)
            return
        self.persistent = False
        for request in self.requests:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def _response_ended(self, _: object) -> None:
        """
        A response that began before the drain ended (the channel is done
        with it): the connection is idle now, unless its next request is
        already in, and gets the grace for one more request, which
        checkPersistence answers with C{Connection: close}.
        """
        if self.persistent and not self.requests:
            self.setTimeout(self.site.idle_grace_left())

    def timeoutConnection(self) -> None:
        if self.site.draining or self._keeping_alive:
            if not self.is_idle():
                # Part of a request came in: it gets the ordinary time to
                # arrive, and is answered with Connection: close.
                self.setTimeout(self.site.timeOut)
                return
            if unread_bytes(self.transport):
                # A request reached the kernel and not yet us: let the
                # reactor read it and answer it, rather than reset it.
                self.setTimeout(PENDING_RECHECK)
                return
            # The connection's grace (or keep-alive) ran out: close it
            # quietly (a FIN), no log line for every idle client.
            self.loseConnection()
            return
        super().timeoutConnection()

    def abort(self) -> None:
        if self.transport is not None:
            # ITransport lacks abortConnection, but both transports a site
            # gets (TCP, and TLS over it) have it.
            self.transport.abortConnection()  # type: ignore[attr-defined]


class DrainingSite(Site):
    """
    A Site that tracks its connections and requests and can be drained.

    @ivar server_name: the graceful server this site serves, for log lines.
    @ivar requests_served: requests received since the process started.
    @ivar responses: responses finished, of which C{server_errors} were 5xx.
    @ivar resets: connections lost with a request unanswered.
    @ivar stats: responses by status class, requests by duration.
    @ivar taken: connections a protocol took from their channel (autobahn's
        WebSockets), tracked until they are lost.
    @ivar streams: the requests that asked to hear of the drain.
    @ivar drain_reason: C{"restart"} or C{"shutdown"} once draining.
    @ivar idle_grace: seconds a draining site gives an idle connection to
        send its next request; L{drain} may set it.
    @ivar keep_alive: seconds an idle keep-alive connection is kept open
        between requests when not draining; L{None}: C{timeOut}, as
        twisted.web does.
    """

    # HTTPFactory's stub wants a factory of its _GenericHTTPChannelProtocol
    # wrapper; a Site's channel is any HTTPChannel, as here.
    protocol = DrainableChannel  # type: ignore[assignment]
    noisy = False
    _log = NamedLogger("graceful._drain.DrainingSite")

    def __init__(
        self,
        resource: IResource,
        *,
        server_name: str = "default",
        access_log: Callable[[str], None] | None = None,
        idle_grace: float = IDLE_GRACE,
        keep_alive: float | None = None,
        reactor: IReactorTime | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(resource, reactor=reactor)
        self.server_name = server_name
        self.channels: set[Connection] = set()
        self.requests_served = 0
        self.responses = self.server_errors = self.resets = 0
        #: Responses by status class and requests by duration.
        self.stats = ResponseStats()
        self.draining = False
        self.idle_grace = idle_grace
        self.keep_alive = keep_alive
        self._access_log = access_log
        self._drained: list[Deferred[None]] = []
        #: Connections a protocol took from their channel (WebSockets).
        self.taken: set[TakenConnection] = set()
        #: Requests that asked to hear of the drain (streams, long polls).
        self.streams = StreamRegistry()
        #: C{"restart"} or C{"shutdown"} once draining.
        self.drain_reason: str | None = None
        #: When idle connections must be closed by, if the drain has a timeout.
        self._idle_deadline: float | None = None
        self._upgrades = UpgradeDrain(self.reactor, rng or random.Random())

    def buildProtocol(self, addr: Any) -> IProtocol:  # type: ignore[override]
        # (The stubs' return type is the _GenericHTTPChannelProtocol wrapper.)
        channel = self.protocol()
        channel.factory = self
        channel.site = self
        channel.requestFactory = self.requestFactory
        # TimeoutMixin's stub says int where HTTPFactory's says float; both
        # are seconds to it.
        channel.timeOut = self.timeOut  # type: ignore[assignment]
        # As HTTPFactory.buildProtocol does: TimeoutMixin looks callLater up
        # on the instance, so the channel's timeouts use the site's reactor.
        channel.callLater = self.reactor.callLater  # type: ignore[method-assign, assignment]
        return channel

    def over_tls(self) -> NegotiatingFactory:
        """
        The factory for this site's TLS ports: with h2 installed, a
        connection that negotiates it by ALPN becomes an HTTP/2 connection
        on its first bytes.
        """
        return NegotiatingFactory(self)

    @property
    def in_flight(self) -> int:
        """
        Requests received and not yet answered.
        """
        return sum(len(channel.requests) for channel in self.channels)

    def getResourceFor(self, request: Request) -> IResource:
        # Every request (HTTP/1.1 and h2) passes here once it is in, before
        # it is rendered: its duration is counted from here to log().
        request._graceful_started = self.reactor.seconds()  # type: ignore[attr-defined]
        return super().getResourceFor(request)

    def log(self, request: Request) -> None:
        # Every finished response passes here: a canary restart compares
        # the generations' 5xx shares from these counts.
        self.responses += 1
        code = request.code
        if code >= 500:
            self.server_errors += 1
        started = getattr(request, "_graceful_started", None)
        self.stats.record(code, None if started is None else self.reactor.seconds() - started)
        if self._access_log is not None:
            self._access_log(combinedLogFormatter(self._logDateTime, request))

    def _log_upgrade(self, connection: TakenConnection) -> None:
        """
        The access-log line of an upgraded connection (a WebSocket), written
        when it closes: twisted.web never finishes such a request, so
        L{log} never sees it.  The combined format with the handshake's
        status (101), the bytes sent over the whole connection, and its
        duration in seconds after the last field.
        """
        request = connection.request
        if self._access_log is None or request is None or connection.status is None:
            return  # lost before its handshake was answered: as twisted.web
        request.code = connection.status
        request.sentLength = connection.bytes_sent()
        duration = self.reactor.seconds() - connection.opened_at
        self._access_log(
            f"{combinedLogFormatter(self._logDateTime, request)} {duration:.3f}"
        )

    def channel_opened(self, channel: Connection) -> None:
        self.channels.add(channel)

    def channel_closed(self, channel: Connection) -> None:
        self.channels.discard(channel)
        self._check_drained()

    def channel_taken(
        self, channel: DrainableChannel, transport: ITransport, status: int | None = None
    ) -> None:
        """
        A protocol took C{channel}'s transport: track that connection in its
        stead until it is lost.

        @param status: the status the protocol answered the upgrade with
            while it was rendered, if it did.
        """
        self.channels.discard(channel)
        connection = taken_over_by(transport, self.taken_closed)
        if connection is None:
            self._check_drained()
            return
        # The upgrade request is the last the channel received (it never
        # finishes: the protocol answered it on the connection itself).
        connection.request = channel.requests[-1] if channel.requests else None
        connection.opened_at = self.reactor.seconds()
        if status is not None:
            connection.status = status
        self.taken.add(connection)
        if self.draining:
            self._upgrades.late(connection)

    def taken_closed(self, connection: TakenConnection) -> None:
        self.taken.discard(connection)
        self._log_upgrade(connection)
        self._check_drained()

    def _check_drained(self) -> None:
        if self.draining and not self.channels and not self.taken:
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)

    def connections_by_kind(self) -> dict[str, int]:
        """
        Open connections by kind (C{"http/1.1"}, C{"h2"}, C{"websocket"}, and
        C{"stream"} for a connection whose request asked to hear of the
        drain); kinds with none are left out.
        """
        streaming = self.streams.channels()
        counts: Counter[str] = Counter()
        for channel in self.channels:
            counts["stream" if channel in streaming else getattr(channel, "kind", "http/1.1")] += 1
        for connection in self.taken:
            counts[connection.kind] += 1
        return dict(counts)

    def drain(
        self,
        reason: str = "shutdown",
        *,
        spread: float = 0.0,
        timeout: float | None = None,
        idle_grace: float | None = None,
    ) -> Deferred[None]:
        """
        Start draining; the result fires once every connection is closed.

        The caller stops accepting first: a connection accepted later is
        drained from its start all the same.

        @param reason: C{"restart"} (a new process takes over) or
            C{"shutdown"}; WebSockets are closed with 1012 or 1001.
        @param spread: seconds over which the WebSockets' closes are spread.
        @param timeout: seconds until the caller cuts what is left, which a
            connection's extended grace must stay within.
        @param idle_grace: the grace for idle connections, when not the
            site's own (a hand-over passes L{handover_idle_grace}).
        """
        if idle_grace is not None:
            self.idle_grace = idle_grace
        if timeout is not None:
            self._idle_deadline = self.reactor.seconds() + timeout - IDLE_CLOSE_MARGIN
        self.draining = True
        self.drain_reason = reason
        for channel in list(self.channels):
            channel.drain()
        self.streams.notify()
        self._upgrades.start(list(self.taken), reason, spread, timeout)
        if not self.channels and not self.taken:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._drained.append(d)
        return d

    def idle_grace_left(self) -> float:
        """
        The grace of a connection that becomes idle now: L{idle_grace}, but
        over before the drain's timeout would reset the connection.
        """
        deadline = self._idle_deadline
        if deadline is None:
            return self.idle_grace
        return max(0.0, min(self.idle_grace, deadline - self.reactor.seconds()))

    def abort(self) -> int:
        """
        Abort every connection left; returns how many there were.
        """
        left = list(self.channels)
        for channel in left:
            channel.abort()
        taken = list(self.taken)
        for connection in taken:
            connection.abort()
        self._upgrades.stop()
        return len(left) + len(taken)

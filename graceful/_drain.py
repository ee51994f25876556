"""
A twisted.web Site that can be drained.

twisted.web has no notion of draining, so the channel class here adds it:
once the site drains, every response still to be written carries
C{Connection: close}, every connection closes after its response, and
connections with no request in hand get a short grace to send one (which is
then answered with C{Connection: close}) before they are closed.  The grace is
what keeps a keep-alive client's next request from racing the close.

With h2 installed, a TLS connection that negotiates HTTP/2 becomes an HTTP/2
connection (L{graceful._h2}), tracked and drained (with GOAWAY) alike.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IProtocol, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request, combinedLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Site

from ._h2 import negotiating
from ._streams import StreamRegistry
from ._websocket import TakenConnection, UpgradeDrain, taken_over_by

if TYPE_CHECKING:
    from twisted.internet.interfaces import ITransport

#: Seconds an idle keep-alive connection may take to send its next request
#: once draining starts; it is closed after that.
IDLE_GRACE = 1.0


_check_persistence = HTTPChannel.checkPersistence


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
    """

    site: DrainingSite
    #: What L{DrainingSite.connections_by_kind} counts this connection as.
    kind = "http/1.1"

    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.channel_opened(self)
        if self.site.draining:
            self.drain()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.site.channel_closed(self)

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        # Called once per request, when its headers are in: where the site
        # counts requests too, so the request path has one override, not two.
        site = self.site
        site.requests_served += 1
        if site.draining:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return _check_persistence(self, request, version)

    def allContentReceived(self) -> None:
        # A request is rendered in here; a resource such as autobahn's
        # WebSocketResource may take the transport away (setting ours to
        # None) and give it to a protocol of its own.  The site must go on
        # tracking that connection, which this channel will never hear of
        # again.
        transport: ITransport | None = self.transport
        super().allContentReceived()
        if transport is not None and self.transport is None:
            self.site.channel_taken(self, transport)

    def is_idle(self) -> bool:
        """
        No request in hand and no byte of the next one received.
        """
        return not self.requests and not self._buffer and not self._dataBuffer

    def drain(self) -> None:
        """
        Finish what is in hand with C{Connection: close}; give an idle
        connection L{IDLE_GRACE} to send a request, then close it.
        """
        if self.is_idle():
            self.setTimeout(self.site.idle_grace)
            return
        self.persistent = False
        for request in self.requests:
            if not request.startedWriting:
                request.responseHeaders.setRawHeaders(b"Connection", [b"close"])

    def timeoutConnection(self) -> None:
        if self.site.draining:
            # The connection's grace ran out: close it quietly, no log line
            # for every idle client.
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
    @ivar taken: connections a protocol took from their channel (autobahn's
        WebSockets), tracked until they are lost.
    @ivar streams: the requests that asked to hear of the drain.
    @ivar drain_reason: C{"restart"} or C{"shutdown"} once draining.
    """

    # HTTPFactory's stub wants a factory of its _GenericHTTPChannelProtocol
    # wrapper; a Site's channel is any HTTPChannel, as here.
    protocol = DrainableChannel  # type: ignore[assignment]
    noisy = False
    _log = Logger()

    def __init__(
        self,
        resource: IResource,
        *,
        server_name: str = "default",
        access_log: Callable[[str], None] | None = None,
        idle_grace: float = IDLE_GRACE,
        reactor: IReactorTime | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(resource, reactor=reactor)
        self.server_name = server_name
        self.channels: set[Connection] = set()
        self.requests_served = 0
        self.draining = False
        self.idle_grace = idle_grace
        self._access_log = access_log
        self._drained: list[Deferred[None]] = []
        #: Connections a protocol took from their channel (WebSockets).
        self.taken: set[TakenConnection] = set()
        #: Requests that asked to hear of the drain (streams, long polls).
        self.streams = StreamRegistry()
        #: C{"restart"} or C{"shutdown"} once draining.
        self.drain_reason: str | None = None
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
        # With h2 installed, a connection that negotiates it by ALPN
        # becomes an HTTP/2 connection on its first bytes.
        return negotiating(channel, self)

    @property
    def in_flight(self) -> int:
        """
        Requests received and not yet answered.
        """
        return sum(len(channel.requests) for channel in self.channels)

    def log(self, request: Request) -> None:
        if self._access_log is not None:
            self._access_log(combinedLogFormatter(self._logDateTime, request))

    def channel_opened(self, channel: Connection) -> None:
        self.channels.add(channel)

    def channel_closed(self, channel: Connection) -> None:
        self.channels.discard(channel)
        self._check_drained()

    def channel_taken(self, channel: DrainableChannel, transport: ITransport) -> None:
        """
        A protocol took C{channel}'s transport: track that connection in its
        stead until it is lost.
        """
        self.channels.discard(channel)
        connection = taken_over_by(transport, self.taken_closed)
        if connection is None:
            self._check_drained()
            return
        self.taken.add(connection)
        if self.draining:
            self._upgrades.late(connection)

    def taken_closed(self, connection: TakenConnection) -> None:
        self.taken.discard(connection)
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
        """
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

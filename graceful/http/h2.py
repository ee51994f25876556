# -*- test-case-name: tests.unit.http.test_h2 -*-
"""
HTTP/2 for a L{DrainingSite}: negotiated by ALPN on TLS ports, drained with
GOAWAY.

Twisted serves HTTP/2 with L{twisted.web._http2.H2Connection} (on the C{h2}
library) and picks it per connection in
C{twisted.web.http._GenericHTTPChannelProtocol}, which looks at the ALPN
result on the first bytes received.  That wrapper builds Twisted's own
C{H2Connection}; here L{NegotiatingChannel} does the same switch but builds a
L{DrainableH2Connection}, which the site tracks like its HTTP/1.1 channels
(C{kind} C{"h2"}; its streams count as requests in flight).
A native site's TLS channel (L{graceful.http.native_site.TLSChannel})
switches without the wrapper: the TLS layer tells it when the handshake is
done, and L{h2_takes_over} makes the same connection its TLS protocol's.

How an HTTP/2 connection drains, and why
========================================

RFC 9113 section 6.8 describes a graceful shutdown in two steps: a first
GOAWAY with the largest stream id (2^31-1), so that a client stops opening
streams without any stream it is racing being refused, then, after a round
trip (a PING and its ACK), the final GOAWAY with the last stream id really
processed; streams up to it complete.

Two things in the C{h2} library shape what is done here:

  - C{h2.connection.H2Connection.close_connection} moves the connection's
    state machine to CLOSED: after it, sending HEADERS or DATA raises, so
    the streams still open could not be answered.  The GOAWAY frames are
    therefore written here, built with hyperframe's C{GoAwayFrame}, and
    C{close_connection} is never called while draining; the connection is
    closed with the transport once the last stream is answered.
  - On the client side (httpx and every client built on C{h2}) the same
    state machine closes on I{receiving} any GOAWAY: each stream still
    open on that connection then fails (C{ProtocolError} on its next DATA,
    httpx's C{RemoteProtocolError}), while a stream above the GOAWAY's
    last stream id is retried by httpx on a new connection.  The two-step
    GOAWAY breaks such clients whenever a stream is open.

Nor can one order suit every client.  A client that multiplexes, with
streams opened while others are answered (h2load, browsers), must get the
two steps: told only "last stream N" at a moment when
none of its streams is open at the server, it has some on the wire anyway,
and those are refused (h2load counts them failed).  A client that sends one
request at a time on a connection (httpx's loop, most h2-based clients) must
get a single GOAWAY at a moment when it has no stream open.  So the drain
tells them apart by what the connection has shown:

  - A connection that has had two streams open at once gets RFC 9113's two
    steps at once: a GOAWAY with 2^31-1 and a PING; on the PING's ACK (or
    after C{idle_grace} without one) the final GOAWAY with the last stream
    id; the streams open, including any opened while the first GOAWAY was on
    its way, complete; then the connection closes.
  - Any other connection waits, up to the site's C{idle_grace}, for a moment
    with no stream open (a client making one request at a time gets there
    as soon as its current response is written), then gets a PING and the
    final GOAWAY with the last stream id at once (the PING first: an h2
    client rejects a PING after the GOAWAY it read).  A stream the client
    opened while that GOAWAY was on its way is above the last id: it is
    ignored, not reset, and the client knows from the id that it was not
    processed and sends it again on a new connection (httpx does).  The
    connection closes when the PING's ACK arrives (by then the client has
    read the GOAWAY, and its racing frames are in), when the client closes,
    or after C{idle_grace}.  A connection still busy after the grace gets
    the two steps.

No stream is refused or reset by a drain.  What is still open at
C{drain_timeout} is aborted by the site, as for HTTP/1.1.

Without C{h2} (and C{priority}, which Twisted's channel needs) installed,
L{H2_ENABLED} is false: the TLS context offers only C{http/1.1} and the site
builds plain HTTP/1.1 channels.  Cleartext h2c is not offered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence, cast

from twisted.internet.interfaces import IDelayedCall, IProtocol
from twisted.internet.protocol import Factory, connectionDone
from twisted.python.failure import Failure
from twisted.web.http import H2_ENABLED, _GenericHTTPChannelProtocol

if TYPE_CHECKING:
    from typing_extensions import Buffer


class H2Site(Protocol):
    """
    What an HTTP/2 connection needs of graceful's site (L{graceful.http.site}
    builds on this module, not the other way round).
    """

    reactor: Any
    requests_served: int
    draining: bool
    idle_grace: float
    requestFactory: Any
    timeOut: float | None

    def channel_opened(self, channel: Any) -> None: ...

    def channel_closed(self, channel: Any) -> None: ...

    def buildProtocol(self, addr: Any) -> Any: ...

    def doStart(self) -> None: ...

    def doStop(self) -> None: ...

    def logPrefix(self) -> str: ...


#: The site's HTTP/1.1 channel (L{graceful.http.site.DrainableChannel}) that a
#: negotiation starts from.
DrainableChannel = Any

__all__ = ["H2_ENABLED", "NegotiatingFactory", "alpn_protocols", "h2_takes_over", "negotiating"]

#: The stream id of the first GOAWAY of a two-step drain: "no stream refused
#: yet", RFC 9113 section 6.8.
MAX_STREAM_ID = 2**31 - 1

#: The opaque data of the drain's PING, to tell its ACK from others.
DRAIN_PING = b"draining"


def alpn_protocols() -> list[bytes]:
    """
    The protocols the TLS ports offer by ALPN, most preferred first.
    """
    return [b"h2", b"http/1.1"] if H2_ENABLED else [b"http/1.1"]


def negotiating(channel: DrainableChannel, site: H2Site) -> IProtocol:
    """
    Wrap C{channel} (set up by the site) so that a connection which
    negotiated C{h2} becomes a L{DrainableH2Connection}; without C{h2}
    installed, C{channel} itself.
    """
    if not H2_ENABLED:
        return channel
    wrapper = NegotiatingChannel(channel)
    # The setters keep each value for the channel a switch builds.
    wrapper.requestFactory = channel.requestFactory
    wrapper.site = site
    wrapper.factory = site
    wrapper.timeOut = channel.timeOut
    wrapper.callLater = channel.callLater
    return wrapper


def h2_takes_over(tls: Any, site: H2Site) -> IProtocol:
    """
    Serve the TLS connection C{tls} (a C{TLSMemoryBIOProtocol} that
    negotiated C{h2}, whose first protocol gave it up: no longer its
    producer, and not yet told a byte) with a L{DrainableH2Connection} of
    C{site} from now on.

    The native channel calls this when the handshake completes.  Twisted's
    switch wraps every channel in a proxy that forwards each call; the TLS
    wrapper looks its protocol up on every read, so replacing it there
    costs the HTTP/1.1 connections nothing.
    """
    connection = DrainableH2Connection(site.reactor)
    connection.requestFactory = site.requestFactory
    connection.site = site
    connection.factory = site  # type: ignore[assignment]
    connection.timeOut = site.timeOut  # type: ignore[assignment]
    connection.callLater = site.reactor.callLater  # type: ignore[method-assign]
    tls.wrappedProtocol = connection
    connection.makeConnection(tls)
    # As Twisted's switch: the transport applies back pressure to it.
    tls.registerProducer(connection, True)
    return connection


class NegotiatingFactory(Factory):
    """
    What a TLS port serves: the site's HTTP/1.1 channels, each wrapped to
    switch to HTTP/2 when ALPN chose it.  Plain ports serve the site's
    channels bare: ALPN exists only in TLS, and the wrapper costs every
    connection a few microseconds.

    @ivar site: the site whose channels these are.
    """

    def __init__(self, site: H2Site) -> None:
        self.site = site

    def buildProtocol(self, addr: Any) -> IProtocol:  # type: ignore[override]
        return negotiating(self.site.buildProtocol(addr), self.site)

    # The site is the factory that counts its ports and keeps its log.
    def doStart(self) -> None:
        self.site.doStart()

    def doStop(self) -> None:
        self.site.doStop()

    def logPrefix(self) -> str:
        return self.site.logPrefix()


class NegotiatingChannel(_GenericHTTPChannelProtocol):
    """
    Twisted's HTTP/1.1-or-HTTP/2 switch, building a drainable HTTP/2
    connection.

    The switch is what C{_GenericHTTPChannelProtocol.dataReceived} does,
    with two differences: the new connection is a L{DrainableH2Connection}
    on the site's reactor, and the site stops tracking the HTTP/1.1 channel
    that was replaced (after it tracks the new one, so a draining site does
    not see a moment with no connection).
    """

    _negotiatedProtocol: bytes | None = None  # type: ignore[assignment]

    def dataReceived(self, data: bytes) -> None:
        if self._negotiatedProtocol is None:
            negotiated: bytes = (
                getattr(self._channel.transport, "negotiatedProtocol", None) or b"http/1.1"
            )
            if negotiated == b"h2":
                self._switch_to_h2()
            self._negotiatedProtocol = negotiated
        self._channel.dataReceived(data)

    def _switch_to_h2(self) -> None:
        old = self._channel
        site = cast("H2Site", self._site)
        # The HTTP/1.1 channel is the transport's producer: hand that role
        # over, so the transport applies back pressure to the new one.
        producer = old._networkProducer
        producer.unregisterProducer()
        old.setTimeout(None)
        transport = old.transport
        connection = DrainableH2Connection(site.reactor)
        connection.requestFactory = self._requestFactory
        connection.site = site
        connection.factory = self._factory
        connection.timeOut = self._timeOut
        connection.callLater = self._callLater  # type: ignore[method-assign, assignment]
        self._channel = connection
        connection.makeConnection(transport)
        producer.registerProducer(connection, True)
        site.channel_closed(old)


if H2_ENABLED:
    import h2.connection
    import h2.events
    from hyperframe.frame import GoAwayFrame
    from twisted.web._http2 import H2Connection

    class _ServerConnection(h2.connection.H2Connection):
        """
        h2's connection, noting the ACK of the drain's PING and dropping the
        events of streams opened after the final GOAWAY.

        @ivar ping_acked: the ACK of L{DRAIN_PING} came in.
        @ivar ignore_above: once the final GOAWAY is out, its last stream
            id: a stream above it is not processed.
        """

        ping_acked = False
        ignore_above: int | None = None

        def receive_data(self, data: Buffer) -> list[h2.events.Event]:
            events = super().receive_data(data)
            kept = []
            for event in events:
                if isinstance(event, h2.events.PingAckReceived):
                    if event.ping_data == DRAIN_PING:
                        self.ping_acked = True
                    continue
                stream_id = getattr(event, "stream_id", None)
                if (
                    self.ignore_above is not None
                    and stream_id is not None
                    and stream_id > self.ignore_above
                ):
                    # The client learns from the GOAWAY's last stream id
                    # that this stream was not processed.
                    continue
                kept.append(event)
            return kept

    class DrainableH2Connection(H2Connection):
        """
        An HTTP/2 connection that a L{DrainingSite} tracks and drains with
        GOAWAY (see the module's docstring for the steps).

        @ivar kind: C{"h2"}, for the site's count of connections by kind.
        @ivar draining: the site asked this connection to drain.
        @ivar final_goaway: the last stream id of the final GOAWAY, once
            sent.
        @ivar multiplexing: the client has had more than one stream open at
            a time on this connection.
        """

        kind = "h2"
        site: H2Site  # type: ignore[assignment]
        requestFactory: Any

        def __init__(self, reactor: Any = None) -> None:
            super().__init__(reactor)
            self.conn = _ServerConnection(config=self.conn.config)
            self.draining = False
            self.final_goaway: int | None = None
            self.multiplexing = False
            self._first_goaway = False
            self._lost = False
            self._timer: IDelayedCall | None = None
            #: The client has sent something (its preface, at least).
            self._heard = False

        @property
        def requests(self) -> Sequence[object]:
            """
            The streams in hand: the site counts them as requests in flight.
            """
            return list(self.streams.values())

        def connectionMade(self) -> None:
            super().connectionMade()
            # A site draining already drains this too, but after the
            # client's preface is in: h2-based clients reject the ACK of
            # their SETTINGS after a GOAWAY.
            self.site.channel_opened(self)

        def connectionLost(
            self, reason: Failure = connectionDone, _cancelTimeouts: bool = True
        ) -> None:
            # Twisted calls this itself when the client sends GOAWAY, and
            # again when the transport goes: tell the site once.
            first = not self._lost
            self._lost = True
            self._cancel_timer()
            super().connectionLost(reason, _cancelTimeouts)
            if first:
                self.site.channel_closed(self)

        def _requestReceived(self, event: h2.events.RequestReceived) -> None:
            self.site.requests_served += 1
            super()._requestReceived(event)
            self.multiplexing = self.multiplexing or len(self.streams) > 1

        def dataReceived(self, data: bytes) -> None:
            self._heard = True
            super().dataReceived(data)
            if self.site.draining and not self.draining and not self._lost:
                self.drain()
            elif self.conn.ping_acked and self.draining and not self._lost:
                self.conn.ping_acked = False
                self._round_trip_done()

        def _requestDone(self, streamID: int) -> None:
            super()._requestDone(streamID)
            if self.draining and not self.streams and not self._lost:
                self._idle()

        def drain(self) -> None:
            """
            Start the drain: RFC 9113's two steps for a client that
            multiplexes streams; for one that does not, a single GOAWAY once
            no stream is open, or the two steps after C{idle_grace}.
            """
            if self.draining:
                return
            if not self._heard:
                # Made at the end of the TLS handshake (the native channel's
                # switch) and the client's preface not in yet: a GOAWAY now
                # would refuse the streams it is about to open (h2load
                # counted 10 of 40 failed now and then at a restart).  The
                # drain starts with its first bytes, as on Twisted's switch;
                # a client that sends none is closed after the idle grace.
                if self._timer is None:
                    self._timer = self._reactor.callLater(self.site.idle_grace, self._close)
                return
            self._cancel_timer()
            self.draining = True
            if self.multiplexing:
                self._still_busy()
            elif not self.streams:
                self._send_final()
            else:
                self._timer = self._reactor.callLater(
                    self.site.idle_grace, self._still_busy
                )

        def abort(self) -> None:
            if self.transport is not None:
                # As for HTTP/1.1: both transports a site gets have it.
                self.transport.abortConnection()  # type: ignore[attr-defined]

        def _idle(self) -> None:
            if self.final_goaway is not None:
                self._close()
            elif not self._first_goaway:
                # The wait for an idle moment ends: one GOAWAY.
                self._cancel_timer()
                self._send_final()
            # (After a first GOAWAY, the final one waits for the PING.)

        def _still_busy(self) -> None:
            # Streams stayed open through the grace: RFC 9113's two steps.
            self._timer = None
            self._first_goaway = True
            self._write_frames(self._goaway(MAX_STREAM_ID))
            self.conn.ping(DRAIN_PING)
            self._write_frames(b"")
            self._timer = self._reactor.callLater(
                self.site.idle_grace, self._round_trip_done
            )

        def _send_final(self) -> None:
            # The PING goes first: an h2-based client rejects a PING after
            # the GOAWAY it has just read.
            if not self._first_goaway:
                self.conn.ping(DRAIN_PING)
            last = self.conn.highest_inbound_stream_id
            self.final_goaway = last
            self.conn.ignore_above = last
            self._write_frames(self._goaway(last))
            if self._first_goaway:
                # The round trip is done already: close once idle.
                if not self.streams:
                    self._close()
                return
            self._timer = self._reactor.callLater(self.site.idle_grace, self._close)

        def _round_trip_done(self) -> None:
            self._cancel_timer()
            if self.final_goaway is None:
                if self._first_goaway:
                    self._send_final()
                return
            if not self.streams:
                self._close()

        def _close(self) -> None:
            self._cancel_timer()
            if not self._lost and self.transport is not None:
                # Twisted's TLS sends its close only once no producer is
                # registered: until then the connection stayed open for as
                # long as the client kept it (to drain_timeout).
                transport: Any = self.transport
                transport.unregisterProducer()
                transport.loseConnection()

        def _cancel_timer(self) -> None:
            if self._timer is not None and self._timer.active():
                self._timer.cancel()
            self._timer = None

        def _goaway(self, last_stream_id: int) -> bytes:
            frame = GoAwayFrame(stream_id=0, last_stream_id=last_stream_id, error_code=0)
            return bytes(frame.serialize())

        def _write_frames(self, frames: bytes) -> None:
            """
            Write what h2 has queued, then C{frames}, through Twisted's
            control-frame path (which buffers while the transport is full).
            """
            data = self.conn.data_to_send() + frames
            if not data:
                return
            if self._consumerBlocked is None and not self._bufferedControlFrames:
                assert self.transport is not None
                self.transport.write(data)
            else:
                self._bufferedControlFrames.append(data)
                self._bufferedControlFrameBytes += len(data)

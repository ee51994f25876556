# -*- test-case-name: tests.unit.http.test_websocket -*-
"""
WebSockets (and any other protocol that takes a connection from its HTTP
channel) across a drain.

autobahn's C{WebSocketResource} takes the transport from the HTTP channel
(C{request.channel.transport = None}) and hands it to its WebSocket protocol,
so the site would never hear of that connection again.  The channel notices
the takeover (L{DrainableChannel.allContentReceived}) and the site tracks the
new protocol here as a L{TakenConnection} until the connection is lost.

When the process drains, every WebSocket gets a close frame, 1012 (service
restart) when a new process takes over or 1001 (going away) at a shutdown.
The closes are spread evenly over C{drain_spread} seconds in a random order,
so that thousands of clients do not reconnect in the same instant.

A protocol may hear of its turn first by defining::

    def on_drain(self, notice: graceful.DrainNotice) -> None | float | Deferred:

It is called when the connection's turn comes, before graceful sends the
close.  It returns C{None} to be closed now, a number of seconds of further
grace (capped so the close still goes out before C{drain_timeout}), or a
Deferred: the close goes out when it fires (if the protocol has not closed
the connection itself by then).  A connection still open at C{drain_timeout}
is cut.  Nothing here imports autobahn: the protocol is used by duck typing.
"""

from __future__ import annotations

import itertools
import random
from typing import Any, Callable, Sequence

from attrs import frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure

from .._logging import NamedLogger

#: The close codes of RFC 6455 section 7.4 (1012: IANA's registry).
CLOSE_GOING_AWAY = 1001
CLOSE_SERVICE_RESTART = 1012

_CLOSES = {
    "restart": (CLOSE_SERVICE_RESTART, b"service restart"),
    "shutdown": (CLOSE_GOING_AWAY, b"going away"),
}

#: autobahn's protocol states (autobahn.websocket.protocol.WebSocketProtocol).
_STATE_OPEN = 3
_STATES_CONNECTING = (1, 4)


@frozen
class DrainNotice:
    """
    What a connection's C{on_drain} hook is told.

    @ivar reason: C{"restart"} (a new process takes over) or C{"shutdown"}.
    @ivar close_code: the close code graceful will send: 1012 or 1001.
    @ivar time_left: seconds until C{drain_timeout} cuts the connection.
    """

    reason: str
    close_code: int
    time_left: float


def _protocol_of(transport: Any) -> Any:
    # Where autobahn's WebSocketResource.render put its protocol: on the
    # TLS wrapper that was the channel's transport, or on the TCP transport.
    if isinstance(transport, ProtocolWrapper):
        return transport.wrappedProtocol
    protocol = getattr(transport, "protocol", None)
    if isinstance(protocol, ProtocolWrapper):
        return protocol.wrappedProtocol
    return protocol


def taken_over_by(
    transport: ITransport, closed: Callable[[TakenConnection], None]
) -> TakenConnection | None:
    """
    The connection whose transport a protocol took, or C{None} if no
    protocol holds it.
    """
    protocol = _protocol_of(transport)
    if protocol is None:
        return None
    return TakenConnection(protocol, transport, closed)


class TakenConnection:
    """
    A connection now served by a protocol that took it from its HTTP channel.

    @ivar protocol: that protocol (autobahn's WebSocketServerProtocol).
    @ivar transport: the connection's transport.
    @ivar kind: C{"websocket"} for a WebSocket protocol, else C{"upgraded"}.
    @ivar closed: C{True} once the connection is lost.
    @ivar status: the opening handshake's answer: 101 once the WebSocket
        opened, the refusal's status if it was refused, else C{None}.
    @ivar request: the upgrade request, for the access log.
    @ivar opened_at: when the connection was taken (reactor seconds).
    @ivar sequence: the order connections were taken in, which the drain's
        shuffle starts from.
    """

    request: Any = None
    opened_at: float = 0.0
    _taken = itertools.count()

    def __init__(
        self,
        protocol: Any,
        transport: ITransport,
        closed: Callable[[TakenConnection], None],
    ) -> None:
        self.protocol = protocol
        self.transport = transport
        self.sequence = next(TakenConnection._taken)
        self.kind = "websocket" if hasattr(protocol, "sendCloseFrame") else "upgraded"
        self.closed = False
        self.status: int | None = None if self.kind == "websocket" else 101
        self._on_closed = closed
        lost = protocol.connectionLost

        # Wrapped on the instance: both TCP and the TLS wrapper look the
        # method up on the protocol when the connection goes.
        def connectionLost(reason: Failure) -> None:
            try:
                lost(reason)
            finally:
                self._lost()

        protocol.connectionLost = connectionLost
        if self.kind == "websocket":
            self._watch_handshake(protocol)

    def _watch_handshake(self, protocol: Any) -> None:
        # Wrapped on the instance, as connectionLost: autobahn calls onOpen
        # once the handshake succeeded, failHandshake(reason, code) when it
        # refuses (an app's ConnectionDeny too).
        on_open = getattr(protocol, "onOpen", None)
        fail = getattr(protocol, "failHandshake", None)
        if on_open is not None:

            def onOpen(*args: Any, **kw: Any) -> Any:
                self.status = 101
                return on_open(*args, **kw)

            protocol.onOpen = onOpen
        if fail is not None:

            def failHandshake(reason: str, code: int = 400, *args: Any, **kw: Any) -> Any:
                self.status = code
                return fail(reason, code, *args, **kw)

            protocol.failHandshake = failHandshake

    def bytes_sent(self) -> int:
        """
        Bytes the protocol wrote to the connection, handshake included, as
        far as it counts them (autobahn does); 0 if unknown.
        """
        stats = getattr(self.protocol, "trafficStats", None)
        if stats is None:
            return 0
        return int(getattr(stats, "preopenOutgoingOctetsWireLevel", 0)) + int(
            getattr(stats, "outgoingOctetsWireLevel", 0)
        )

    def _lost(self) -> None:
        if not self.closed:
            self.closed = True
            self._on_closed(self)

    def close(self, code: int, reason: bytes) -> None:
        """
        Send the close frame (a protocol we cannot close politely is closed
        at the TCP level).
        """
        if self.closed:
            return
        if self.kind == "websocket":
            state = getattr(self.protocol, "state", None)
            if state == _STATE_OPEN:
                # sendClose refuses the codes reserved to servers (1001,
                # 1012); sendCloseFrame is autobahn's own path to them.
                self.protocol.sendCloseFrame(code=code, reasonUtf8=reason, isReply=False)
                return
            if state in _STATES_CONNECTING:
                # Still in its opening handshake: there is nothing to close
                # politely.
                self.transport.loseConnection()
            # Closing or closed: the close handshake is under way already.
            return
        self.transport.loseConnection()

    def abort(self) -> None:
        if not self.closed:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()


class UpgradeDrain:
    """
    The closing of a site's taken connections, spread over a window.

    @ivar reason: C{"restart"} or C{"shutdown"} once started.
    """

    _log = NamedLogger("graceful._websocket.UpgradeDrain")

    def __init__(self, reactor: IReactorTime, rng: random.Random) -> None:
        self._reactor = reactor
        self._rng = rng
        self.reason: str | None = None
        self._deadline: float | None = None
        self._started = 0.0
        self._calls: list[IDelayedCall] = []

    def start(
        self,
        connections: Sequence[TakenConnection],
        reason: str,
        spread: float,
        timeout: float | None,
    ) -> None:
        """
        Give each connection its turn: in a random order, evenly spaced over
        C{spread} seconds, the first at once.
        """
        if self.reason is not None:
            return
        self.reason = reason
        self._started = self._reactor.seconds()
        self._deadline = None if timeout is None else self._started + timeout
        # The site keeps its connections in a set, which iterates in memory
        # order: started from the order they were taken in, a seeded rng
        # closes them in the same order every run.
        order = sorted(connections, key=lambda c: c.sequence)
        self._rng.shuffle(order)
        count = len(order)
        for index, connection in enumerate(order):
            self._at(spread * index / count, self._turn, connection)

    def late(self, connection: TakenConnection) -> None:
        """
        A connection upgraded while draining: its turn is now.
        """
        self._at(0, self._turn, connection)

    def stop(self) -> None:
        calls, self._calls = self._calls, []
        for call in calls:
            if call.active():
                call.cancel()

    def _at(self, delay: float, f: Callable[..., Any], *args: Any) -> None:
        self._calls = [c for c in self._calls if c.active()]
        self._calls.append(self._reactor.callLater(delay, f, *args))

    def _time_left(self) -> float:
        if self._deadline is None:
            return float("inf")
        return max(0.0, self._deadline - self._reactor.seconds())

    def _turn(self, connection: TakenConnection) -> None:
        if connection.closed:
            return
        assert self.reason is not None
        code, _ = _CLOSES[self.reason]
        hook = getattr(connection.protocol, "on_drain", None)
        if hook is None:
            self._close(connection)
            return
        try:
            result = hook(DrainNotice(self.reason, code, self._time_left()))
        except Exception:
            self._log.failure("on_drain of a connection failed")
            self._close(connection)
            return
        if isinstance(result, Deferred):

            def failed(failure: Failure) -> None:
                self._log.failure("on_drain of a connection failed", failure)

            result.addErrback(failed)
            result.addBoth(lambda _: self._close(connection))
        elif isinstance(result, (int, float)) and not isinstance(result, bool) and result > 0:
            self._at(self._grace(float(result)), self._close, connection)
        else:
            self._close(connection)

    def _grace(self, asked: float) -> float:
        """
        The grace a connection asked for, ending early enough for the close
        handshake to be over before C{drain_timeout}.
        """
        left = self._time_left()
        if left == float("inf"):
            return asked
        assert self._deadline is not None
        margin = min(1.0, (self._deadline - self._started) / 10)
        return max(0.0, min(asked, left - margin))

    def _close(self, connection: TakenConnection) -> None:
        assert self.reason is not None
        code, text = _CLOSES[self.reason]
        connection.close(code, text)

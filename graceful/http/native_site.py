"""
A L{DrainingSite} whose HTTP/1.1 connections, plain and TLS, are served by
the native HTTP/1.1 channel (L{graceful.http.native}).

The site is the same: it counts, drains, aborts and logs the native
channels as it does twisted.web's, so the departure and hand-over code
sees no difference.  Requests whose path is not the app's (the admin pages,
the health page) and WebSocket upgrades are served by a twisted.web channel
of the same site, which takes over the connection.

On a TLS port the channel is a L{TLSChannel}: secure (C{https} to the
apps), and told by the TLS layer when the handshake completes; where ALPN
chose C{h2} it hands the connection to Twisted's HTTP/2 connection
(L{graceful.http.h2}, drained with GOAWAY), once, before the first byte.
Nothing sits between the TLS layer and the channel afterwards.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.internet.interfaces import IHandshakeListener, IProtocol
from twisted.web.resource import IResource
from zope.interface import implementer

from .exchange import Exchange
from .h2 import H2_ENABLED, NegotiatingFactory, h2_takes_over
from .native import Dispatch, NativeChannel, timer_for
from .site import DrainingSite


class NativeSite(DrainingSite):
    """
    A draining site whose HTTP/1.1 connections are L{NativeChannel}s
    (L{TLSChannel}s on its TLS ports).

    @ivar dispatch_for: the app's glue for a request target, or C{None}
        where a twisted.web channel must serve it.
    """

    def __init__(
        self,
        resource: IResource,
        dispatch_for: Callable[[bytes], Dispatch | None],
        **kwargs: Any,
    ) -> None:
        super().__init__(resource, **kwargs)
        self.dispatch_for = dispatch_for
        self.call_later = timer_for(self.reactor)

    def buildProtocol(self, addr: Any) -> IProtocol:  # type: ignore[override]
        return NativeChannel(self)

    def logPrefix(self) -> str:
        # The ports' log lines ("DrainingSite starting on 8100") stay as they were.
        return "DrainingSite"

    def twisted_channel(self, addr: Any) -> Any:
        """
        A twisted.web channel of this site, to take a connection over.
        """
        return super().buildProtocol(addr)

    def over_tls(self) -> NegotiatingFactory:
        """
        The factory of this site's TLS ports: L{TLSChannel}s.
        """
        return _TLSChannels(self)


@implementer(IHandshakeListener)
class TLSChannel(NativeChannel):
    """
    A native channel on a TLS port (its transport a C{TLSMemoryBIOProtocol}).

    Twisted's HTTP/1.1-or-2 switch wraps every channel in a proxy that looks
    at the ALPN outcome on the first read and forwards every call after; the
    TLS layer tells a protocol that provides C{IHandshakeListener} when the
    handshake is done (ALPN decided, no application byte read yet), which
    is where this one decides.  A raw ASGI app over TLS (wrk -c16, loaded
    2-core machine) cost 50 us of CPU a keep-alive request here against 100
    on twisted.web's path; a new connection's handshake (~1 ms) dominates
    either way.
    """

    secure = True

    def handshakeCompleted(self) -> None:
        transport: Any = self.transport
        if not H2_ENABLED or transport.negotiatedProtocol != b"h2":
            return  # http/1.1, or no ALPN: this channel serves it
        transport.unregisterProducer()
        # The site tracks the HTTP/2 connection before it forgets this one,
        # so a draining site never sees a moment with neither; losing the
        # connection cancels this channel's timers.
        h2_takes_over(transport, self.site)  # type: ignore[arg-type]
        self.connectionLost()


class _TLSChannels(NegotiatingFactory):
    """
    What a native site's TLS ports serve: L{TLSChannel}s, counted and
    logged by the site.
    """

    site: NativeSite

    def buildProtocol(self, addr: Any) -> IProtocol:  # type: ignore[override]
        return TLSChannel(self.site)


def prefix_dispatch(
    native: Sequence[tuple[bytes, Dispatch]], others: Sequence[bytes] = ()
) -> Callable[[bytes], Dispatch | None]:
    """
    For a request target, the glue of the longest prefix (C{b""} for the
    root) its path is under, segment-wise, among C{native}; C{None} when one
    of C{others} (served by twisted.web) is longer, or none matches.
    """
    ordered: list[tuple[bytes, Dispatch | None]] = [*native, *((p, None) for p in others)]
    ordered.sort(key=lambda item: len(item[0]), reverse=True)
    if len(ordered) == 1 and ordered[0][0] == b"":
        root = ordered[0][1]
        return lambda target: root

    def dispatch_for(target: bytes) -> Dispatch | None:
        path = target.split(b"?", 1)[0]
        for prefix, dispatch in ordered:
            if not prefix or path == prefix or path.startswith(prefix + b"/"):
                return dispatch
        return None

    return dispatch_for


__all__ = ["Exchange", "NativeSite", "TLSChannel", "prefix_dispatch"]

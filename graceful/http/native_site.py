"""
A L{DrainingSite} whose plain connections are served by the native
HTTP/1.1 channel (L{graceful.http.native}).

The site is the same: it counts, drains, aborts and logs the native
channels as it does twisted.web's, so the departure and hand-over code
sees no difference.  Requests whose path is not the app's (the admin pages,
the health page) and WebSocket upgrades are served by a twisted.web channel
of the same site, which takes over the connection; TLS ports serve
twisted.web's channels (with HTTP/2 by ALPN) as before.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from twisted.internet.interfaces import IProtocol
from twisted.web.resource import IResource

from .exchange import Exchange
from .h2 import NegotiatingFactory
from .native import Dispatch, NativeChannel
from .site import DrainingSite


class NativeSite(DrainingSite):
    """
    A draining site whose plain connections are L{NativeChannel}s.

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
        return NegotiatingFactory(_TwistedChannels(self))


class _TwistedChannels:
    """
    The site as its TLS ports see it: building twisted.web's channels.
    """

    def __init__(self, site: NativeSite) -> None:
        self._site = site

    def buildProtocol(self, addr: Any) -> Any:
        return self._site.twisted_channel(addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._site, name)


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


__all__ = ["Exchange", "NativeSite", "prefix_dispatch"]

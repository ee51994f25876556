# -*- test-case-name: tests.unit.http.test_limits -*-
"""
C{limit_concurrency}: beyond this many requests in progress at once, a
server answers 503 at once rather than queue work it cannot do soon, and
counts the refusals (in its site's L{ResponseStats}, for the metrics).  WebSocket upgrades are not counted: their request
never finishes while the connection lives.

On twisted.web's channel the limit is the site's root resource
(L{ConcurrencyLimit}); on the native channel the same object is asked
through L{limited}, wrapped around each app's dispatch, so the requests of
both channels (the admin pages a native connection hands over included)
count against one limit.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from .._logging import NamedLogger
from .response_stats import ResponseStats

RETRY_AFTER = b"1"
BUSY_TYPE = b"text/plain; charset=utf-8"
BUSY_BODY = b"Service Unavailable: too many requests in progress\n"


@implementer(IResource)
class Busy:
    """
    The answer beyond the limit: 503 with C{Retry-After}.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(503)
        request.setHeader(b"retry-after", RETRY_AFTER)
        request.setHeader(b"content-type", BUSY_TYPE)
        return BUSY_BODY

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:  # noqa: N802
        return self

    def putChild(self, path: bytes, child: IResource) -> None:  # noqa: N802
        raise NotImplementedError


@implementer(IResource)
class ConcurrencyLimit:
    """
    A server's root resource that admits at most C{limit} requests at once.

    @ivar active: the requests admitted and not yet finished.
    @ivar refused: the requests answered 503 so far.
    """

    _log = NamedLogger("graceful.limits")

    def __init__(self, inner: IResource, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.active = 0
        self.refused = 0

    @property
    def isLeaf(self) -> bool:  # noqa: N802 (twisted.web's name)
        return bool(self.inner.isLeaf)

    def _admit(self, request: Any) -> bool:
        if getattr(request, "_graceful_admitted", False):
            return True
        if request.requestHeaders.hasHeader(b"upgrade"):
            return True
        # Counted where the metrics read the site's other counts: the site
        # set itself on the request before the first lookup.
        if not self.take(getattr(getattr(request, "site", None), "stats", None)):
            return False
        request._graceful_admitted = True
        request.notifyFinish().addBoth(self._finished)
        return True

    def take(self, stats: object) -> bool:
        """
        Admit one more request, or count (in C{stats}, a site's
        L{ResponseStats}) and log its refusal.
        """
        if self.active >= self.limit:
            self.refused += 1
            if isinstance(stats, ResponseStats):
                stats.refuse("limit_concurrency")
            if self.refused == 1 or self.refused % 1000 == 0:
                self._log.warn(
                    "limit_concurrency {limit} reached: {refused} request(s) answered 503",
                    limit=self.limit, refused=self.refused,
                )
            return False
        self.active += 1
        return True

    def release(self) -> None:
        """
        An admitted request finished (or its connection was lost).
        """
        self.active -= 1

    def _finished(self, result: object) -> None:
        self.release()

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:  # noqa: N802
        if not self._admit(request):
            return Busy()
        return self.inner.getChildWithDefault(name, request)

    def putChild(self, path: bytes, child: IResource) -> None:  # noqa: N802
        self.inner.putChild(path, child)

    def render(self, request: IRequest) -> Any:
        if not self._admit(request):
            return Busy().render(request)
        return self.inner.render(request)


def limit_concurrency(resource: IResource, limit: int) -> IResource:
    """
    C{resource} behind the limit; unchanged (no cost) for 0, no limit.
    """
    return ConcurrencyLimit(resource, limit) if limit else resource


def limited(dispatch: Callable[[Any], None], limit: ConcurrencyLimit) -> Callable[[Any], None]:
    """
    The native channel's C{dispatch} of an app, behind C{limit}: beyond it
    the exchange is answered 503 as L{Busy} answers (its refusal counted in
    its site's L{ResponseStats}), else it holds a place until its response
    ends or its connection is lost.  (Upgrades never come here: the native
    channel hands them to twisted.web's.)
    """

    def serve(exchange: Any) -> None:
        if not limit.take(exchange.channel.site.stats):
            exchange.start(503, [
                (b"retry-after", RETRY_AFTER),
                (b"content-type", BUSY_TYPE),
                (b"content-length", b"%d" % len(BUSY_BODY)),
            ])
            exchange.write(BUSY_BODY)
            exchange.end()
            return
        exchange.on_finish = limit.release
        dispatch(exchange)

    return serve

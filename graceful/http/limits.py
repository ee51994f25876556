# -*- test-case-name: tests.unit.http.test_limits -*-
"""
C{limit_concurrency}: beyond this many requests in progress at once, a
server answers 503 at once rather than queue work it cannot do soon, and
counts the refusals (in its site's L{ResponseStats}, for the metrics).  WebSocket upgrades are not counted: their request
never finishes while the connection lives.
"""

from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from zope.interface import implementer

from .._logging import NamedLogger
from .response_stats import ResponseStats

RETRY_AFTER = b"1"


@implementer(IResource)
class Busy:
    """
    The answer beyond the limit: 503 with C{Retry-After}.
    """

    isLeaf = True

    def render(self, request: Any) -> bytes:
        request.setResponseCode(503)
        request.setHeader(b"retry-after", RETRY_AFTER)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"Service Unavailable: too many requests in progress\n"

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
        if self.active >= self.limit:
            self.refused += 1
            # Counted where the metrics read the site's other counts: the
            # site set itself on the request before the first lookup.
            stats = getattr(getattr(request, "site", None), "stats", None)
            if isinstance(stats, ResponseStats):
                stats.refuse("limit_concurrency")
            if self.refused == 1 or self.refused % 1000 == 0:
                self._log.warn(
                    "limit_concurrency {limit} reached: {refused} request(s) answered 503",
                    limit=self.limit, refused=self.refused,
                )
            return False
        self.active += 1
        request._graceful_admitted = True
        request.notifyFinish().addBoth(self._finished)
        return True

    def _finished(self, result: object) -> None:
        self.active -= 1

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

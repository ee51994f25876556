"""
Unit tests for L{graceful.http.limits}: 503 beyond the limit, counted;
finished requests make room; upgrades are not counted.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from graceful._settings import Settings
from graceful.http.limits import ConcurrencyLimit, limit_concurrency
from graceful.http.proxy import site_root


class Slow(Resource):
    isLeaf = True

    def render(self, request: Any) -> Any:
        return NOT_DONE_YET


def request(**headers: str) -> DummyRequest:
    r = DummyRequest([b"x"])
    for name, value in headers.items():
        r.requestHeaders.addRawHeader(name, value)
    return r


class LimitTests(SynchronousTestCase):
    def test_beyond_the_limit(self) -> None:
        limited = ConcurrencyLimit(Slow(), 2)
        first, second, third = request(), request(), request()
        self.assertIs(limited.render(first), NOT_DONE_YET)
        self.assertIs(limited.render(second), NOT_DONE_YET)
        body = limited.render(third)
        self.assertEqual((third.responseCode, third.responseHeaders.getRawHeaders(b"retry-after")),
                         (503, [b"1"]))
        self.assertIn(b"Service Unavailable", body)
        self.assertEqual((limited.active, limited.refused), (2, 1))
        first.finish()
        fourth = request()
        self.assertIs(limited.render(fourth), NOT_DONE_YET)
        self.assertEqual((limited.active, limited.refused), (2, 1))

    def test_a_lost_connection_makes_room(self) -> None:
        limited = ConcurrencyLimit(Slow(), 1)
        first = request()
        limited.render(first)
        first.processingFailed(Exception("connection lost"))  # type: ignore[no-untyped-call]
        self.assertEqual(limited.active, 0)

    def test_upgrades_not_counted(self) -> None:
        limited = ConcurrencyLimit(Slow(), 1)
        for _ in range(3):
            self.assertIs(limited.render(request(upgrade="websocket")), NOT_DONE_YET)
        self.assertEqual((limited.active, limited.refused), (0, 0))

    def test_no_limit_costs_nothing(self) -> None:
        inner = Slow()
        self.assertIs(limit_concurrency(inner, 0), inner)
        self.assertIs(site_root(inner, Settings()), inner)
        self.assertIsInstance(site_root(inner, Settings(limit_concurrency=3)), ConcurrencyLimit)

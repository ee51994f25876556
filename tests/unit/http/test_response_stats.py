"""
Unit tests for L{graceful.http.response_stats}: responses by status class
and requests by duration, as a L{DrainingSite} on a L{Clock} counts them.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from graceful._status import DURATION_BUCKETS
from graceful.http.response_stats import ResponseStats
from graceful.http.site import DrainingSite

from .test_routing import HTTPConnection
from .test_site import App


class ResponseStatsTests(SynchronousTestCase):
    def test_record(self) -> None:
        stats = ResponseStats()
        stats.record(200, 0.005)  # a bound is in its own bucket
        stats.record(404, 0.006)
        stats.record(503, 60.0)
        stats.record(101, None)
        stats.record(999, None)  # no class: not counted
        self.assertEqual(stats.by_class(), {"1xx": 1, "2xx": 1, "3xx": 0, "4xx": 1, "5xx": 1})
        expected = [0] * (len(DURATION_BUCKETS) + 1)
        expected[0] = expected[1] = expected[-1] = 1
        self.assertEqual(stats.durations, expected)
        self.assertAlmostEqual(stats.duration_sum, 60.011)


class SiteStatsTests(SynchronousTestCase):
    """
    A site times each request from when it is in to its response's end.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.app = App()
        self.site = DrainingSite(self.app, reactor=self.clock)

    def test_status_classes_and_durations(self) -> None:
        connection = HTTPConnection(self.site)
        self.addCleanup(connection.lose)
        connection.request("/fast")
        self.app.status = 404
        connection.request("/fast")
        connection.request("/slow")
        self.clock.advance(0.3)
        self.app.answer()
        stats = self.site.stats
        self.assertEqual(stats.by_class(), {"1xx": 0, "2xx": 2, "3xx": 0, "4xx": 1, "5xx": 0})
        self.assertEqual(stats.durations[0], 2)  # the fast ones took no time
        self.assertEqual(stats.durations[DURATION_BUCKETS.index(0.5)], 1)
        self.assertAlmostEqual(stats.duration_sum, 0.3)

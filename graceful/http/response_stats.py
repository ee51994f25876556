# -*- test-case-name: tests.unit.http.test_response_stats -*-
"""
What a site's finished responses add up to, for the metrics: how many of
each status class, and how long their requests took, in the histogram's
buckets.  Kept as plain counts (a few list increments per response), which
the status carries and a master sums over its workers.
"""

from __future__ import annotations

from bisect import bisect_left

from .._status import DURATION_BUCKETS, REFUSAL_REASONS, STATUS_CLASSES


class ResponseStats:
    """
    The counts of one site.

    @ivar classes: responses by status class: index 0 is 1xx, 4 is 5xx.
    @ivar durations: requests by duration, one count per bucket of
        L{DURATION_BUCKETS} (its upper bound included), then the rest.
    @ivar duration_sum: the seconds those requests took, together.
    @ivar refused: requests the server answered 503 itself, without the
        app, by reason (L{REFUSAL_REASONS}).
    """

    __slots__ = ("classes", "durations", "duration_sum", "refused")

    def __init__(self) -> None:
        self.classes = [0] * len(STATUS_CLASSES)
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.refused = dict.fromkeys(REFUSAL_REASONS, 0)

    def record(self, code: int, seconds: float | None) -> None:
        """
        One response with status C{code}, for a request that took
        C{seconds} (L{None}: not timed).
        """
        if 100 <= code < 600:
            self.classes[code // 100 - 1] += 1
        if seconds is not None:
            self.durations[bisect_left(DURATION_BUCKETS, seconds)] += 1
            self.duration_sum += seconds

    def refuse(self, reason: str) -> None:
        """
        One request answered without the app, for C{reason}.
        """
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def by_class(self) -> dict[str, int]:
        return dict(zip(STATUS_CLASSES, self.classes))

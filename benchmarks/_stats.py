"""
Numbers from samples: percentiles, steady state against restart windows.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Iterable, Sequence

from ._load import Sample


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    "Nearest-rank percentile of already sorted values."
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_ms(samples: Iterable[Sample]) -> dict:
    "p50, p99 and max latency in ms of the successful requests."
    values = sorted(s.latency * 1000 for s in samples if s.ok)
    return {
        "count": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": values[-1] if values else None,
    }


def in_windows(sample: Sample, windows: Sequence[tuple[float, float]]) -> bool:
    "Whether the request overlapped a restart window."
    return any(sample.start < end and sample.end > start for start, end in windows)


def sampler_summary(samples: Sequence[Sample], windows: Sequence[tuple[float, float]]) -> dict:
    """
    Requests, failures by kind, and latency inside and outside the restart
    windows.
    """
    inside = [s for s in samples if in_windows(s, windows)]
    steady = [s for s in samples if not in_windows(s, windows)]
    errors = Counter(s.outcome for s in samples if not s.ok)
    return {
        "requests": len(samples),
        "failed": sum(errors.values()),
        "errors": dict(errors),
        "failed_in_window": sum(1 for s in inside if not s.ok),
        "steady": latency_ms(steady),
        "window": latency_ms(inside),
        "pids": len({s.pid for s in samples if s.pid}),
    }


def median(values: Sequence[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def mean(values: Sequence[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None

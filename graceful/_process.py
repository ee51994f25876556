"""
The process's own runtime, on the global reactor: what C{graceful.server()}
and the twistd plugin share.  The only place that picks the global reactor.
"""

from __future__ import annotations

import os
from typing import Any

from ._pages import add_operational_pages
from ._runtime import Runtime

_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        from twisted.internet import reactor

        _runtime = Runtime.from_environment(os.environ, reactor)
        _runtime.operational_pages = add_operational_pages
    return _runtime


def reset_for_tests(replacement: Runtime | None = None) -> Any:
    """
    Replace the process runtime (tests build theirs on a memory reactor).
    """
    global _runtime
    previous, _runtime = _runtime, replacement
    return previous

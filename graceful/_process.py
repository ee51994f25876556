"""
The process's own runtime, on the global reactor: what C{graceful.server()}
and the twistd plugin share.  The only place that picks the global reactor.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType
from typing import Any

from ._errors import ConfigError
from .process.runtime import Runtime, runtime_from_environment


class LazyReactor:
    """
    The global reactor, not imported yet.
    """

    stands_for_global_reactor = True

    def resolve(self) -> Any:
        from twisted.internet import reactor

        return reactor


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        # Imported on first use: an ASGI app mounted before then gets
        # Twisted's asyncio reactor.
        _runtime = runtime_from_environment(os.environ, LazyReactor())
        _report_config_errors_in_one_line()
    return _runtime


def _report_config_errors_in_one_line() -> None:
    """
    A program that does not catch a ConfigError (a port in use, a missing
    certificate) ends with one line naming the problem, not a traceback.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if isinstance(value, ConfigError):
            sys.stderr.write(f"graceful: error: {value}\n")
            return
        previous(kind, value, tb)

    sys.excepthook = hook


def reset_for_tests(replacement: Runtime | None = None) -> Any:
    """
    Replace the process runtime (tests build theirs on a memory reactor).
    """
    global _runtime
    previous, _runtime = _runtime, replacement
    return previous

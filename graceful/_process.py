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
from .handoff.pipes import OldProcess
from ._settings import Settings
from .process.runtime import Runtime, runtime_from_environment
from .workers.template import TEMPLATE_VARIABLE, hold_forks


class LazyReactor:
    """
    The global reactor, not imported yet.
    """

    stands_for_global_reactor = True

    def resolve(self) -> Any:
        from twisted.internet import reactor

        return reactor


_runtime: Runtime | None = None

#: Whether the entry point imports the app after it first asks for the
#: runtime, and calls L{preload_point} then (the plugin, C{graceful run}).
apps_come_later = False


def runtime() -> Runtime:
    global _runtime
    if _runtime is None and not apps_come_later:
        # A program serving in code imported its app before it got here.
        preload_point()
    if _runtime is None:
        # Imported on first use: an ASGI app mounted before then gets
        # Twisted's asyncio reactor.
        _runtime = runtime_from_environment(os.environ, LazyReactor())
        _report_config_errors_in_one_line()
    return _runtime


def serves_apps(settings: Settings) -> bool:
    """
    Whether this process imports its servers' apps: every process but a
    master, whose workers (or whose worker template) import them.
    """
    if TEMPLATE_VARIABLE in os.environ:
        return True
    served = runtime()
    served.settings = settings
    return served.role != "master"


def preload_point() -> None:
    """
    In a worker template (the master started this process to fork its
    workers from), wait for the master's requests here, with the app
    imported and no reactor running; each child returns from here as an
    exec'd worker would arrive, and builds its own runtime.  In any other
    process, return at once.
    """
    global _runtime
    if TEMPLATE_VARIABLE not in os.environ:
        return
    old = _runtime.old_process if _runtime is not None else None
    if old is None:
        old = OldProcess.from_environment(os.environ)
    report = old.report_ready if old is not None else (lambda **_: None)
    import_before_forks()
    fail = old.report_error if old is not None else (lambda reason: None)
    if hold_forks(os.environ, lambda: report(keep_open=True), fail):
        _runtime = None


def import_before_forks() -> None:
    """
    In a worker template, what each worker would import on its own as it
    starts serving, so that it is imported once and shared: the site's
    modules, the services' (the worker of slot 0 runs them), the worker's
    role, and anyio's asyncio backend where the app uses anyio (it loads it
    with the first task group).
    """
    from twisted.application import service  # noqa: F401

    from .http.site_choice import import_serving_modules
    from .workers import worker  # noqa: F401

    import_serving_modules()
    if "anyio" in sys.modules:
        import anyio._backends._asyncio  # noqa: F401


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

# -*- test-case-name: tests.unit.test_registry -*-
"""
graceful: named HTTP/HTTPS servers on Twisted that restart with zero downtime.

    import graceful as g

    s1 = g.server("s1")
    s1.route("/", lambda request: "Hello!")
    s1.set_port(8100, 8200)
    s1.start()
    g.wait()            # SIGUSR1 restarts, SIGTERM drains and exits
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Callable

from ._errors import ConfigError, ExecutableNotAllowed, RestartRefused

if TYPE_CHECKING:
    from twisted.application.service import IService
    from twisted.internet.defer import Deferred

    from .handoff.pipes import RestartFailed
    from .http.routing import Router
    from .http.server import Server
    from .http.streams import EventStream, draining
    from .http.websocket import CLOSE_GOING_AWAY, CLOSE_SERVICE_RESTART, DrainNotice
    from .process.runtime import Runtime

#: pyproject.toml's version, read when first asked for (L{__getattr__}).
__version__: str

#: The public names that need Twisted, imported when first asked for (PEP
#: 562), so that C{graceful ctl}, which imports this package too, loads no
#: Twisted: 112 modules and 0.24 s before it asks a node anything.
_LAZY = {
    "CLOSE_GOING_AWAY": "http.websocket",
    "CLOSE_SERVICE_RESTART": "http.websocket",
    "DrainNotice": "http.websocket",
    "EventStream": "http.streams",
    "RestartFailed": "handoff.pipes",
    "Router": "http.routing",
    "Server": "http.server",
    "draining": "http.streams",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        # Asked for, not read at import: importlib.metadata and the email
        # package it reads METADATA with cost a new generation 15-30 ms.
        return _version()
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'graceful' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"__version__"})


def _process_runtime() -> Runtime:
    from ._process import runtime

    return runtime()

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_SERVICE_RESTART",
    "ConfigError",
    "DrainNotice",
    "EventStream",
    "ExecutableNotAllowed",
    "RestartFailed",
    "RestartRefused",
    "Router",
    "Server",
    "add_service",
    "draining",
    "on_drain",
    "restart",
    "server",
    "set_access_log",
    "set_admin_socket",
    "set_backlog",
    "set_canary",
    "set_directory",
    "set_drain_spread",
    "set_drain_timeout",
    "set_limit_concurrency",
    "set_max_requests",
    "set_max_worker_memory",
    "set_pidfile",
    "set_preload",
    "set_proxy_headers",
    "set_ready_timeout",
    "set_timeout_keep_alive",
    "set_websocket_options",
    "set_worker_timeout",
    "set_workers",
    "set_wsgi_threads",
    "shutdown",
    "wait",
]

def _version() -> str:
    # One version, pyproject.toml's: what pip installed says.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("graceful")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "0+unknown"



def server(name: str = "default") -> Server:
    """
    The server called C{name}: the same object everywhere in the process.
    """
    return _process_runtime().server(name)


def wait() -> None:
    """
    Run until every server has shut down; installs the signal handlers.
    """
    _process_runtime().wait()


def restart(executable: str | None = None) -> Deferred[int]:
    """
    Restart the process: every server in it.  Fires with the new pid.
    """
    return _process_runtime().restart(executable, trusted=True)


def shutdown() -> Deferred[None]:
    """
    Stop accepting, finish what is in flight, and exit.
    """
    return _process_runtime().shutdown()


def set_workers(count: int) -> None:
    """
    How many serving processes share the ports (1: this process alone).
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"workers must be a whole number of 1 or more, not {count!r}")
    runtime = _process_runtime()
    if any(s.listeners or s.has_prepared() for s in runtime.servers.values()):
        raise ConfigError("set_workers() must come before the first start()")
    runtime.settings.workers = count


def set_preload(enabled: bool) -> None:
    """
    Whether workers fork from a template process that imported the app
    (the default), or are each exec'd and import it afresh.
    """
    if not isinstance(enabled, bool):
        raise ConfigError(f"preload must be true or false, not {enabled!r}")
    _process_runtime().settings.preload = enabled


def set_max_requests(count: int, jitter: int = 0) -> None:
    """
    Replace each worker after it has served C{count} requests plus a random
    0 to C{jitter} more, so that they are not all replaced at once (0: never).
    """
    for name, value in (("max_requests", count), ("max_requests_jitter", jitter)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{name} must be a whole number of 0 or more, not {value!r}")
    settings = _process_runtime().settings
    settings.max_requests, settings.max_requests_jitter = count, jitter


def set_max_worker_memory(mib: float) -> None:
    """
    Replace a worker whose resident memory grows past C{mib} MiB (0: never).
    """
    if isinstance(mib, bool) or not isinstance(mib, (int, float)) or not 0 <= mib < float("inf"):
        raise ConfigError(f"max_worker_memory must be a number of MiB, 0 or more, not {mib!r}")
    _process_runtime().settings.max_worker_memory = mib


def set_worker_timeout(seconds: float) -> None:
    """
    Kill and replace a worker that has not reported to the master for
    C{seconds} (0: never).
    """
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 <= seconds < float("inf")
    ):
        raise ConfigError(f"worker_timeout must be a number of seconds, 0 or more, not {seconds!r}")
    _process_runtime().settings.worker_timeout = seconds


def set_directory(path: str) -> None:
    """
    The directory every new process enters (and resolves afresh), such as
    a C{current} symlink to the live release.
    """
    _process_runtime().settings.directory = str(path)


def set_admin_socket(path: str | None) -> None:
    """
    Serve the whole process's admin pages, without a token, on a private
    UNIX socket at C{path} (mode 0600: only its owner can connect), under
    C{/debug/admin}; C{graceful ctl --node unix:PATH} talks to it.  Call it
    before the first C{start()}.
    """
    _process_runtime().set_admin_socket(path)


def _timeout(name: str, seconds: float) -> float:
    # As the config key is checked: a zero, negative or endless timeout
    # would leave a restart or a drain that can never end, or never begin.
    value = float(seconds)
    if not 0 < value < float("inf"):  # also refuses nan
        raise ConfigError(f"{name} must be above 0 and finite, not {seconds!r}")
    return value


def set_drain_timeout(seconds: float) -> None:
    """
    How long a leaving process may spend finishing its connections
    (default 30 s).
    """
    _process_runtime().settings.drain_timeout = _timeout("drain_timeout", seconds)


def set_drain_spread(seconds: float) -> None:
    """
    Spread the closes of WebSockets over C{seconds} while draining (default
    5, or half of a shorter drain_timeout); must be less than drain_timeout.
    """
    settings = _process_runtime().settings
    value = float(seconds)
    if not 0 <= value < settings.drain_timeout:
        raise ConfigError(
            f"drain_spread must be 0 or more and less than drain_timeout "
            f"({settings.drain_timeout:g}), not {seconds!r}"
        )
    settings.drain_spread = value


def set_ready_timeout(seconds: float) -> None:
    """
    How long a new process (or worker) may take to serve (default 15 s).
    """
    _process_runtime().settings.ready_timeout = _timeout("ready_timeout", seconds)


def set_canary(seconds: float, max_error_ratio: float = 0.01) -> None:
    """
    Let each new generation serve beside the old one for C{seconds} first;
    if its share of 5xx answers and reset connections exceeds the old one's
    by more than C{max_error_ratio}, the restart rolls back (0: off).
    """
    from ._settings import check_canary

    settings = _process_runtime().settings
    settings.canary_seconds, settings.canary_max_error_ratio = check_canary(
        seconds, max_error_ratio
    )


def set_pidfile(path: str | None) -> None:
    """
    Keep a pidfile that always names the serving process.
    """
    _process_runtime().set_pidfile(path)


def set_proxy_headers(enabled: bool = True, forwarded_allow_ips: list[str] | None = None) -> None:
    """
    Take the client address, scheme and host from the X-Forwarded-* and
    Forwarded headers of the peers in C{forwarded_allow_ips} (default
    127.0.0.1 and ::1; a UNIX-socket peer always; C{["*"]}: every peer).
    Call it before the first C{start()}.
    """
    from .http.proxy import check_trusted

    settings = _process_runtime().settings
    if forwarded_allow_ips is not None:
        try:
            check_trusted(forwarded_allow_ips)
        except ConfigError as e:
            raise ConfigError(f"forwarded_allow_ips: {e}") from None
        settings.forwarded_allow_ips = list(forwarded_allow_ips)
    settings.proxy_headers = bool(enabled)


def set_access_log(target: str | os.PathLike[str] | None, format: str = "twisted") -> None:
    """
    Write an access-log line for every request: C{target} C{"-"} to the
    process's log, a path to that file (appended to), L{None} nowhere (the
    default); C{format} C{"twisted"}, C{"combined"} (Apache's) or
    C{"json"}.  Call it before the first C{start()}.
    """
    from .http.access_log import ACCESS_LOG_FORMATS

    if format not in ACCESS_LOG_FORMATS:
        raise ConfigError(
            f"access_log_format must be one of {', '.join(ACCESS_LOG_FORMATS)}, not {format!r}"
        )
    if target is not None and not isinstance(target, (str, os.PathLike)):
        raise ConfigError(f'access_log must be "-", a file path or None, not {target!r}')
    path = None if target is None else os.fspath(target)
    if path not in (None, "", "-"):
        # Here, not at start(): the file opens as the site is built.
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise ConfigError(f"access_log: directory not found: {folder}")
    settings = _process_runtime().settings
    settings.access_log, settings.access_log_format = path or None, format


def set_limit_concurrency(count: int) -> None:
    """
    Answer 503 (with C{Retry-After}) beyond C{count} requests in progress
    at once, per server, rather than queue work that cannot be done soon
    (0: no limit, the default).  Call it before the first C{start()}.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ConfigError(f"limit_concurrency must be 0 (no limit) or more, not {count!r}")
    _process_runtime().settings.limit_concurrency = count


def set_backlog(count: int) -> None:
    """
    The listen backlog of the sockets this process binds (default 2048; a
    socket a restart hands over keeps its own).  Call it before the first
    C{start()}.
    """
    from ._settings import check_connection_settings

    settings = _process_runtime().settings
    settings.backlog = check_connection_settings(backlog=count)[0]


def set_timeout_keep_alive(seconds: float) -> None:
    """
    Close a keep-alive connection idle this long between two requests
    (default 5 s).  Call it before the first C{start()}.
    """
    from ._settings import check_connection_settings

    settings = _process_runtime().settings
    settings.timeout_keep_alive = check_connection_settings(timeout_keep_alive=seconds)[1]


def set_wsgi_threads(count: int) -> None:
    """
    The threads that run each WSGI app at most (default 16; gunicorn's
    C{--threads}).  Call it before the first C{start()}.
    """
    from ._settings import check_wsgi_threads

    _process_runtime().settings.wsgi_threads = check_wsgi_threads(count)


def set_websocket_options(max_size: int | None = None, ping_interval: float | None = None) -> None:
    """
    ASGI WebSockets: the largest message an app is sent (default 16 MiB;
    0: no limit) and the seconds between pings (default 20; 0: none).  Call
    it before the first C{start()}.
    """
    from ._settings import check_connection_settings

    settings = _process_runtime().settings
    checked = check_connection_settings(
        ws_max_size=settings.ws_max_size if max_size is None else max_size,
        ws_ping_interval=settings.ws_ping_interval if ping_interval is None else ping_interval,
    )
    settings.ws_max_size, settings.ws_ping_interval = checked[2], checked[3]


def add_service(service: IService) -> None:
    """
    Run a Twisted service beside the servers; across a restart the new
    generation starts it only once the old generation's has stopped.
    """
    _process_runtime().add_service(service)


def on_drain(callback: Callable[[], Any]) -> None:
    """
    Call C{callback()} when this process starts leaving (restart or
    shutdown).
    """
    _process_runtime().on_drain(callback)

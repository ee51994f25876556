"""
The process-wide settings: the C{[graceful]} table of the config, or the
setters of the code API.
"""

from __future__ import annotations

import math
import os
from typing import Any

from attrs import define, field, frozen

from ._errors import ConfigError
from ._sockets import BACKLOG

DEFAULT_DRAIN_SPREAD = 5.0

#: The peers trusted to send proxy headers unless told otherwise (as
#: uvicorn): the loopback addresses; UNIX-socket peers are trusted too.
DEFAULT_FORWARDED_ALLOW_IPS = ("127.0.0.1", "::1")

#: The levels C{log_level} takes.
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


#: What C{cert_reqs} takes: whether an HTTPS client must show a certificate
#: that C{ca_certs} signed.
CERT_REQS = ("none", "optional", "required")
#: What C{tls_min_version} takes.
TLS_VERSIONS = ("1.2", "1.3")

#: What C{http_impl} takes: uvicorn's C{--http} names, and graceful's.  Every
#: one serves with the twisted.web channel unless graceful's own HTTP/1.1
#: channel is there to take C{"auto"}, C{"native"} or C{"httptools"}; C{"h11"}
#: (uvicorn's pure-Python one) is the twisted.web channel too.
HTTP_IMPLS = ("auto", "twisted", "native", "httptools", "h11")

#: The listen backlog of the sockets graceful binds, as uvicorn's default:
#: the kernel caps it at net.core.somaxconn (4096 on Linux 5.4 and later).
DEFAULT_BACKLOG = BACKLOG

#: Seconds an idle keep-alive connection is kept open between requests, as
#: uvicorn's default.
DEFAULT_TIMEOUT_KEEP_ALIVE = 5.0

#: The largest WebSocket message an ASGI app is sent (uvicorn's 16 MiB): a
#: bigger one closes the connection with 1009 rather than filling memory.
DEFAULT_WS_MAX_SIZE = 16 * 1024 * 1024

#: Seconds between the pings an ASGI WebSocket is sent (uvicorn's 20), which
#: keep proxies from dropping a quiet connection; 0: none.
DEFAULT_WS_PING_INTERVAL = 20.0

#: Threads that run each WSGI app at most (gunicorn's C{--threads}): the
#: requests an app has in hand at once.
DEFAULT_WSGI_THREADS = 16


@frozen
class TLSSettings:
    """
    A server's TLS beyond its certificate and key.

    @ivar key_password: the password of an encrypted key file.
    @ivar ca_certs: a PEM file of the authorities whose client certificates
        are accepted.
    @ivar cert_reqs: C{"none"}, C{"optional"} or C{"required"}: client
        certificates.
    @ivar ciphers: an OpenSSL cipher string (TLS 1.2; 1.3's are OpenSSL's).
    @ivar min_version: C{"1.2"} or C{"1.3"}.
    """

    key_password: str | None = None
    ca_certs: str | None = None
    cert_reqs: str = "none"
    ciphers: str | None = None
    min_version: str = "1.2"


def check_tls_settings(
    key_password: object = None,
    ca_certs: object = None,
    cert_reqs: object = "none",
    ciphers: object = None,
    min_version: object = "1.2",
    *,
    min_version_name: str = "tls_min_version",
) -> TLSSettings:
    """
    A server's L{TLSSettings}, checked as the config's keys are, or a
    L{ConfigError} whose line starts with the name that is wrong (the
    config's key, or C{min_version_name} for the lowest version).
    """
    for name, value in (("key_password", key_password), ("ciphers", ciphers)):
        if value is not None and not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, not {value!r}")
    if ca_certs is not None and not isinstance(ca_certs, (str, os.PathLike)):
        raise ConfigError(f"ca_certs must be a file path, not {ca_certs!r}")
    for name, value, allowed in (("cert_reqs", cert_reqs, CERT_REQS),
                                 (min_version_name, min_version, TLS_VERSIONS)):
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
    if cert_reqs != "none" and ca_certs is None:
        raise ConfigError("cert_reqs needs ca_certs: the authorities to check against")
    assert isinstance(cert_reqs, str) and isinstance(min_version, str)
    return TLSSettings(
        key_password,  # type: ignore[arg-type]
        None if ca_certs is None else os.fspath(ca_certs),
        cert_reqs,
        ciphers,  # type: ignore[arg-type]
        min_version,
    )


@define
class Settings:
    """
    The process-wide settings.

    @ivar drain_timeout: seconds a leaving process waits for its connections
        before it aborts them.
    @ivar drain_spread: seconds over which WebSockets are closed while
        draining; L{None}: L{DEFAULT_DRAIN_SPREAD}, or half of a shorter
        drain_timeout.
    @ivar ready_timeout: seconds a new process (or worker) has to serve.
    @ivar workers: serving processes that share the sockets (1: serve alone).
    @ivar max_requests: recycle a worker after this many requests, plus up to
        C{max_requests_jitter} (0: never).
    @ivar max_requests_jitter: see C{max_requests}.
    @ivar max_worker_memory: recycle a worker whose RSS grows past this many
        MiB (0: never).
    @ivar worker_timeout: kill and replace a worker silent for this many
        seconds (0: never).
    @ivar allowed_executables: what a restart asked from outside may run.
    @ivar access_log: C{"-"} for the log, a file path, or L{None}.
    @ivar access_log_format: C{"twisted"}, C{"combined"} (Apache's) or
        C{"json"}.
    @ivar directory: the directory every new process enters.
    @ivar admin_socket: the private admin UNIX socket's path, or L{None}.
    @ivar fd_store: keep the listening sockets in systemd's file descriptor
        store where systemd offers one.
    @ivar proxy_headers: take the client and scheme from C{X-Forwarded-*}
        and C{Forwarded} headers sent by a peer in C{forwarded_allow_ips}.
    @ivar limit_concurrency: answer 503 beyond this many requests in
        progress at once, per server (0: no limit).
    @ivar forwarded_allow_ips: the peers trusted to send them: addresses,
        networks, or C{"*"}; a UNIX-socket peer always is.
    @ivar log_level: the lowest level C{graceful run} logs.
    @ivar log_format: C{"text"}, or C{"json"}: one object a line.
    @ivar log_config: a Python logging config file C{graceful run} logs
        through instead.
    @ivar env_file: a file of environment variables set before the apps
        are imported.
    @ivar app_dir: the directory the apps are imported from (default: the
        current one).
    @ivar pidfile: the pidfile C{graceful run} keeps.
    @ivar reload: C{graceful run} restarts when a file of the app changes.
    @ivar reload_dirs: what it watches besides the app's directory.
    @ivar tls: each server's L{TLSSettings}, by name, where not the defaults.
    @ivar canary_seconds: seconds a new generation serves beside the old
        one before it takes over (0: hand over at once).
    @ivar canary_max_error_ratio: how far its 5xx share may exceed the old
        one's in that window before the restart rolls back.
    @ivar backlog: the listen backlog of the sockets graceful binds.
    @ivar timeout_keep_alive: seconds an idle keep-alive connection is kept
        open between requests.
    @ivar ws_max_size: the largest WebSocket message (bytes) an ASGI app is
        sent; 0: no limit.
    @ivar ws_ping_interval: seconds between pings on ASGI WebSockets; 0:
        none.
    @ivar preload: workers fork from a template process that imported the
        app, rather than each importing it afresh (unless the app started
        threads as it was imported).
    @ivar wsgi_threads: the threads that run each WSGI app at most.
    """

    drain_timeout: float = 30.0
    drain_spread: float | None = None
    ready_timeout: float = 15.0
    workers: int = 1
    max_requests: int = 0
    max_requests_jitter: int = 0
    max_worker_memory: float = 0.0
    worker_timeout: float = 30.0
    allowed_executables: list[str] = field(factory=list)
    access_log: str | None = None
    access_log_format: str = "twisted"
    directory: str | None = None
    admin_socket: str | None = None
    fd_store: bool = True
    proxy_headers: bool = False
    limit_concurrency: int = 0
    forwarded_allow_ips: list[str] = field(factory=lambda: list(DEFAULT_FORWARDED_ALLOW_IPS))
    log_level: str = "info"
    log_format: str = "text"
    log_config: str | None = None
    env_file: str | None = None
    app_dir: str | None = None
    pidfile: str | None = None
    reload: bool = False
    reload_dirs: list[str] = field(factory=list)
    tls: dict[str, TLSSettings] = field(factory=dict)
    canary_seconds: float = 0.0
    canary_max_error_ratio: float = 0.01
    preload: bool = True
    backlog: int = DEFAULT_BACKLOG
    timeout_keep_alive: float = DEFAULT_TIMEOUT_KEEP_ALIVE
    ws_max_size: int = DEFAULT_WS_MAX_SIZE
    ws_ping_interval: float = DEFAULT_WS_PING_INTERVAL
    wsgi_threads: int = DEFAULT_WSGI_THREADS

    @property
    def websocket_options(self) -> dict[str, Any]:
        """
        C{ws_max_size} and C{ws_ping_interval} as autobahn's protocol
        options (its 0s mean no limit and no pings, as ours do).  A failed
        connection gets a close frame before it is dropped, so that a client
        whose message is too big hears 1009, as from uvicorn.
        """
        return {
            "maxMessagePayloadSize": self.ws_max_size,
            "autoPingInterval": self.ws_ping_interval,
            "failByDrop": False,
        }

    @property
    def spread(self) -> float:
        """
        The drain_spread in effect: always less than drain_timeout.
        """
        if self.drain_spread is not None and self.drain_spread < self.drain_timeout:
            return self.drain_spread
        return min(DEFAULT_DRAIN_SPREAD, self.drain_timeout / 2)


def check_canary(seconds: object, max_error_ratio: object) -> tuple[float, float]:
    """
    The canary settings as numbers, or a L{ConfigError} naming the one
    that is wrong.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigError(f"canary_seconds must be a number of seconds, not {seconds!r}")
    if not 0 <= seconds < math.inf:  # also refuses nan
        raise ConfigError(f"canary_seconds must be 0 (off) or more, not {seconds!r}")
    ratio = max_error_ratio
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise ConfigError(f"canary_max_error_ratio must be from 0 to 1, not {ratio!r}")
    return float(seconds), float(ratio)


def check_connection_settings(
    backlog: object = DEFAULT_BACKLOG,
    timeout_keep_alive: object = DEFAULT_TIMEOUT_KEEP_ALIVE,
    ws_max_size: object = DEFAULT_WS_MAX_SIZE,
    ws_ping_interval: object = DEFAULT_WS_PING_INTERVAL,
) -> tuple[int, float, int, float]:
    """
    The connection settings, checked, or a L{ConfigError} naming the one
    that is wrong.
    """
    for name, value in (("backlog", backlog), ("ws_max_size", ws_max_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be a whole number, not {value!r}")
    assert isinstance(backlog, int) and isinstance(ws_max_size, int)
    if backlog < 1:
        raise ConfigError(f"backlog must be 1 or more, not {backlog!r}")
    if ws_max_size < 0:
        raise ConfigError(f"ws_max_size must be 0 (no limit) or more, not {ws_max_size!r}")
    seconds = []
    for name, value in (("timeout_keep_alive", timeout_keep_alive),
                        ("ws_ping_interval", ws_ping_interval)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name} must be a number of seconds, not {value!r}")
        seconds.append(float(value))
    if not 0 < seconds[0] < math.inf:  # also refuses nan
        raise ConfigError(f"timeout_keep_alive must be above 0 and finite, not {timeout_keep_alive!r}")
    if not 0 <= seconds[1] < math.inf:
        raise ConfigError(f"ws_ping_interval must be 0 (off) or more, not {ws_ping_interval!r}")
    return backlog, seconds[0], ws_max_size, seconds[1]


def check_http_impl(value: object) -> str:
    """
    C{value} if C{http_impl} takes it, else a L{ConfigError}.
    """
    if value not in HTTP_IMPLS:
        raise ConfigError(f"http_impl must be one of {', '.join(HTTP_IMPLS)}, not {value!r}")
    assert isinstance(value, str)
    return value


def check_wsgi_threads(value: object) -> int:
    """
    C{value} if C{wsgi_threads} takes it (a whole number of 1 or more),
    else a L{ConfigError}.
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"wsgi_threads must be a whole number of 1 or more, not {value!r}")
    return value

"""
The process-wide settings: the C{[graceful]} table of the config, or the
setters of the code API.
"""

from __future__ import annotations

import math

from attrs import define, field, frozen

from ._errors import ConfigError

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
    @ivar preload: workers fork from a template process that imported the
        app, rather than each importing it afresh.
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
    preload: bool = False

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

# -*- test-case-name: tests.unit.http.test_server_options -*-
"""
The options of a server that the config and C{graceful run} give as keys
too: an app's root_path and lifespan mode, and TLS beyond the certificate
and key (a base of L{graceful.http.server.Server}).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Protocol

from .._errors import ConfigError
from .._settings import Settings, TLSSettings, check_tls_settings

if TYPE_CHECKING:
    from .mounts import AppMounts


class _HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


class ServerOptions:
    """
    Mounting apps with their options, and enabling HTTPS with its.  The
    TLS options land where the config's do, in the process's
    C{settings.tls} under the server's name, so that both are read (and
    checked) alike when the server starts.
    """

    name: str
    runtime: _HasSettings
    cert: str | None
    key: str | None

    @property
    def _apps(self) -> AppMounts:
        raise NotImplementedError  # the server's own, made when first used

    def mount_wsgi(self, prefix: str, app: Callable[..., Any], *, root_path: str = "") -> None:
        """
        Serve everything under C{prefix} with a WSGI app, run in the
        reactor's thread pool.  C{root_path}: the prefix a proxy in front
        strips, put before C{SCRIPT_NAME} (the config's C{root_path}).
        """
        self._apps.mount_wsgi(prefix, app, root_path)

    def mount_asgi(
        self,
        prefix: str,
        app: Callable[..., Any],
        *,
        root_path: str = "",
        lifespan: str = "auto",
    ) -> None:
        """
        Serve everything under C{prefix} with an ASGI app (ASGI 3, or 2),
        on Twisted's asyncio reactor; its lifespan startup runs before the
        process reports ready.  C{root_path}: the prefix a proxy in front
        strips, put before the scope's C{root_path}.  C{lifespan}:
        C{"auto"} runs the app's lifespan if it has one, C{"on"} fails the
        startup (and so a restart) of an app without, C{"off"} never runs
        it (the config's C{root_path} and C{lifespan}).
        """
        self._apps.mount_asgi(prefix, app, root_path, lifespan)

    def enable_https(
        self,
        cert: str | os.PathLike[str],
        key: str | os.PathLike[str],
        *,
        key_password: str | None = None,
        ca_certs: str | os.PathLike[str] | None = None,
        cert_reqs: str = "none",
        ciphers: str | None = None,
        min_version: str = "1.2",
    ) -> None:
        """
        Serve HTTPS with the PEM certificate file C{cert} (its chain may
        follow it) and key file C{key}, read when the server starts.
        C{key_password}: the password of an encrypted key.  C{ca_certs}: a
        PEM file of the authorities whose client certificates count, with
        C{cert_reqs} C{"optional"} or C{"required"} (default C{"none"}: no
        client certificate is asked for).  C{ciphers}: an OpenSSL cipher
        string for TLS 1.2.  C{min_version}: C{"1.2"} or C{"1.3"}.
        """
        try:
            tls = check_tls_settings(
                key_password, ca_certs, cert_reqs, ciphers, min_version,
                min_version_name="min_version",
            )
        except ConfigError as e:
            raise ConfigError(f"server {self.name!r}: {e}") from None
        self.cert, self.key = os.fspath(cert), os.fspath(key)
        by_server = self.runtime.settings.tls
        if tls == TLSSettings():
            by_server.pop(self.name, None)
        else:
            by_server[self.name] = tls

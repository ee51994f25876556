# -*- test-case-name: tests.unit.http.test_server,tests.unit.test_registry -*-
"""
A named server: routes, mounts, ports and TLS, and the listening ports it
serves once started.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from attrs import Factory, define, field
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .._logging import NamedLogger
from .access_log import formatter
from .._settings import Settings, check_http_impl
from .._errors import ConfigError
from .listening import ASGI_ACCEPTS_PER_WAKEUP, Listener, ServerSockets, SocketHost, listen_specs
from .server_options import ServerOptions
from .verify import Verifies
from .._sockets import (
    DEFAULT_UNIX_MODE,
    HeldSocket,
    ListeningSocket,
    ListenSpec,
    check_unix_mode,
    check_unix_path,
    unix_group,
)

if TYPE_CHECKING:
    from twisted.internet.ssl import CertificateOptions
    from twisted.web.resource import IResource

    from .mounts import AppMounts
    from .routing import Handler, Router
    from .site import DrainingSite

# Imported from here before the sockets had a module of their own.
__all__ = [
    "DEFAULT_ADMIN_PREFIX",
    "HeldSocket",
    "Listener",
    "ListeningSocket",
    "Server",
    "ServerHost",
    "access_log_writer",
    "check_listeners_unique",
    "redact_tokens",
]

DEFAULT_ADMIN_PREFIX = "/debug/admin"

class ServerHost(SocketHost, Protocol):
    """
    What a server needs of the process it belongs to: what its sockets
    need, and more.
    """

    apps_started: bool

    def add_lifespan(self, lifespan: Any) -> None:
        "Run this ASGI lifespan's startup before serving."

    def add_operational_pages(self, server: Server) -> None:
        "Mount the admin and health pages C{server} asks for."

    def access_log(self) -> Callable[[str], None] | None:
        "Where access-log lines go."

    @property
    def settings(self) -> Settings:
        "The process's settings (a server reads its proxy headers' there)."

    def start_server(self, server: Server) -> None: ...

    def wait(self) -> None: ...

    def restart(self, executable: str | None = None, trusted: bool = False) -> Deferred[int]: ...

    def shutdown(self) -> Deferred[None]: ...


@define(eq=False)
class Server(ServerOptions, Verifies):
    """
    One named HTTP/HTTPS server of the process; get it with
    C{graceful.server(name)}.  Its C{mount_wsgi}, C{mount_asgi} and
    C{enable_https} are L{ServerOptions}'.
    """

    name: str
    runtime: ServerHost
    # The router and the apps' mounts are made when first used: a master,
    # which serves no request, never makes them, and imports no twisted.web.
    _router: Router | None = field(default=None, alias="router")
    http_ports: list[int] = field(factory=list)
    https_ports: list[int] = field(factory=list)
    unix_sockets: list[str] = field(factory=list)
    unix_socket_mode: int = DEFAULT_UNIX_MODE
    unix_socket_group: int | None = None  # a gid; None: the process's group
    host: str = ""
    cert: str | None = None
    key: str | None = None
    graceful: bool = True
    admin_prefix: str | None = None
    admin_token: str | None = None
    health_path: str | None = None
    http_impl: str = "auto"
    _mounts: AppMounts | None = None
    _claimed: list[tuple[str, str]] = field(factory=list)
    _tls_options: CertificateOptions | None = None
    #: Whether its site serves WSGI apps (the accept batch stays Twisted's).
    _serves_wsgi: bool = False
    _sockets: ServerSockets = field(
        default=Factory(lambda self: ServerSockets(self.name, self.runtime), takes_self=True)
    )
    site: DrainingSite | None = None
    _log = NamedLogger("graceful._server.Server")

    # -- building -----------------------------------------------------------

    @property
    def router(self) -> Router:
        if self._router is None:
            from .routing import Router

            self._router = Router()
        return self._router

    @property
    def _apps(self) -> AppMounts:
        if self._mounts is None:
            from .mounts import AppMounts

            self._mounts = AppMounts(f"server {self.name!r}", self.router)
            for path, what in self._claimed:
                self._mounts.claim_page(path, what)
        return self._mounts

    def route(self, path: str, handler: Handler | None = None) -> Any:
        """
        Serve C{path} with C{handler(request)}, which returns bytes, str, a
        Deferred or a coroutine.  Without C{handler}, a decorator.
        """
        return self._apps.route(path, handler)

    def mount(self, prefix: str, resource: IResource) -> None:
        """
        Serve everything under C{prefix} with a twisted.web resource.
        """
        self._apps.mount(prefix, resource)

    def set_port(self, *ports: int) -> None:
        self.http_ports = _check_ports(ports)

    def set_https_port(self, *ports: int) -> None:
        self.https_ports = _check_ports(ports)

    def set_unix_socket(self, *paths: str, mode: int | None = None,
                        group: int | str | None = None) -> None:
        """
        Listen on UNIX sockets at C{paths} (beside the ports, or instead of
        them), the usual way behind nginx.  C{mode} is the files' mode
        (default 0o660: owner and group), C{group} their group, a name or
        number (default: the process's; give nginx's).  A restart hands them
        over; the files are removed only at the final shutdown.
        """
        checked = [_unix_path(path) for path in paths]
        if len(set(checked)) != len(checked):
            raise ConfigError(f"server {self.name!r}: a UNIX socket path is given twice")
        self.unix_sockets = checked
        if mode is not None:
            self.unix_socket_mode = check_unix_mode(mode)
        if group is not None:
            self.unix_socket_group = unix_group(group)

    def set_host(self, host: str) -> None:
        """
        Listen on one address only (default: every interface).
        """
        self.host = host

    def set_graceful(self, enabled: bool) -> None:
        """
        C{False}: a restart closes this server's ports and the new process
        binds them again (connections are refused in between).
        """
        self.graceful = bool(enabled)

    def set_http_impl(self, impl: str) -> None:
        """
        The HTTP/1.1 channel: C{"auto"}, C{"native"} or C{"httptools"} for
        graceful's own where it can serve (L{graceful.http.site_choice}),
        C{"twisted"} or C{"h11"} for twisted.web's.
        """
        self.http_impl = check_http_impl(impl)

    def enable_admin(
        self, prefix: str = DEFAULT_ADMIN_PREFIX, token: str | None = None
    ) -> None:
        self.admin_prefix = prefix.rstrip("/") or DEFAULT_ADMIN_PREFIX
        self.admin_token = token

    def enable_health(self, path: str = "/healthz") -> None:
        self.health_path = path

    # -- running ------------------------------------------------------------

    @property
    def https_enabled(self) -> bool:
        return self.cert is not None

    def listen_specs(self) -> list[ListenSpec]:
        """
        Every port this server asks for.  With HTTPS enabled and no HTTPS port
        set, the C{set_port} ports serve HTTPS, as in GoFrame.
        """
        if self.https_enabled and not self.https_ports:
            return listen_specs(self.name, self.host, [], self.http_ports, self.unix_sockets)
        return listen_specs(
            self.name, self.host, self.http_ports, self.https_ports, self.unix_sockets
        )

    def prepare(self) -> None:
        """
        Everything that can fail, done before serving: load TLS, take the
        inherited sockets and bind the new ones.  On failure nothing this
        server bound is left open.
        """
        specs = self.listen_specs()
        if not specs:
            raise ConfigError(
                f"server {self.name!r} has no port: call set_port() or set_unix_socket()"
            )
        if self.https_ports and not self.https_enabled:
            raise ConfigError(
                f"server {self.name!r} has HTTPS ports but no certificate: "
                "call enable_https()"
            )
        # These pages join the router as the site is built, over the app's;
        # claimed when the apps' mounts are made (now, if they are).
        pages = [(self.admin_prefix, "enable_admin()"), (self.health_path, "enable_health()")]
        self._claimed = [(path, what) for path, what in pages if path is not None]
        if self._mounts is not None:
            for path, what in self._claimed:
                self._mounts.claim_page(path, what)
        if self.https_enabled:
            assert self.cert is not None and self.key is not None
            # Imported here: OpenSSL costs a new process ~0.1 s of start-up,
            # which a server without HTTPS should not pay in every handoff.
            from .tls import load_tls_options

            self._tls_options = load_tls_options(
                self.cert, self.key, self.runtime.settings.tls.get(self.name)
            )
        self._sockets.prepare(
            specs,
            self.graceful,
            self.unix_socket_mode,
            self.unix_socket_group,
            https_ports=bool(self.https_ports),
            backlog=self.runtime.settings.backlog,
        )

    @property
    def listeners(self) -> list[Listener]:
        "The ports it listens on, once it serves."
        return self._sockets.listeners

    def has_prepared(self) -> bool:
        """
        Whether sockets are prepared and not served yet.
        """
        return self._sockets.has_prepared()

    def prepared_specs(self) -> list[ListenSpec]:
        return self._sockets.prepared_specs()

    def take_prepared(self) -> list[HeldSocket]:
        """
        Hand the prepared sockets over (to a master, which holds them for
        its workers and serves nothing).
        """
        return self._sockets.take_prepared()

    def release_prepared(self) -> None:
        self._sockets.release_prepared()

    @property
    def _prepared(self) -> list[HeldSocket]:
        # The sockets prepared and not served yet, where tests put theirs.
        return self._sockets.prepared

    @property
    def _wsgi_mounts(self) -> list[tuple[str, Any]]:
        return self._apps.wsgi_apps

    def serve(self) -> None:
        """
        Adopt the prepared sockets and serve on them.
        """
        if self.site is None:
            self.site = self._build_site()
        tls_factory = None
        if self._tls_options is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            tls_factory = TLSMemoryBIOFactory(self._tls_options, False, self.site.over_tls())
        self._sockets.adopt(
            self.site, tls_factory, self.unix_socket_mode, self.unix_socket_group,
            hold=(self._apps.asgi or bool(self.verify_paths)) and not self.runtime.apps_started,
            accepts=ASGI_ACCEPTS_PER_WAKEUP if self._apps.asgi and not self._serves_wsgi else None,
        )
        from .site_choice import freeze_heap

        freeze_heap()

    def _build_site(self) -> DrainingSite:
        from .proxy import site_root
        from .site_choice import build_site

        reactor = self.runtime.reactor
        self._serves_wsgi = bool(self._apps.wsgi_apps)
        built = self._apps.build(
            reactor, self.runtime.add_lifespan, self.runtime.settings.websocket_options,
            self.runtime.settings.wsgi_threads,
        )
        self.runtime.add_operational_pages(self)
        root = site_root(self.router, self.runtime.settings)
        return build_site(self.name, self.http_impl, self.runtime, self.router, built, root)

    def resume_accepting(self) -> None:
        """
        Accept on the ports held while the ASGI apps started.
        """
        self._sockets.resume_accepting()

    def start(self) -> None:
        """
        Listen now, adopting sockets a restart passed on; returns at once.
        """
        self.runtime.start_server(self)

    def run(self) -> None:
        """
        C{start()} then C{graceful.wait()}: for one-server programs.
        """
        self.start()
        self.runtime.wait()

    @property
    def ports(self) -> list[int]:
        """
        The bound port numbers, once started (UNIX sockets aside).
        """
        return [listener.number for listener in self.listeners if listener.path is None]

    @property
    def in_flight(self) -> int:
        return self.site.in_flight if self.site is not None else 0

    def restart(self, executable: str | None = None) -> Deferred[int]:
        """
        Restart the whole process (every server in it); fires with the new
        process's pid once it serves.
        """
        return self.runtime.restart(executable, trusted=True)

    def shutdown(self) -> Deferred[None]:
        """
        Shut the process down gracefully.
        """
        return self.runtime.shutdown()

    def stop_accepting(self) -> list[Deferred[None]]:
        """
        Close this process's copy of every listening socket; another process
        holding a copy keeps accepting on it.
        """
        return self._sockets.stop_accepting()

    def passed_sockets(self) -> Sequence[tuple[ListenSpec, int]]:
        return self._sockets.passed_sockets() if self.graceful else []


def _unix_path(path: Any) -> str:
    if not isinstance(path, str):
        raise ConfigError(f"a UNIX socket path must be a string, not {path!r}")
    return check_unix_path(path)


def _check_ports(ports: Sequence[int]) -> list[int]:
    checked = []
    for port in ports:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"port must be a number from 0 to 65535, not {port!r}")
        checked.append(port)
    return checked


def check_listeners_unique(
    servers: Sequence[Server], server: Server, admin_socket: str | None
) -> None:
    """
    Refuse a port or UNIX socket of C{server} that another started server
    (or the admin socket) already uses.
    """
    others = [s for s in servers if s is not server]
    taken = {
        (spec.host, spec.port): other.name
        for other in others
        for spec in other.listen_specs()
        if spec.port and (other.listeners or other.has_prepared())
    }
    paths = {
        spec.path: other.name
        for other in others
        for spec in other.listen_specs()
        if spec.path is not None and (other.listeners or other.has_prepared())
    }
    if admin_socket:
        paths[admin_socket] = "the admin socket"
    for spec in server.listen_specs():
        if spec.path is not None and spec.path in paths:
            raise ConfigError(
                f"UNIX socket {spec.path} is used twice "
                f"({paths[spec.path]} and server {server.name!r})"
            )
        key = (spec.host, spec.port)
        if spec.port and key in taken:
            raise ConfigError(
                f"port {spec.port} is used twice (servers {taken[key]!r} and {server.name!r})"
            )
        if spec.port:
            taken[key] = server.name


def access_log_writer(target: str | None, style: str = "twisted") -> Callable[[str], None] | None:
    """
    Where access-log lines go: C{"-"} for the log, a file path, or nowhere;
    every line with its query tokens redacted, in the format C{style}
    (L{ACCESS_LOG_FORMATS}).
    """
    if not target:
        return None
    shape = formatter(style)
    if target == "-":
        log = Logger(namespace="graceful.access")
        return lambda line: log.info("{line}", line=shape(redact_tokens(line)))
    handle = open(target, "a", buffering=1, encoding="utf-8")

    def write(line: str) -> None:
        handle.write(shape(redact_tokens(line)) + "\n")

    return write


#: A C{token} in a query string: the admin's sign-in URL (C{prefix/?token=}),
#: in the request line or in the Referer of the requests its page makes.
_QUERY_TOKEN = re.compile(r"([?&]token=)[^&\s\"#]*")


def redact_tokens(line: str) -> str:
    """
    C{GET /debug/admin/?token=s3cret} -> C{GET /debug/admin/?token=REDACTED}:
    access logs are kept longer and read by more people than the token.
    """
    if "token=" not in line:  # the common line pays for one scan
        return line
    return _QUERY_TOKEN.sub(r"\1REDACTED", line)

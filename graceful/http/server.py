"""
A named server: routes, mounts, ports and TLS, and the listening ports it
serves once started.
"""

from __future__ import annotations

import gc
import re
import socket
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from attrs import Factory, define, field, frozen
from twisted.internet import tcp, unix
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.resource import IResource

from .._logging import NamedLogger
from .site import DrainingSite
from .._errors import ConfigError
from .routing import Handler, Router, ServedPaths, WSGIOnAnySocket
from .._status import PortStatus
from .._sockets import (
    DEFAULT_UNIX_MODE,
    HeldSocket,
    ListeningSocket,
    ListenSpec,
    bind_socket,
    bind_unix_socket,
    check_unix_mode,
    check_unix_path,
    set_unix_group,
    unix_group,
)

if TYPE_CHECKING:
    from twisted.internet.ssl import CertificateOptions

    from .._sockets import InheritedSockets

DEFAULT_ADMIN_PREFIX = "/debug/admin"

#: What C{http_impl} may name: graceful's own HTTP/1.1 channel, or twisted.web's.
HTTP_IMPLS = ("native", "twisted")


class ServerHost(Protocol):
    """
    What a server needs of the process it belongs to.
    """

    @property
    def reactor(self) -> Any: ...

    pid: int
    generation: int
    inherited: InheritedSockets
    apps_started: bool

    @property
    def is_worker(self) -> bool:
        "Whether the process is a worker, which binds no socket itself."

    def socket_missing(self, spec: ListenSpec) -> None:
        "A worker's config asks for a socket its master did not pass."

    def own_unix_file(self, path: str | None) -> None:
        "Remove this UNIX socket file at the final shutdown."

    def add_lifespan(self, lifespan: Any) -> None:
        "Run this ASGI lifespan's startup before serving."

    def add_operational_pages(self, server: Server) -> None:
        "Mount the admin and health pages C{server} asks for."

    def access_log(self) -> Callable[[str], None] | None:
        "Where access-log lines go."

    def start_server(self, server: Server) -> None: ...

    def wait(self) -> None: ...

    def restart(self, executable: str | None = None, trusted: bool = False) -> Deferred[int]: ...

    def shutdown(self) -> Deferred[None]: ...


@frozen
class Listener:
    """
    A port a started server listens on.
    """

    spec: ListenSpec
    port: IListeningPort
    #: Read once: a Twisted port that stopped listening no longer knows its
    #: number, and the admin status still shows it while the process drains.
    #: 0 for a UNIX socket.
    number: int = field(
        init=False,
        default=Factory(
            lambda self: int(getattr(self.port.getHost(), "port", 0)), takes_self=True
        ),
    )

    @property
    def tls(self) -> bool:
        return self.spec.tls

    @property
    def path(self) -> str | None:
        """
        The UNIX socket's path; C{None} for a TCP port.
        """
        return self.spec.path

    def describe(self) -> PortStatus:
        """
        Its entry in the status's C{ports}.
        """
        if self.spec.path is not None:
            return PortStatus(unix=self.spec.path, tls=self.tls)
        return PortStatus(port=self.number, tls=self.tls)


@define(eq=False)
class Server:
    """
    One named HTTP/HTTPS server of the process; get it with
    C{graceful.server(name)}.
    """

    name: str
    runtime: ServerHost
    router: Router = field(factory=Router)
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
    http_impl: str = "native"  # where it can serve (an ASGI app, httptools), else twisted
    _wsgi_mounts: list[tuple[str, Any]] = field(factory=list)
    _asgi_mounts: list[tuple[str, Any]] = field(factory=list)
    _served: ServedPaths = field(
        default=Factory(lambda self: ServedPaths(f"server {self.name!r}"), takes_self=True)
    )
    #: Ports adopted but not read from until the ASGI apps have started.
    _held: list[Any] = field(factory=list)
    _prepared: list[HeldSocket] = field(factory=list)
    _tls_options: CertificateOptions | None = None
    listeners: list[Listener] = field(factory=list)
    site: DrainingSite | None = None
    _asgi_mounts_built: bool = False
    _log = NamedLogger("graceful._server.Server")

    # -- building -----------------------------------------------------------

    def route(self, path: str, handler: Handler | None = None) -> Any:
        """
        Serve C{path} with C{handler(request)}, which returns bytes, str, a
        Deferred or a coroutine.  Without C{handler}, a decorator.
        """
        self._served.claim(path, "route()")
        return self.router.route(path, handler)

    def mount(self, prefix: str, resource: IResource) -> None:
        """
        Serve everything under C{prefix} with a twisted.web resource.
        """
        self._served.claim(prefix, "mount()")
        self.router.mount(prefix, resource)

    def mount_wsgi(self, prefix: str, app: Callable[..., Any]) -> None:
        """
        Serve everything under C{prefix} with a WSGI app, run in the
        reactor's thread pool.
        """
        self._served.claim(prefix, "mount_wsgi()")
        self._wsgi_mounts.append((prefix, app))

    def mount_asgi(self, prefix: str, app: Callable[..., Any]) -> None:
        """
        Serve everything under C{prefix} with an ASGI app (ASGI 3, or 2),
        on Twisted's asyncio reactor; its lifespan startup runs before the
        process reports ready.
        """
        from ..asgi.resource import asyncio_reactor_running, ensure_asyncio_reactor

        self._served.claim(prefix, "mount_asgi()")
        ensure_asyncio_reactor()
        if not asyncio_reactor_running():
            raise ConfigError(
                "ASGI apps need Twisted's asyncio reactor, but another reactor is "
                "installed: mount the app before twisted.internet.reactor is imported"
            )
        self._asgi_mounts.append((prefix, app))

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

    def enable_https(self, cert: str, key: str) -> None:
        self.cert, self.key = str(cert), str(key)

    def set_graceful(self, enabled: bool) -> None:
        """
        C{False}: a restart closes this server's ports and the new process
        binds them again (connections are refused in between).
        """
        self.graceful = bool(enabled)

    def enable_admin(
        self, prefix: str = DEFAULT_ADMIN_PREFIX, token: str | None = None
    ) -> None:
        self.admin_prefix = prefix.rstrip("/") or DEFAULT_ADMIN_PREFIX
        self.admin_token = token

    def enable_health(self, path: str = "/healthz") -> None:
        self.health_path = path

    def set_http_impl(self, impl: str) -> None:
        "C{'native'} (graceful's own HTTP/1.1 channel) or C{'twisted'} (twisted.web's)."
        self.http_impl = _check_impl(self.name, impl)

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
            plain: list[int] = []
            secure = self.http_ports
        else:
            plain, secure = self.http_ports, self.https_ports
        specs = [
            ListenSpec(self.name, False, port, self.host, i) for i, port in enumerate(plain)
        ]
        specs += [
            ListenSpec(self.name, True, port, self.host, i) for i, port in enumerate(secure)
        ]
        specs += [
            ListenSpec(self.name, False, 0, "", i, path)
            for i, path in enumerate(self.unix_sockets)
        ]
        return specs

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
        # These pages join the router as the site is built, over the app's.
        pages = [(self.admin_prefix, "enable_admin()"), (self.health_path, "enable_health()")]
        for path, what in pages:
            if path is not None:
                self._served.claim(path, what, keep=False)
        if self.https_enabled:
            assert self.cert is not None and self.key is not None
            # Imported here: OpenSSL costs a new process ~0.1 s of start-up,
            # which a server without HTTPS should not pay in every handoff.
            from .tls import load_tls_options

            self._tls_options = load_tls_options(self.cert, self.key)
        try:
            for spec in specs:
                prepared = self._socket_for(spec)
                if prepared is not None:
                    self._prepared.append(prepared)
                    # Ours to remove at the final shutdown (if still this file).
                    self.runtime.own_unix_file(spec.path)
        except BaseException:
            self.release_prepared()
            raise

    def _socket_for(self, spec: ListenSpec) -> HeldSocket | None:
        inherited = self.runtime.inherited.claim(spec) if self.graceful else None
        if inherited is not None:
            return HeldSocket(spec, inherited.fd, inherited, inherited.family(), inherited=True)
        if self.runtime.is_worker:
            # Only the master binds, so that every worker shares the socket.
            self.runtime.socket_missing(spec)
            return None
        try:
            if spec.path is not None:
                sock = bind_unix_socket(spec.path, self.unix_socket_mode, self.unix_socket_group)
            else:
                sock = bind_socket(spec.host, spec.port)
        except ConfigError as e:
            if spec.path is not None:
                key = "unix_sockets"
            else:
                key = "https_ports" if spec.tls and self.https_ports else "ports"
            raise ConfigError(f"servers.{self.name}.{key}: {e}") from None
        return HeldSocket(spec, sock.fileno(), sock, sock.family)

    def has_prepared(self) -> bool:
        """
        Whether sockets are prepared and not served yet.
        """
        return bool(self._prepared)

    def prepared_specs(self) -> list[ListenSpec]:
        return [prepared.spec for prepared in self._prepared]

    def take_prepared(self) -> list[HeldSocket]:
        """
        Hand the prepared sockets over (to a master, which holds them for
        its workers and serves nothing).
        """
        prepared, self._prepared = self._prepared, []
        return prepared

    def release_prepared(self) -> None:
        for prepared in self._prepared:
            prepared.close()
        self._prepared.clear()

    def serve(self) -> None:
        """
        Adopt the prepared sockets and serve on them.
        """
        reactor = self.runtime.reactor
        if self.site is None:
            self.site = self._build_site()
        tls_factory = None
        if self._tls_options is not None:
            from twisted.protocols.tls import TLSMemoryBIOFactory

            tls_factory = TLSMemoryBIOFactory(self._tls_options, False, self.site.over_tls())
        prepared, self._prepared = self._prepared, []
        try:
            for p in prepared:
                factory: Any = tls_factory if p.spec.tls else self.site
                if p.family == socket.AF_UNIX:
                    port = adopt_unix_port(
                        reactor, p.fd, factory, self.unix_socket_mode, self.unix_socket_group
                    )
                else:
                    port = reactor.adoptStreamPort(p.fd, p.family, factory)
                # adoptStreamPort made its own copy of the descriptor.
                p.close()
                if self.runtime.is_worker:
                    _accept_one_at_a_time(port)
                if self._asgi_mounts_built and not self.runtime.apps_started:
                    # Not one connection before the apps' startup is done: the
                    # old process accepts them meanwhile.
                    port.stopReading()
                    self._held.append(port)
                listener = Listener(p.spec, port)
                self.listeners.append(listener)
                self._log.info(
                    "{pid}: {scheme} server {how} listening on [{address}]",
                    pid=self.runtime.pid,
                    scheme=p.spec.scheme,
                    how="reloaded" if p.inherited and self.runtime.generation > 1 else "started",
                    address=f"unix:{p.spec.path}" if p.spec.path else f":{listener.number}",
                    port=listener.number,
                    server=self.name,
                )
            _freeze_heap()
        except BaseException:
            for p in prepared:
                if p.fd >= 0:
                    try:
                        p.close()
                    except OSError:
                        pass
            raise

    def _build_site(self) -> DrainingSite:
        only_apps = not self.router.served_paths()
        wsgi, self._wsgi_mounts = self._wsgi_mounts, []
        for prefix, app in wsgi:
            self.router.mount(prefix, WSGIOnAnySocket(self.runtime.reactor, app))
        mounted = _mount_asgi_apps(self.router, self._asgi_mounts, self.runtime)
        self._asgi_mounts_built = bool(mounted)
        self._asgi_mounts.clear()
        self.runtime.add_operational_pages(self)
        site = _site(self, mounted, wsgi if only_apps else None)
        return site

    def resume_accepting(self) -> None:
        """
        Accept on the ports held while the ASGI apps started.
        """
        held, self._held = self._held, []
        for port in held:
            port.startReading()

    def start(self) -> None:
        """
        Listen now (adopting inherited sockets where a restart passed them);
        returns at once.
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
        stopped = [listener.port.stopListening() for listener in self.listeners]
        return [d for d in stopped if d is not None]

    def passed_sockets(self) -> Sequence[tuple[ListenSpec, int]]:
        if not self.graceful:
            return []
        # Adopted ports are tcp.Port objects, which have the descriptor.
        return [(l.spec, l.port.fileno()) for l in self.listeners]  # type: ignore[attr-defined]


class _SharedUNIXPort(unix.Port):
    """
    A UNIX port that leaves the socket working, and its file in place, for
    the other processes that hold it.
    """

    _shouldShutdown = False

    def connectionLost(self, reason: Any) -> None:
        # Past unix.Port's, which unlinks the file.
        tcp.Port.connectionLost(self, reason)


def adopt_unix_port(
    reactor: Any, fd: int, factory: Any, mode: int, group: int | None = None
) -> Any:
    """
    Serve a listening UNIX socket that other processes share; its file gets
    C{mode} and, if given, C{group}, as the config now says.

    Not C{reactor.adoptStreamPort}: Twisted's UNIX port chmods the file to
    0o666 when it starts listening, and when it stops it calls shutdown(2),
    which makes the kernel refuse connections on every copy of the socket,
    and unlinks the file, which the next process owns by then.
    """
    port = _SharedUNIXPort._fromListeningDescriptor(reactor, fd, factory)
    # startListening chmods the file to this mode.
    port.mode = mode
    if group is not None:
        set_unix_group(port.port, group)
    port.startListening()
    return port


_heap_frozen = False


def _freeze_heap() -> None:
    """
    Once serving starts, what the process imported and built is kept out
    of the collector's full passes: under ASGI load a full collection ran
    every ~0.5 s and took 30-50 ms, the p99 (raw ASGI p99 29 ms -> 6 ms).
    """
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.freeze()


def _unix_path(path: Any) -> str:
    if not isinstance(path, str):
        raise ConfigError(f"a UNIX socket path must be a string, not {path!r}")
    return check_unix_path(path)


def _accept_one_at_a_time(port: Any) -> None:
    """
    Workers share each socket and all wake for a new connection; Twisted
    accepts up to a growing batch per wakeup, so one worker could take a
    whole burst (64 connections against 2, measured).  One per wakeup lets
    every worker take its share.
    """
    read = port.doRead

    def doRead() -> None:
        port.numberAccepts = 1
        read()

    port.doRead = doRead


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


def access_log_writer(target: str | None) -> Callable[[str], None] | None:
    """
    Where access-log lines go: C{"-"} for the log, a file path, or nowhere;
    every line with its query tokens redacted.
    """
    if not target:
        return None
    if target == "-":
        log = Logger(namespace="graceful.access")
        return lambda line: log.info("{line}", line=redact_tokens(line))
    handle = open(target, "a", buffering=1, encoding="utf-8")

    def write(line: str) -> None:
        handle.write(redact_tokens(line) + "\n")

    return write


def _mount_asgi_apps(
    router: Router, mounts: list[tuple[str, Any]], runtime: ServerHost
) -> list[Any]:
    """
    Mount each ASGI app on C{router}, with one lifespan per app even when it
    is mounted twice; return the resources mounted.
    """
    if not mounts:
        return []
    from ..asgi.resource import ASGIResource, Lifespan

    lifespans: dict[int, Lifespan] = {}
    mounted = []
    for prefix, app in mounts:
        resource = ASGIResource(app, prefix, lifespans.get(id(app)))
        if id(app) not in lifespans:
            lifespans[id(app)] = resource.lifespan
            runtime.add_lifespan(resource.lifespan)
        router.mount(prefix, resource)
        mounted.append(resource)
    return mounted


def _native_dispatch(server: Server, mounted: list[Any], wsgi: list[tuple[str, Any]]) -> Any:
    """
    The native channel's dispatch for C{server}'s ASGI and WSGI apps, or
    C{None} where twisted.web serves it: asked to, or httptools missing.
    """
    if server.http_impl == "twisted":
        return None
    try:
        from .native_site import prefix_dispatch
    except ImportError:  # httptools is not installed: graceful[standard]
        return None
    apps: list[tuple[bytes, Any]] = []
    if mounted:
        from ..asgi.native import NativeASGI

        apps += [
            (r.root_path.encode("utf-8"), NativeASGI(r.app, r.root_path, r.lifespan))
            for r in mounted
        ]
    if wsgi:
        from .wsgi_native import NativeWSGI

        reactor = server.runtime.reactor
        apps += [
            (prefix.rstrip("/").encode("utf-8"), NativeWSGI(reactor, app, prefix))
            for prefix, app in wsgi
        ]
    prefixes = {prefix for prefix, _ in apps}
    others = [p for p in server.router.served_paths() if p not in prefixes]
    return prefix_dispatch(apps, others)


def _site(server: Server, mounted: list[Any], wsgi: list[tuple[str, Any]] | None) -> DrainingSite:
    """
    The site of C{server}: on the native channel where it serves nothing
    but ASGI and WSGI apps (and the admin and health pages; C{wsgi} is
    C{None} when it serves more), unless told otherwise.
    """
    runtime = server.runtime
    options: dict[str, Any] = dict(
        server_name=server.name, access_log=runtime.access_log(), reactor=runtime.reactor
    )
    native = None
    if wsgi is not None and (mounted or wsgi):
        native = _native_dispatch(server, mounted, wsgi)
    if native is not None:
        from .native_site import NativeSite

        site: DrainingSite = NativeSite(server.router, native, **options)
    else:
        site = DrainingSite(server.router, **options)
    if mounted:
        from ..asgi.resource import ASGIRequest

        # Its requests reach an ASGI app before their body has arrived.
        site.requestFactory = ASGIRequest
    return site


def _check_impl(name: str, impl: Any) -> str:
    if impl not in HTTP_IMPLS:
        raise ConfigError(f"server {name!r}: http_impl must be 'native' or 'twisted', not {impl!r}")
    return str(impl)


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

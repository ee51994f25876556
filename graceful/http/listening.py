# -*- test-case-name: tests.unit.http.test_server,tests.unit.test_unix_sockets -*-
"""
A server's listening sockets: bound or inherited before it serves, adopted
as the reactor's ports, held shut while its ASGI apps start, and passed on
at a restart.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from attrs import Factory, define, field, frozen
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort

from .._errors import ConfigError
from .._logging import NamedLogger
from .._sockets import BACKLOG, HeldSocket, ListenSpec, bind_socket, bind_unix_socket
from .._status import PortStatus

if TYPE_CHECKING:
    from .._sockets import InheritedSockets


class SocketHost(Protocol):
    """
    What a server's sockets need of the process they belong to.
    """

    @property
    def reactor(self) -> Any: ...

    pid: int
    generation: int
    inherited: InheritedSockets

    @property
    def is_worker(self) -> bool:
        "Whether the process is a worker, which binds no socket itself."

    def socket_missing(self, spec: ListenSpec) -> None:
        "A worker's config asks for a socket its master did not pass."

    def own_unix_file(self, path: str | None) -> None:
        "Remove this UNIX socket file at the final shutdown."


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


def listen_specs(
    name: str, host: str, plain: Sequence[int], secure: Sequence[int], unix_paths: Sequence[str]
) -> list[ListenSpec]:
    """
    Every socket server C{name} asks for: its plain and TLS ports on
    C{host}, and its UNIX sockets.
    """
    specs = [ListenSpec(name, False, port, host, i) for i, port in enumerate(plain)]
    specs += [ListenSpec(name, True, port, host, i) for i, port in enumerate(secure)]
    specs += [ListenSpec(name, False, 0, "", i, path) for i, path in enumerate(unix_paths)]
    return specs


@define(eq=False)
class ServerSockets:
    """
    The sockets of one named server.

    @ivar listeners: the ports it listens on, once it serves.
    @ivar prepared: the sockets bound or inherited, not served yet.
    """

    name: str
    host: SocketHost
    listeners: list[Listener] = field(factory=list)
    #: Ports adopted but not read from until the ASGI apps have started.
    _held: list[Any] = field(factory=list)
    prepared: list[HeldSocket] = field(factory=list)
    # The lines keep the namespace they had when the server kept its sockets.
    _log = NamedLogger("graceful._server.Server")

    def prepare(
        self,
        specs: Sequence[ListenSpec],
        graceful: bool,
        unix_mode: int,
        unix_group: int | None,
        https_ports: bool,
        backlog: int = BACKLOG,
    ) -> None:
        """
        Take the inherited sockets (if C{graceful}) and bind the new ones.
        On failure nothing bound here is left open.

        @param https_ports: whether the server's HTTPS ports were set apart
            from its plain ones (for the key an error names).
        @param backlog: the listen backlog of the sockets bound here (an
            inherited socket keeps the one it was bound with).
        """
        try:
            for spec in specs:
                prepared = self._socket_for(
                    spec, graceful, unix_mode, unix_group, https_ports, backlog
                )
                if prepared is not None:
                    self.prepared.append(prepared)
                    # Ours to remove at the final shutdown (if still this file).
                    self.host.own_unix_file(spec.path)
        except BaseException:
            self.release_prepared()
            raise

    def _socket_for(
        self,
        spec: ListenSpec,
        graceful: bool,
        unix_mode: int,
        unix_group: int | None,
        https_ports: bool,
        backlog: int,
    ) -> HeldSocket | None:
        inherited = self.host.inherited.claim(spec) if graceful else None
        if inherited is not None:
            return HeldSocket(spec, inherited.fd, inherited, inherited.family(), inherited=True)
        if self.host.is_worker:
            # Only the master binds, so that every worker shares the socket.
            self.host.socket_missing(spec)
            return None
        try:
            if spec.path is not None:
                sock = bind_unix_socket(spec.path, unix_mode, unix_group, backlog)
            else:
                sock = bind_socket(spec.host, spec.port, backlog)
        except ConfigError as e:
            if spec.path is not None:
                key = "unix_sockets"
            else:
                key = "https_ports" if spec.tls and https_ports else "ports"
            raise ConfigError(f"servers.{self.name}.{key}: {e}") from None
        return HeldSocket(spec, sock.fileno(), sock, sock.family)

    def has_prepared(self) -> bool:
        """
        Whether sockets are prepared and not served yet.
        """
        return bool(self.prepared)

    def prepared_specs(self) -> list[ListenSpec]:
        return [prepared.spec for prepared in self.prepared]

    def take_prepared(self) -> list[HeldSocket]:
        """
        Hand the prepared sockets over (to a master, which holds them for
        its workers and serves nothing).
        """
        prepared, self.prepared = self.prepared, []
        return prepared

    def release_prepared(self) -> None:
        for prepared in self.prepared:
            prepared.close()
        self.prepared.clear()

    def adopt(
        self,
        factory: Any,
        tls_factory: Any,
        unix_mode: int,
        unix_group: int | None,
        hold: bool,
        accepts: int | None = None,
    ) -> None:
        """
        Adopt the prepared sockets as ports serving C{factory} (C{tls_factory}
        on the TLS ones); with C{hold}, read from none until
        L{resume_accepting}.  C{accepts}: at most so many connections a
        wakeup (a worker takes 1 whatever it says); C{None}, Twisted's batch.
        """
        reactor = self.host.reactor
        prepared, self.prepared = self.prepared, []
        try:
            for p in prepared:
                serving: Any = tls_factory if p.spec.tls else factory
                if p.family == socket.AF_UNIX:
                    # Twisted's transports come with the reactor, which the
                    # entry point chooses once the config is read.
                    from .unix_port import adopt_unix_port

                    port = adopt_unix_port(reactor, p.fd, serving, unix_mode, unix_group)
                else:
                    port = reactor.adoptStreamPort(p.fd, p.family, serving)
                # adoptStreamPort made its own copy of the descriptor.
                p.close()
                if self.host.is_worker:
                    accept_at_most(port, 1)
                elif accepts is not None:
                    accept_at_most(port, accepts)
                if hold:
                    # Not one connection before the apps' startup is done: the
                    # old process accepts them meanwhile.
                    port.stopReading()
                    self._held.append(port)
                listener = Listener(p.spec, port)
                self.listeners.append(listener)
                self._log.info(
                    "{pid}: {scheme} server {how} listening on [{address}]",
                    pid=self.host.pid,
                    scheme=p.spec.scheme,
                    how="reloaded" if p.inherited and self.host.generation > 1 else "started",
                    address=f"unix:{p.spec.path}" if p.spec.path else f":{listener.number}",
                    port=listener.number,
                    server=self.name,
                )
        except BaseException:
            for p in prepared:
                if p.fd >= 0:
                    try:
                        p.close()
                    except OSError:
                        pass
            raise

    def resume_accepting(self) -> None:
        """
        Accept on the ports held while the ASGI apps started.
        """
        held, self._held = self._held, []
        for port in held:
            port.startReading()

    def stop_accepting(self) -> list[Deferred[None]]:
        """
        Close this process's copy of every listening socket; another process
        holding a copy keeps accepting on it.
        """
        stopped = [listener.port.stopListening() for listener in self.listeners]
        return [d for d in stopped if d is not None]

    def passed_sockets(self) -> Sequence[tuple[ListenSpec, int]]:
        # Adopted ports are tcp.Port objects, which have the descriptor.
        return [(l.spec, l.port.fileno()) for l in self.listeners]  # type: ignore[attr-defined]


#: Connections a port of ASGI apps accepts per wakeup, serving alone.
#: Twisted accepts every pending one (its batch grows by 20 while the queue
#: is not empty), so the last of a burst waits for the whole burst.  With
#: Connection: close, wrk -c32, interleaved with uvicorn[standard], CPU a
#: request and p99: raw ASGI hello at most 2, 72-77 us and 2.6-2.8 ms; 3,
#: 62-63 us and 5.3-6.0 ms; 4, 57-60 us and 6.4-7.7 ms (uvicorn: 64-66 us,
#: 2.5-3.6 ms; Twisted's batch, 51-55 us and 8.4-9.9 ms).  A FastAPI route
#: at 3, 142-147 us; at 4, 134-137 (uvicorn 134-138).  4 keeps a real app's
#: CPU at uvicorn's; no cap short of 2 brings raw p99 within twice its.
#: WSGI keeps Twisted's batch: each extra wakeup hands the GIL to and from
#: the app's threads (Flask with close went from 281 to 358 us a request at
#: 4).
ASGI_ACCEPTS_PER_WAKEUP = 4


def accept_at_most(port: Any, count: int) -> None:
    """
    Make C{port} accept at most C{count} connections per wakeup.  Workers
    take 1: they share each socket and all wake for a new connection, and
    with Twisted's batch one worker could take a whole burst (64
    connections against 2, measured); one per wakeup lets every worker take
    its share.
    """
    read = getattr(port, "doRead", None)
    if read is None:
        return  # not a reactor's own port (a memory reactor's)

    def doRead() -> None:
        port.numberAccepts = count
        read()

    port.doRead = doRead

"""
Listening sockets: made by graceful itself, handed from process to process.

Twisted's C{listenTCP} ports call C{shutdown(2)} when they stop listening, which
would kill the socket for a process that inherited it too.  So every socket is
created, bound and listened here, then adopted with C{adoptStreamPort}, in the
first process as in every later one.

Sockets travel to a new process the way systemd passes them: from fd 3 on, with
C{LISTEN_FDS} and C{LISTEN_FDNAMES}, so a socket-activated start and a restart
are one code path.
"""

from __future__ import annotations

import os
import socket
from typing import Iterable, Mapping, MutableMapping, Sequence, cast

from attrs import field, frozen

from ._errors import ConfigError

#: The first inherited descriptor (systemd's C{SD_LISTEN_FDS_START}).
LISTEN_FDS_START = 3

#: Backlog of every listening socket; the kernel caps it at somaxconn.
BACKLOG = 1024


@frozen
class ListenSpec:
    """
    One port a server asks for.

    @ivar server: the server's name.
    @ivar tls: whether the port serves HTTPS.
    @ivar port: the port asked for; 0 lets the kernel choose.
    @ivar host: the address to bind; C{""} is every interface.
    @ivar index: position among the server's ports of this kind, which tells
        apart several port-0 sockets of one server across a restart.
    """

    server: str
    tls: bool
    port: int
    host: str = ""
    index: int = 0

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def fd_name(self) -> str:
        """
        The name this socket carries in C{LISTEN_FDNAMES}: printable and
        colon-free, as systemd requires.
        """
        return f"{self.server}/{self.scheme}/{self.port}/{self.index}"


@frozen
class InheritedSocket:
    """
    A listening socket received from the process before us (or systemd).
    """

    fd: int
    name: str

    def family(self) -> int:
        with socket.socket(fileno=os.dup(self.fd)) as probe:
            return int(probe.family)

    def address(self) -> tuple[str, int]:
        with socket.socket(fileno=os.dup(self.fd)) as probe:
            sockname = probe.getsockname()
        return sockname[0], sockname[1]

    def matches(self, spec: ListenSpec) -> bool:
        """
        Whether this socket is the one C{spec} asks for: the same port (and
        host, when one is given), or for a port-0 request the socket that the
        same request was given last time.
        """
        if spec.port == 0:
            return self.name == spec.fd_name
        host, port = self.address()
        if port != spec.port:
            return False
        return not spec.host or _same_host(spec.host, host)

    def close(self) -> None:
        os.close(self.fd)


def _same_host(wanted: str, bound: str) -> bool:
    try:
        wanted_ip = socket.getaddrinfo(wanted, None)[0][4][0]
    except OSError:
        return False
    return bool(wanted_ip == bound)


@frozen
class InheritedSockets:
    """
    The listening sockets this process was started with, claimed one by one.
    """

    sockets: list[InheritedSocket] = field(factory=list)

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str], pid: int, handoff: bool
    ) -> InheritedSockets:
        """
        Read systemd's socket-passing variables and remove them, so that no
        process we start mistakes them for its own.

        @param handoff: the sockets come from an older graceful process, which
            cannot know our pid in advance and so leaves C{LISTEN_PID} unset.
        """
        count = environ.pop("LISTEN_FDS", None)
        listen_pid = environ.pop("LISTEN_PID", None)
        names = environ.pop("LISTEN_FDNAMES", None)
        if count is None:
            return cls()
        if not handoff and listen_pid != str(pid):
            # Meant for another process (systemd sets LISTEN_PID); not ours.
            return cls()
        try:
            n = int(count)
        except ValueError:
            raise ConfigError(f"LISTEN_FDS is not a number: {count!r}")
        name_list = names.split(":") if names else []
        sockets = []
        for i in range(n):
            fd = LISTEN_FDS_START + i
            name = name_list[i] if i < len(name_list) else "unknown"
            os.set_inheritable(fd, False)
            # systemd passes blocking sockets unless NonBlocking=yes; a
            # blocking accept() would hang the reactor.
            os.set_blocking(fd, False)
            sockets.append(InheritedSocket(fd, name))
        return cls(sockets)

    def claim(self, spec: ListenSpec) -> InheritedSocket | None:
        """
        Take the inherited socket for C{spec}, if there is one.
        """
        for candidate in self.sockets:
            if candidate.matches(spec):
                self.sockets.remove(candidate)
                return candidate
        return None

    def close_unclaimed(self) -> list[InheritedSocket]:
        """
        Close the sockets no server claimed: ports the new config dropped.
        """
        left = list(self.sockets)
        for s in left:
            s.close()
        self.sockets.clear()
        return left


def bind_socket(host: str, port: int) -> socket.socket:
    """
    Create, bind and listen a non-blocking TCP socket.

    C{""} binds every interface, IPv6 and IPv4 at once where the machine has
    IPv6.

    @raise ConfigError: the port cannot be bound.
    """
    family, address = _resolve(host, port)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6 and not host:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ConfigError(f"cannot listen on {shown}: {e.strerror or e}")
    return sock


def _resolve(host: str, port: int) -> tuple[int, tuple[str, int]]:
    if not host:
        if socket.has_ipv6 and _ipv6_works():
            return socket.AF_INET6, ("::", port)
        return socket.AF_INET, ("0.0.0.0", port)
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as e:
        raise ConfigError(f"cannot resolve host {host!r}: {e}")
    # getaddrinfo gives IPv4 and IPv6 addresses only: (host, port, ...).
    sockaddr = info[4]
    return info[0], (cast(str, sockaddr[0]), cast(int, sockaddr[1]))


def _ipv6_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def listen_environment(
    names: Sequence[str], extra: Mapping[str, str] = {}
) -> dict[str, str]:
    """
    The variables that tell a new process about the sockets placed from fd 3.
    """
    env = {"LISTEN_FDS": str(len(names)), "LISTEN_FDNAMES": ":".join(names)}
    env.update(extra)
    return env


def check_names(names: Iterable[str]) -> None:
    """
    Server names travel in socket names (C{server/scheme/port/index}, joined
    with ':' in C{LISTEN_FDNAMES}): printable, without ':' or '/'.
    """
    for name in names:
        if not name or ":" in name or "/" in name or not name.isprintable():
            raise ConfigError(f"server name {name!r} must be printable, without ':' or '/'")

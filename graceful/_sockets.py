# -*- test-case-name: tests.unit.test_sockets,tests.unit.test_unix_sockets -*-
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

import contextlib
import errno
import grp
import os
import socket
import stat
from typing import Any, Iterable, Mapping, MutableMapping, Sequence, cast

from attrs import define, field, frozen

from ._errors import ConfigError

#: The first inherited descriptor (systemd's C{SD_LISTEN_FDS_START}).
LISTEN_FDS_START = 3

#: Names the request socket of a worker template (C{preload = true}): the
#: process forks its workers, and must make no loop or thread before then.
TEMPLATE_VARIABLE = "GRACEFUL_TEMPLATE"

#: Backlog of a listening socket unless the C{backlog} setting says
#: otherwise (uvicorn's default); the kernel caps it at somaxconn.
BACKLOG = 2048

#: sun_path holds 108 bytes on Linux, the last one a NUL.
UNIX_PATH_MAX = 107

#: Mode of a server's UNIX socket: owner and group (such as nginx's) may
#: connect, other users may not.
DEFAULT_UNIX_MODE = 0o660

#: Mode of the private admin socket: its owner alone may connect.
ADMIN_SOCKET_MODE = 0o600

#: The C{LISTEN_FDNAMES} name of the private admin socket (server sockets'
#: names always hold a '/', so it cannot clash with one).
ADMIN_SOCKET_NAME = "graceful-admin"


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
    @ivar path: for a UNIX socket, its absolute path (C{port} is then 0).
    """

    server: str
    tls: bool
    port: int
    host: str = ""
    index: int = 0
    path: str | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def fd_name(self) -> str:
        """
        The name this socket carries in C{LISTEN_FDNAMES}: printable and
        colon-free, as systemd requires.
        """
        if self.path is not None:
            # The path itself may hold ':'; a restart finds the socket by
            # the path it is bound to, not by this name.
            return f"{self.server}/unix/{self.index}"
        return f"{self.server}/{self.scheme}/{self.port}/{self.index}"

    @property
    def shown(self) -> str:
        """
        How log lines show it: C{:8100} or C{unix:/run/app/s1.sock}.
        """
        return f"unix:{self.path}" if self.path is not None else f":{self.port}"


@frozen
class ListeningSocket:
    """
    A listening socket's descriptor and its name (C{LISTEN_FDNAMES}): one
    class for both ends of a hand-over, as a process passes it to the next
    one and as that one (or a process systemd started) inherits it.
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

    def unix_path(self) -> str | None:
        """
        The path a UNIX socket is bound to; C{None} for anything else
        (systemd may pass FIFOs too).
        """
        copy = os.dup(self.fd)
        try:
            probe = socket.socket(fileno=copy)
        except OSError:
            os.close(copy)
            return None
        with probe:
            if probe.family != socket.AF_UNIX:
                return None
            name = probe.getsockname()
        if isinstance(name, bytes):
            name = os.fsdecode(name)
        return str(name)

    def matches(self, spec: ListenSpec) -> bool:
        """
        Whether this socket is the one C{spec} asks for: the same port (and
        host, when one is given), or for a port-0 request the socket that the
        same request was given last time; for a UNIX socket, the same path.
        """
        path = self.unix_path()
        if spec.path is not None or path is not None:
            return path is not None and path == spec.path
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


@define(eq=False)
class HeldSocket:
    """
    A listening socket this process holds open: bound or inherited, to be
    adopted by a server, or held by a master for its workers.

    @ivar spec: what it listens on.
    @ivar fd: its descriptor.
    @ivar owner: what closes it (the socket object, or the inherited one).
    @ivar family: its address family, for C{adoptStreamPort}.
    @ivar inherited: it came from the process before us.
    """

    spec: ListenSpec
    fd: int
    owner: socket.socket | Any
    family: int = socket.AF_INET
    inherited: bool = False

    def close(self) -> None:
        self.owner.close()


@frozen
class InheritedSockets:
    """
    The listening sockets this process was started with, claimed one by one.
    """

    sockets: list[ListeningSocket] = field(factory=list)
    #: Each socket we were started with, by inode, with its name: kept as
    #: servers claim and close them, to tell them from the ones we bind.
    received: dict[int, str] = field(factory=dict)

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
            sockets.append(ListeningSocket(fd, name))
        return cls(sockets, {os.fstat(s.fd).st_ino: s.name for s in sockets})

    def claim(self, spec: ListenSpec) -> ListeningSocket | None:
        """
        Take the inherited socket for C{spec}, if there is one.
        """
        for candidate in self.sockets:
            if candidate.matches(spec):
                self.sockets.remove(candidate)
                return candidate
        return None

    def claim_path(self, path: str) -> ListeningSocket | None:
        """
        Take the inherited UNIX socket bound to C{path}, if there is one.
        """
        return self.claim(ListenSpec("", False, 0, path=path))

    def close_unclaimed(self) -> list[ListeningSocket]:
        """
        Close the sockets no server claimed: ports the new config dropped.
        """
        left = list(self.sockets)
        for s in left:
            s.close()
        self.sockets.clear()
        return left


def bind_socket(host: str, port: int, backlog: int = BACKLOG) -> socket.socket:
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
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise ConfigError(f"cannot listen on {shown}: {e.strerror or e}")
    return sock


def check_unix_path(path: str) -> str:
    """
    The absolute form of a UNIX socket path, checked for what bind() would
    refuse less clearly.

    @raise ConfigError: empty, too long for sun_path, or in a missing
        directory.
    """
    if not path or "\0" in path:
        raise ConfigError(f"UNIX socket path {path!r} is empty or holds a NUL")
    absolute = os.path.abspath(os.path.expanduser(path))
    size = len(os.fsencode(absolute))
    if size > UNIX_PATH_MAX:
        raise ConfigError(
            f"UNIX socket path {absolute} is too long: {size} bytes, at most {UNIX_PATH_MAX}"
        )
    parent = os.path.dirname(absolute)
    if not os.path.isdir(parent):
        raise ConfigError(f"UNIX socket {absolute}: directory {parent} does not exist")
    return absolute


def check_unix_mode(mode: object) -> int:
    """
    C{mode}, if it is a file mode for a UNIX socket.

    @raise ConfigError: it is not a number from 0o000 to 0o777.
    """
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise ConfigError(f"UNIX socket mode must be from 0o000 to 0o777, not {mode!r}")
    return mode


def unix_group(group: object) -> int:
    """
    The group id of C{group}: a group name, or a number (taken as it is, as
    chown(1) takes it: a container's groups often have no name).

    @raise ConfigError: no group has that name, or it is neither.
    """
    if isinstance(group, int) and not isinstance(group, bool) and group >= 0:
        return group
    if not isinstance(group, str) or not group:
        raise ConfigError(f"UNIX socket group must be a group name or number, not {group!r}")
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise ConfigError(f"UNIX socket group {group!r} does not exist") from None


def set_unix_group(path: str | bytes, gid: int) -> None:
    """
    Give the socket file at C{path} to group C{gid}, so that its members
    (nginx's, say) may connect with the mode's group bits.

    @raise ConfigError: this process may not (it is neither root nor in
        that group).
    """
    try:
        os.chown(path, -1, gid)
    except OSError as e:
        shown = os.fsdecode(path)
        raise ConfigError(
            f"cannot give unix:{shown} to group {gid}: {e.strerror or e}"
        ) from None


def bind_unix_socket(
    path: str, mode: int = DEFAULT_UNIX_MODE, group: int | None = None, backlog: int = BACKLOG
) -> socket.socket:
    """
    Create, bind and listen a non-blocking UNIX socket at C{path}, with
    C{mode}, and owned by group C{group} if given.

    A socket file left by a process that died is replaced, but only when
    nothing listens on it; any other file there is an error, never removed.
    The file never exists with more permissions than C{mode}: the umask
    covers the moment between bind() and chmod().

    @raise ConfigError: the path is bad, in use, or not a socket.
    """
    path = check_unix_path(path)
    _clear_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o777 & ~mode)
        try:
            sock.bind(path)
        finally:
            os.umask(old_umask)
        os.chmod(path, mode)
        if group is not None:
            set_unix_group(path, group)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as e:
        sock.close()
        raise ConfigError(f"cannot listen on unix:{path}: {e.strerror or e}")
    except ConfigError:
        sock.close()
        # Ours, just made: no file is left with the wrong group.
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return sock


def _clear_stale_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(f"cannot listen on unix:{path}: {e.strerror or e}")
    if not stat.S_ISSOCK(st.st_mode):
        raise ConfigError(f"cannot listen on unix:{path}: the file there is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        # A socket file with no listener: left by a process that died.
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.ETIMEDOUT) or isinstance(e, TimeoutError):
            # A full backlog: someone listens.
            raise ConfigError(f"cannot listen on unix:{path}: already in use")
        raise ConfigError(f"cannot listen on unix:{path}: {e.strerror or e}")
    finally:
        probe.close()
    raise ConfigError(f"cannot listen on unix:{path}: already in use")


def socket_inode(path: str) -> int | None:
    """
    The inode of the socket file at C{path}, so that it is removed later only
    if it is still the one we listen on.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_ino if stat.S_ISSOCK(st.st_mode) else None


def remove_unix_socket(path: str, inode: int) -> bool:
    """
    Remove the socket file at C{path} if it is still inode C{inode}.
    """
    if socket_inode(path) != inode:
        return False
    try:
        os.unlink(path)
    except OSError:
        return False
    return True


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

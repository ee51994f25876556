"""
Unit tests for L{graceful._sockets}: the names sockets travel under, reading
systemd-style inherited sockets from the environment, claiming them by port or
by name, and binding new ones.  Sockets are bound on 127.0.0.1 (or the
wildcard address) with port 0; nothing connects.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graceful import _sockets
from graceful._errors import ConfigError
from graceful._sockets import (
    LISTEN_FDS_START,
    ListeningSocket,
    InheritedSockets,
    ListenSpec,
    bind_socket,
    _ipv6_works,
    check_names,
    listen_environment,
)


# The test asks what graceful asks: can this machine bind ::1?
_ipv6_loopback = _ipv6_works


HAS_IPV6 = _ipv6_loopback()


class _Sockets(SynchronousTestCase):
    """
    Listening sockets on loopback, closed after each test.
    """

    def listening(self, host: str = "127.0.0.1") -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.bind((host, 0))
        sock.listen(1)
        return sock

    def inherited(self, sock: socket.socket, name: str) -> ListeningSocket:
        """
        An inherited socket holding its own descriptor for C{sock}.
        """
        fd = os.dup(sock.fileno())
        self.addCleanup(_close_quietly, fd)
        return ListeningSocket(fd, name)

    def assertClosed(self, fd: int) -> None:
        error = self.assertRaises(OSError, os.fstat, fd)
        self.assertEqual(error.errno, errno.EBADF)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def port_of(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


class ListenSpecTests(SynchronousTestCase):
    """
    The name a socket carries in C{LISTEN_FDNAMES}.
    """

    def test_fd_name(self) -> None:
        self.assertEqual(ListenSpec("s1", False, 8100).fd_name, "s1/http/8100/0")
        self.assertEqual(ListenSpec("s1", True, 0, "", 2).fd_name, "s1/https/0/2")

    def test_fd_name_has_no_colon(self) -> None:
        """
        systemd's names may not hold C{:}, an IPv6 host notwithstanding.
        """
        self.assertNotIn(":", ListenSpec("s", True, 8443, "::1", 1).fd_name)

    def test_scheme(self) -> None:
        self.assertEqual(ListenSpec("s", False, 1).scheme, "http")
        self.assertEqual(ListenSpec("s", True, 1).scheme, "https")

    def test_listen_environment(self) -> None:
        self.assertEqual(
            listen_environment(["a/http/1/0", "b/https/2/0"], {"X": "1"}),
            {"LISTEN_FDS": "2", "LISTEN_FDNAMES": "a/http/1/0:b/https/2/0", "X": "1"},
        )
        self.assertEqual(listen_environment([]), {"LISTEN_FDS": "0", "LISTEN_FDNAMES": ""})

    def test_check_names(self) -> None:
        check_names(["s1", "api-2"])
        self.assertRaises(ConfigError, check_names, ["a:b"])
        self.assertRaises(ConfigError, check_names, ["tab\there"])


class FromEnvironmentTests(_Sockets):
    """
    L{InheritedSockets.from_environment}: systemd's C{LISTEN_*} variables,
    taken only when meant for us, and always removed.
    """

    PID = 4321

    def place(self, count: int) -> list[socket.socket]:
        """
        Put C{count} listening sockets at fds 3, 4, ... for the test, and put
        back whatever was there afterwards.
        """
        socks = [self.listening() for _ in range(count)]
        for i, sock in enumerate(socks):
            fd = LISTEN_FDS_START + i
            try:
                saved: int | None = os.dup(fd)
                inheritable = os.get_inheritable(fd)
            except OSError:
                saved, inheritable = None, False
            os.dup2(sock.fileno(), fd)
            self.addCleanup(_restore_fd, fd, saved, inheritable)
        return socks

    def environ(self, **variables: str) -> dict[str, str]:
        return {"PATH": "/bin", **variables}

    def test_nothing_inherited(self) -> None:
        environ = self.environ()
        self.assertEqual(
            InheritedSockets.from_environment(environ, self.PID, handoff=False).sockets, []
        )
        self.assertEqual(environ, {"PATH": "/bin"})

    def test_for_this_pid(self) -> None:
        socks = self.place(2)
        environ = self.environ(
            LISTEN_FDS="2", LISTEN_PID=str(self.PID), LISTEN_FDNAMES="s1/http/0/0:web"
        )
        inherited = InheritedSockets.from_environment(environ, self.PID, handoff=False)
        self.assertEqual(
            [(s.fd, s.name) for s in inherited.sockets], [(3, "s1/http/0/0"), (4, "web")]
        )
        self.assertEqual(environ, {"PATH": "/bin"})
        self.assertEqual([os.get_inheritable(fd) for fd in (3, 4)], [False, False])
        self.assertEqual(
            [s.address()[1] for s in inherited.sockets], [port_of(s) for s in socks]
        )

    def test_for_another_pid(self) -> None:
        environ = self.environ(LISTEN_FDS="2", LISTEN_PID="1", LISTEN_FDNAMES="a:b")
        inherited = InheritedSockets.from_environment(environ, self.PID, handoff=False)
        self.assertEqual(inherited.sockets, [])
        self.assertEqual(environ, {"PATH": "/bin"})

    def test_without_pid_outside_handoff(self) -> None:
        environ = self.environ(LISTEN_FDS="1")
        self.assertEqual(
            InheritedSockets.from_environment(environ, self.PID, handoff=False).sockets, []
        )

    def test_handoff_needs_no_pid(self) -> None:
        """
        An older graceful process cannot know our pid; its sockets are ours.
        """
        self.place(1)
        environ = self.environ(LISTEN_FDS="1", LISTEN_FDNAMES="s1/http/8100/0")
        inherited = InheritedSockets.from_environment(environ, self.PID, handoff=True)
        self.assertEqual([(s.fd, s.name) for s in inherited.sockets], [(3, "s1/http/8100/0")])
        self.assertEqual(environ, {"PATH": "/bin"})

    def test_missing_names(self) -> None:
        self.place(2)
        environ = self.environ(LISTEN_FDS="2", LISTEN_PID=str(self.PID), LISTEN_FDNAMES="one")
        inherited = InheritedSockets.from_environment(environ, self.PID, handoff=False)
        self.assertEqual([s.name for s in inherited.sockets], ["one", "unknown"])

    def test_count_not_a_number(self) -> None:
        environ = self.environ(LISTEN_FDS="two", LISTEN_PID=str(self.PID))
        error = self.assertRaises(
            ConfigError, InheritedSockets.from_environment, environ, self.PID, False
        )
        self.assertIn("LISTEN_FDS", str(error))
        self.assertEqual(environ, {"PATH": "/bin"})


def _restore_fd(fd: int, saved: int | None, inheritable: bool) -> None:
    if saved is None:
        _close_quietly(fd)
    else:
        os.dup2(saved, fd, inheritable=inheritable)
        os.close(saved)


class ClaimTests(_Sockets):
    """
    Claiming inherited sockets: by port, by name for port 0, by systemd
    name; the rest closed.
    """

    def test_claim_by_port(self) -> None:
        a, b = self.listening(), self.listening()
        first, second = self.inherited(a, "s1/http/1/0"), self.inherited(b, "whatever")
        sockets = InheritedSockets([first, second])
        self.assertIs(sockets.claim(ListenSpec("s2", False, port_of(b))), second)
        self.assertEqual(sockets.sockets, [first])
        self.assertIsNone(sockets.claim(ListenSpec("s2", False, port_of(b))))

    def test_claim_by_port_and_host(self) -> None:
        sock = self.listening()
        candidate = self.inherited(sock, "x")
        sockets = InheritedSockets([candidate])
        self.assertIsNone(sockets.claim(ListenSpec("s", False, port_of(sock), "127.0.0.2")))
        self.assertIs(sockets.claim(ListenSpec("s", False, port_of(sock), "127.0.0.1")), candidate)

    def test_port_zero_claims_by_name(self) -> None:
        """
        A port-0 request takes the socket the same request was given last
        time, whatever its port.
        """
        socks = [self.listening() for _ in range(3)]
        named = [
            self.inherited(sock, name)
            for sock, name in zip(socks, ["s1/http/0/0", "s1/http/0/1", "s1/https/0/1"])
        ]
        sockets = InheritedSockets(list(named))
        self.assertIs(sockets.claim(ListenSpec("s1", False, 0, "", 1)), named[1])
        self.assertIs(sockets.claim(ListenSpec("s1", True, 0, "", 1)), named[2])
        self.assertIsNone(sockets.claim(ListenSpec("s2", False, 0, "", 0)))
        self.assertEqual(sockets.sockets, [named[0]])

    def test_port_zero_does_not_take_a_numbered_port(self) -> None:
        sock = self.listening()
        sockets = InheritedSockets([self.inherited(sock, f"s1/http/{port_of(sock)}/0")])
        self.assertIsNone(sockets.claim(ListenSpec("s1", False, 0)))

    def test_close_unclaimed(self) -> None:
        socks = [self.listening() for _ in range(2)]
        kept, dropped = self.inherited(socks[0], "a"), self.inherited(socks[1], "b")
        sockets = InheritedSockets([kept, dropped])
        sockets.claim(ListenSpec("a", False, port_of(socks[0])))
        self.assertEqual(sockets.close_unclaimed(), [dropped])
        self.assertEqual(sockets.sockets, [])
        self.assertClosed(dropped.fd)
        os.fstat(kept.fd)  # still open: claimed

    def test_family_and_address(self) -> None:
        sock = self.listening()
        candidate = self.inherited(sock, "x")
        self.assertEqual(candidate.family(), socket.AF_INET)
        self.assertEqual(candidate.address(), ("127.0.0.1", port_of(sock)))
        os.fstat(candidate.fd)  # probing did not close it


class BindSocketTests(_Sockets):
    """
    L{bind_socket}: a listening, non-blocking socket, or a one-line
    L{ConfigError} naming the address.
    """

    def bind(self, host: str, port: int) -> socket.socket:
        sock = bind_socket(host, port)
        self.addCleanup(sock.close)
        return sock

    def test_binds_and_listens(self) -> None:
        sock = self.bind("127.0.0.1", 0)
        self.assertEqual(sock.getsockname()[0], "127.0.0.1")
        self.assertNotEqual(port_of(sock), 0)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN), 1)
        self.assertEqual(sock.gettimeout(), 0.0)
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))
        self.assertFalse(os.get_inheritable(sock.fileno()))

    def test_every_interface(self) -> None:
        sock = self.bind("", 0)
        if HAS_IPV6:
            self.assertEqual(sock.family, socket.AF_INET6)
            self.assertEqual(sock.getsockname()[0], "::")
            self.assertEqual(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY), 0)
        else:
            self.assertEqual(sock.getsockname()[0], "0.0.0.0")

    def test_port_in_use(self) -> None:
        taken = self.listening()
        port = port_of(taken)
        error = self.assertRaises(ConfigError, bind_socket, "127.0.0.1", port)
        self.assertEqual(
            str(error), f"cannot listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}"
        )

    def test_ipv6_port_in_use(self) -> None:
        if not HAS_IPV6:
            raise self.skipTest("no IPv6 loopback")
        port = port_of(self.listening("::1"))
        error = self.assertRaises(ConfigError, bind_socket, "::1", port)
        self.assertIn(f"[::1]:{port}", str(error))

    def test_unresolvable_host(self) -> None:
        def no_such_host(*args: Any, **kwargs: Any) -> Any:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

        self.patch(_sockets.socket, "getaddrinfo", no_such_host)
        error = self.assertRaises(ConfigError, bind_socket, "nowhere.invalid", 8100)
        self.assertIn("'nowhere.invalid'", str(error))
        self.assertNotIn("\n", str(error))

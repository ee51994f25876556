"""
The ends of an accepted connection (L{graceful._ends}): a port bound to one
address gives its connections their local end without asking each.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from graceful._ends import host_port, local_end


class Port:
    "A listening port bound to C{bound}; C{None}: closed since."

    def __init__(self, bound: str | None) -> None:
        self.bound = bound

    def getHost(self) -> IPv4Address:
        if self.bound is None:
            raise AttributeError("'Port' object has no attribute 'socket'")
        return IPv4Address("TCP", self.bound, 8100)


class Accepted(StringTransport):
    "A connection accepted on C{server}, counting how often it is asked its address."

    def __init__(self, server: Any, host: Any = None) -> None:
        super().__init__(hostAddress=host or IPv4Address("TCP", "127.0.0.1", 8100))
        self.server = server
        self.asked = 0

    def getHost(self) -> Any:
        self.asked += 1
        return super().getHost()


class HostPortTests(SynchronousTestCase):
    def test_tcp(self) -> None:
        self.assertEqual(host_port(IPv6Address("TCP", "::1", 80)), ("::1", 80))

    def test_unix(self) -> None:
        self.assertIsNone(host_port(UNIXAddress(b"/run/app.sock")))


class LocalEndTests(SynchronousTestCase):
    def ends(self, port: Any) -> tuple[list[Any], int]:
        transports = [Accepted(port) for _ in range(3)]
        return [local_end(t) for t in transports], sum(t.asked for t in transports)

    def test_port_bound_to_one_address(self) -> None:
        "The first connection is asked; the rest take what the port kept."
        self.assertEqual(self.ends(Port("127.0.0.1")), ([("127.0.0.1", 8100)] * 3, 1))

    def test_wildcard_port(self) -> None:
        "On a port bound to every address, each connection is asked its own."
        self.assertEqual(self.ends(Port("0.0.0.0")), ([("127.0.0.1", 8100)] * 3, 3))
        self.assertEqual(self.ends(Port("::")), ([("127.0.0.1", 8100)] * 3, 3))

    def test_port_closed_since(self) -> None:
        "A connection whose port has closed (a drain) still has its end."
        self.assertEqual(self.ends(Port(None)), ([("127.0.0.1", 8100)] * 3, 3))

    def test_unix_socket(self) -> None:
        transport = Accepted(Port("127.0.0.1"), host=UNIXAddress(b"/run/app.sock"))
        self.assertIsNone(local_end(transport))

    def test_no_transport(self) -> None:
        "A connection lost before its app asked."
        self.assertIsNone(local_end(None))

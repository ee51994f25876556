"""
Unit tests for L{graceful.http.proxy}: which peer is trusted, what its
headers say, and how a request takes it.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from graceful._errors import ConfigError
from graceful._settings import Settings
from graceful.http.proxy import (
    Forwarded,
    ProxyHeaders,
    apply_forwarded,
    site_root,
    check_trusted,
    forwarded,
)

LOOPBACK = check_trusted(["127.0.0.1", "::1"])


def headers(**values: str) -> Headers:
    return Headers({k.replace("_", "-").encode(): [v.encode()] for k, v in values.items()})


def request(peer: Any, **values: str) -> DummyRequest:
    r = DummyRequest([b"who"])
    r.client = peer
    r.isSecure = lambda: False  # the hop from the proxy: plain HTTP
    for name, value in values.items():
        r.requestHeaders.addRawHeader(name.replace("_", "-"), value)
    return r


class Seen(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        self.seen = (request.getClientAddress(), request.isSecure(),
                     request.requestHeaders.getRawHeaders(b"host"))
        return b"ok"


class TrustTests(SynchronousTestCase):
    def test_addresses_and_networks(self) -> None:
        trusted = check_trusted(["10.0.0.0/8", "::1"])
        self.assertIn("10.1.2.3", trusted)
        self.assertIn("::1", trusted)
        self.assertIn("::ffff:10.0.0.1", trusted)  # an IPv4 peer on a dual-stack socket
        self.assertNotIn("11.0.0.1", trusted)
        self.assertNotIn("not an address", trusted)

    def test_everyone(self) -> None:
        self.assertIn("192.0.2.1", check_trusted(["*"]))

    def test_unix_peers_always(self) -> None:
        self.assertTrue(check_trusted([]).peer(UNIXAddress(None)))
        self.assertFalse(check_trusted([]).peer(IPv4Address("TCP", "127.0.0.1", 1)))

    def test_bad_entry(self) -> None:
        with self.assertRaises(ConfigError) as e:
            check_trusted(["localhost"])
        self.assertEqual(str(e.exception), "'localhost' is not an address, a network or '*'")


class HeaderTests(SynchronousTestCase):
    def test_x_forwarded(self) -> None:
        self.assertEqual(
            forwarded(headers(x_forwarded_for="192.0.2.7", x_forwarded_proto="https",
                              x_forwarded_host="example.com"), LOOPBACK),
            Forwarded("192.0.2.7", "https", "example.com"),
        )

    def test_right_most_untrusted(self) -> None:
        """
        A client may send its own X-Forwarded-For: only what our trusted
        proxies appended counts.
        """
        said = forwarded(headers(x_forwarded_for="6.6.6.6, 192.0.2.7, 127.0.0.1"), LOOPBACK)
        self.assertEqual(said.client, "192.0.2.7")

    def test_all_trusted_takes_the_left_most(self) -> None:
        said = forwarded(headers(x_forwarded_for="::1, 127.0.0.1"), LOOPBACK)
        self.assertEqual(said.client, "::1")

    def test_rfc_7239(self) -> None:
        said = forwarded(
            headers(forwarded='for=6.6.6.6, for="[2001:db8::7]:4711";proto=https;host=example.com',
                    x_forwarded_for="1.1.1.1"),
            LOOPBACK,
        )
        self.assertEqual(said, Forwarded("2001:db8::7", "https", "example.com"))

    def test_nothing_said(self) -> None:
        self.assertEqual(forwarded(Headers(), LOOPBACK), Forwarded())

    def test_odd_values_ignored(self) -> None:
        said = forwarded(headers(x_forwarded_for="unknown", x_forwarded_proto="gopher"), LOOPBACK)
        self.assertEqual(said, Forwarded())


class RequestTests(SynchronousTestCase):
    def test_trusted_peer(self) -> None:
        r = request(IPv4Address("TCP", "127.0.0.1", 5000), x_forwarded_for="192.0.2.7",
                    x_forwarded_proto="https", x_forwarded_host="example.com")
        apply_forwarded(r, LOOPBACK)
        self.assertEqual(r.getClientAddress(), IPv4Address("TCP", "192.0.2.7", 0))
        self.assertTrue(r.isSecure())
        self.assertEqual(r.requestHeaders.getRawHeaders(b"host"), [b"example.com"])

    def test_ipv6_client_from_unix_peer(self) -> None:
        r = request(UNIXAddress(b"/run/app.sock"), x_forwarded_for="2001:db8::7")
        apply_forwarded(r, check_trusted([]))
        self.assertEqual(r.getClientAddress(), IPv6Address("TCP", "2001:db8::7", 0))
        self.assertFalse(r.isSecure())

    def test_untrusted_peer_changes_nothing(self) -> None:
        peer = IPv4Address("TCP", "127.0.0.2", 5000)
        r = request(peer, x_forwarded_for="192.0.2.7", x_forwarded_proto="https",
                    x_forwarded_host="example.com")
        apply_forwarded(r, LOOPBACK)
        self.assertEqual((r.getClientAddress(), r.isSecure()), (peer, False))
        self.assertIsNone(r.requestHeaders.getRawHeaders(b"host"))

    def test_resource(self) -> None:
        """
        Behind C{ProxyHeaders}, the resources see the forwarded client.
        """
        inner = Seen()
        root = site_root(inner, Settings(proxy_headers=True))
        self.assertIsInstance(root, ProxyHeaders)
        self.assertTrue(root.isLeaf)
        r = request(IPv4Address("TCP", "::1", 5000), forwarded="for=192.0.2.9;proto=https")
        self.assertEqual(root.render(r), b"ok")
        self.assertEqual(inner.seen, (IPv4Address("TCP", "192.0.2.9", 0), True, None))

    def test_off_costs_nothing(self) -> None:
        inner = Seen()
        self.assertIs(site_root(inner, Settings()), inner)


class CodeCallTests(SynchronousTestCase):
    """
    C{graceful.set_proxy_headers()}: the code call of the two keys.
    """

    def setUp(self) -> None:
        from twisted.internet.testing import MemoryReactorClock

        from graceful._process import reset_for_tests
        from graceful.process.runtime import Runtime

        self.runtime = Runtime(reactor=MemoryReactorClock(), environ={}, pid=123)
        self.addCleanup(reset_for_tests, reset_for_tests(self.runtime))

    def test_set(self) -> None:
        import graceful

        graceful.set_proxy_headers(forwarded_allow_ips=["10.0.0.0/8"])
        settings = self.runtime.settings
        self.assertEqual((settings.proxy_headers, settings.forwarded_allow_ips),
                         (True, ["10.0.0.0/8"]))

    def test_bad_address(self) -> None:
        import graceful

        with self.assertRaises(ConfigError) as e:
            graceful.set_proxy_headers(forwarded_allow_ips=["nowhere"])
        self.assertEqual(str(e.exception),
                         "forwarded_allow_ips: 'nowhere' is not an address, a network or '*'")
        self.assertFalse(self.runtime.settings.proxy_headers)


class KeptAliveConnectionTests(SynchronousTestCase):
    def test_each_request_its_own_scheme_on_one_connection(self) -> None:
        """
        On twisted.web's path an ASGI scope's scheme is asked once a
        connection; what a proxy forwards is asked per request, so the
        requests a proxy sends on one kept-alive connection each get their own.
        """
        from graceful.asgi.scope import build_http_scope

        peer = IPv4Address("TCP", "127.0.0.1", 5000)
        first = request(peer, x_forwarded_proto="https")
        second = request(peer, x_forwarded_proto="http")
        third = request(peer)
        schemes = []
        channel = object.__new__(type("Channel", (), {}))
        for r in (first, second, third):
            r.channel = channel
            apply_forwarded(r, LOOPBACK)
            schemes.append(build_http_scope(r, "", {})["scheme"])
        self.assertEqual(schemes, ["https", "http", "http"])

"""
What the native HTTP/1.1 channel applies before an app, as twisted.web's
path does and with the same objects (L{graceful.http.site_choice.native_front}):
the proxy headers of trusted peers (the client, scheme and host an app and
the access log see; the admin, served by a twisted.web channel taking the
connection over, still counts the request as forwarded) and the concurrency
limit (503 with Retry-After beyond it, counted in the site's stats, one
count for the requests of both channels).  Over an in-memory transport and
a L{Clock}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from graceful._settings import Settings
from graceful.admin.access import forwarded
from graceful.http.limits import BUSY_BODY, ConcurrencyLimit
from graceful.http.native_site import NativeSite, prefix_dispatch
from graceful.http.proxy import root_layers, site_root
from graceful.http.site_choice import native_front

from .test_native import App, Harness, answer

PEER = IPv4Address("TCP", "10.0.0.7", 51000)
FORWARDING = (
    b"X-Forwarded-For: 6.6.6.6, 1.2.3.4, 10.0.0.9\r\n"
    b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: example.test\r\n"
)


class Admin(Resource):
    """
    What twisted.web serves beside the app (C{/admin}): records what the
    admin's access check reads; C{/admin/slow} is never answered.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, str]] = []

    def render_GET(self, request: Any) -> Any:
        self.seen.append((forwarded(request), request.getClientAddress().host))
        if request.path == b"/admin/slow":
            return NOT_DONE_YET
        return b"admin"


class Connection(Harness):
    """
    A client of the site whose every send returns what came back since.
    """

    def send(self, data: bytes) -> bytes:
        super().send(data)
        return self.take()


class FrontCase(SynchronousTestCase):
    def site(self, settings: Settings) -> NativeSite:
        """
        A native site as build_site makes it for C{settings}: the app at
        the root, the admin beside it, both behind the same site root.
        """
        self.app = App()
        self.admin = Admin()
        self.access: list[str] = []
        tree = Resource()
        tree.putChild(b"admin", self.admin)
        self.root = site_root(tree, settings)
        front = native_front(self.root)
        return NativeSite(
            self.root,
            prefix_dispatch([(b"", front(self.app))], [b"/admin"]),
            access_log=self.access.append,
            reactor=Clock(),
        )


class ProxyHeadersTests(FrontCase):
    def trusting(self, *allow: str) -> NativeSite:
        return self.site(Settings(proxy_headers=True, forwarded_allow_ips=list(allow)))

    def test_trusted_peer(self) -> None:
        """
        From a trusted peer: the right-most untrusted X-Forwarded-For is
        the client (in the access log too), the scheme and the Host are
        the forwarded ones; the X-Forwarded-* headers stay.
        """
        site = self.trusting("10.0.0.0/8")
        Connection(self, site).send(b"GET /fast HTTP/1.1\r\nHost: inner:8100\r\n" + FORWARDING + b"\r\n")
        [exchange] = self.app.exchanges
        self.assertEqual(exchange.getClientAddress(), IPv4Address("TCP", "1.2.3.4", 0))
        self.assertEqual(exchange.forwarded.scheme, "https")
        self.assertEqual(exchange.headers[0], (b"host", b"example.test"))
        self.assertIn((b"x-forwarded-for", b"6.6.6.6, 1.2.3.4, 10.0.0.9"), exchange.headers)
        [line] = self.access
        self.assertTrue(line.startswith('"1.2.3.4" - - '), line)

    def test_rfc_7239(self) -> None:
        site = self.trusting("10.0.0.7")
        Connection(self, site).send(
            b"GET /fast HTTP/1.0\r\nForwarded: for=\"[2001:db8::1]:4711\";proto=https;host=h2\r\n\r\n"
        )
        [exchange] = self.app.exchanges
        self.assertEqual(exchange.getClientAddress().host, "2001:db8::1")
        self.assertEqual((exchange.forwarded.scheme, exchange.headers[-1]), ("https", (b"host", b"h2")))

    def test_unix_socket_peer_is_trusted(self) -> None:
        site = self.trusting("127.0.0.1")
        Connection(self, site, peer=UNIXAddress(None)).send(
            b"GET /fast HTTP/1.1\r\nHost: h\r\n" + FORWARDING + b"\r\n"
        )
        self.assertEqual(self.app.exchanges[0].getClientAddress().host, "10.0.0.9")

    def test_untrusted_peer_changes_nothing(self) -> None:
        site = self.trusting("127.0.0.1")
        request = b"GET /fast HTTP/1.1\r\nHost: inner\r\n" + FORWARDING + b"Forwarded: for=6.6.6.6\r\n\r\n"
        Connection(self, site).send(request)
        [exchange] = self.app.exchanges
        self.assertIsNone(exchange.forwarded)
        self.assertEqual(exchange.getClientAddress(), PEER)
        self.assertEqual(exchange.headers[0], (b"host", b"inner"))
        self.assertTrue(self.access[0].startswith('"10.0.0.7" - - '), self.access)

    def test_each_pipelined_request(self) -> None:
        site = self.trusting("10.0.0.7")
        Connection(self, site).send(
            b"GET /fast HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n"
            b"GET /fast HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n"
        )
        self.assertEqual([e.getClientAddress().host for e in self.app.exchanges], ["1.1.1.1", "2.2.2.2"])

    def test_admin_still_sees_a_forwarded_request(self) -> None:
        """
        The admin, served by a twisted.web channel taking the connection
        over, sees the forwarding headers (so never counts the request as
        local) and the forwarded client.
        """
        site = self.trusting("10.0.0.7")
        answer_ = Connection(self, site).send(b"GET /admin HTTP/1.1\r\nHost: h\r\n" + FORWARDING + b"\r\n")
        self.assertTrue(answer_.endswith(b"admin"), answer_)
        self.assertEqual(self.admin.seen, [(True, "10.0.0.9")])

    def test_off_costs_nothing(self) -> None:
        self.site(Settings())
        self.assertEqual(root_layers(self.root), (None, None))
        self.assertIs(native_front(self.root)(self.app), self.app)


class LimitTests(FrontCase):
    def setUp(self) -> None:
        self.native = self.site(Settings(limit_concurrency=1))
        _, limit = root_layers(self.root)
        assert limit is not None
        self.limit: ConcurrencyLimit = limit

    def test_beyond_the_limit(self) -> None:
        """
        While one request is in progress another is answered 503 with
        Retry-After at once (logged, counted for the metrics); the
        connection stays open, and once the first is answered the next
        request is served.
        """
        first, second = Connection(self, self.native), Connection(self, self.native)
        first.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
        refused = second.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        head, _, body = refused.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), head)
        self.assertIn(b"retry-after: 1\r\n", head)
        self.assertEqual(body, BUSY_BODY)
        self.assertFalse(second.transport.disconnecting)
        self.assertEqual(len(self.app.exchanges), 1)
        self.assertEqual((self.limit.active, self.limit.refused), (1, 1))
        self.assertEqual(self.native.stats.refused["limit_concurrency"], 1)
        self.assertEqual(self.native.stats.by_class()["5xx"], 1)
        self.assertIn('"GET /fast HTTP/1.1" 503 ', self.access[0])
        answer(self.app.exchanges[0])
        self.assertIn(b"200 OK", second.send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n"))
        self.assertEqual((self.limit.active, self.limit.refused), (0, 1))

    def test_a_lost_connection_makes_room(self) -> None:
        held = Connection(self, self.native)
        held.send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertEqual(self.limit.active, 1)
        held.lose()
        self.assertEqual(self.app.sinks[0].events, ["end", "gone"])
        self.assertEqual(self.limit.active, 0)
        self.assertIn(b"200 OK", Connection(self, self.native).send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n"))

    def test_pipelined_requests_wait_their_turn(self) -> None:
        connection = Connection(self, self.native)
        connection.send(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /fast HTTP/1.1\r\nHost: h\r\n\r\n")
        answer(self.app.exchanges[0])
        self.assertNotIn(b"503", connection.transport.value())
        self.assertEqual([e.uri for e in self.app.exchanges], [b"/a", b"/fast"])
        self.assertEqual((self.limit.active, self.limit.refused), (0, 0))

    def test_one_count_for_both_channels(self) -> None:
        """
        A request twisted.web serves (an admin page) holds the same place
        as an app's request on the native channel, and the other way round.
        """
        admin = Connection(self, self.native)
        admin.send(b"GET /admin/slow HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b" 503 ", Connection(self, self.native).send(b"GET /fast HTTP/1.1\r\nHost: h\r\n\r\n"))
        admin.lose()
        Connection(self, self.native).send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
        refused = Connection(self, self.native).send(b"GET /admin HTTP/1.1\r\nHost: h\r\n\r\n")
        self.assertIn(b" 503 ", refused)
        self.assertEqual(self.limit.refused, 2)

    def test_refusal_logged_with_the_forwarded_client(self) -> None:
        site = self.site(Settings(limit_concurrency=1, proxy_headers=True,
                                  forwarded_allow_ips=["10.0.0.7"]))
        Connection(self, site).send(b"GET /held HTTP/1.1\r\nHost: h\r\n\r\n")
        Connection(self, site).send(b"GET /x HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n")
        self.assertTrue(self.access[0].startswith('"1.2.3.4" - - '), self.access)
        self.assertIn(" 503 ", self.access[0])

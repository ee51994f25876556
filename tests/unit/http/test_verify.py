"""
Unit tests of L{graceful.http.verify}: the answer a verify request gets,
the small client, the socketpair it travels over, and the verdict over a
server's paths; through a real L{DrainingSite} connected in memory.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.test.iosim import FakeTransport, connect
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from graceful._errors import ConfigError
from graceful.http.site import DrainingSite
from graceful.http.verify import (
    Answer,
    Verification,
    VerifyClient,
    VerifyFailed,
    check_verify_paths,
    parse_answer,
    request_through,
)


class Health(Resource):
    """
    Answers with C{status} and C{body}; remembers the Host header it saw.
    """

    isLeaf = True

    def __init__(self, status: int = 200, body: bytes = b"ok\n") -> None:
        super().__init__()
        self.status, self.body = status, body
        self.hosts: list[bytes | None] = []
        self.paths: list[bytes] = []

    def render_GET(self, request: Request) -> bytes:
        self.hosts.append(request.getHeader(b"host"))
        self.paths.append(request.uri)
        request.setResponseCode(self.status)
        return self.body


class PairingReactor(MemoryReactorClock):
    """
    A memory reactor whose adopted connections are socketpair ends: each
    two adopted in a row are connected to each other in memory (the first
    as the server), as the kernel would connect the pair.
    """

    def __init__(self) -> None:
        super().__init__()
        self._waiting: Any = None

    def adoptStreamConnection(self, fileDescriptor: int, addressFamily: Any, factory: Any) -> None:
        super().adoptStreamConnection(fileDescriptor, addressFamily, factory)
        protocol = factory.buildProtocol(None)
        if self._waiting is None:
            self._waiting = protocol
            return
        server, self._waiting = self._waiting, None
        connect(server, FakeTransport(server, True), protocol, FakeTransport(protocol, False))


class ParseAnswerTests(SynchronousTestCase):
    def test_status_and_first_body_line(self) -> None:
        answer = parse_answer(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 14\r\n\r\ndb is down\nmore"
        )
        self.assertEqual(answer, Answer(503, "db is down"))
        self.assertFalse(answer.ok)

    def test_chunked_body(self) -> None:
        answer = parse_answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nall\r\n5\r\n good\r\n0\r\n\r\n"
        )
        self.assertEqual(answer, Answer(200, "all good"))
        self.assertTrue(answer.ok)

    def test_no_body(self) -> None:
        self.assertEqual(parse_answer(b"HTTP/1.1 204 No Content\r\n\r\n"), Answer(204, ""))

    def test_long_line_cut(self) -> None:
        answer = parse_answer(b"HTTP/1.1 500 Oops\r\n\r\n" + b"x" * 1000)
        self.assertEqual(len(answer.first_line), 200)

    def test_not_http(self) -> None:
        self.assertRaises(ValueError, parse_answer, b"")
        self.assertRaises(ValueError, parse_answer, b"SSH-2.0-OpenSSH\r\n")


class ClientTests(SynchronousTestCase):
    def test_sends_one_request_and_reads_until_closed(self) -> None:
        client = VerifyClient(b"GET /healthz HTTP/1.1\r\n\r\n")
        transport = StringTransport()
        client.makeConnection(transport)
        self.assertEqual(transport.value(), b"GET /healthz HTTP/1.1\r\n\r\n")
        client.dataReceived(b"HTTP/1.1 200 OK\r\n\r\n")
        self.assertNoResult(client.answered)
        client.dataReceived(b"fine\n")
        client.connectionLost()
        self.assertEqual(self.successResultOf(client.answered), Answer(200, "fine"))

    def test_garbage_fails(self) -> None:
        client = VerifyClient(b"GET / HTTP/1.1\r\n\r\n")
        client.makeConnection(StringTransport())
        client.dataReceived(b"\x15\x03\x01\x00\x02\x02\x46")  # a TLS alert
        client.connectionLost()
        self.failureResultOf(client.answered, ValueError)


class RequestThroughTests(SynchronousTestCase):
    def test_through_the_site_over_a_socketpair(self) -> None:
        """
        The site adopts one end of an AF_UNIX socketpair, the client the
        other; the request names the server as its Host and asks to close.
        """
        reactor = PairingReactor()
        health = Health(200, b"all fine\n")
        site = DrainingSite(health, server_name="web", reactor=reactor)
        answered = request_through(reactor, site, "web", "/healthz?deep=1", 5.0)
        self.assertEqual(self.successResultOf(answered), Answer(200, "all fine"))
        [(_, family, factory), _client] = reactor.adoptedStreamConnections
        self.assertEqual(family, socket.AF_UNIX)
        self.assertIs(factory, site)
        self.assertEqual(health.hosts, [b"web"])
        self.assertEqual(health.paths, [b"/healthz?deep=1"])
        self.assertEqual(reactor.getDelayedCalls(), [])

    def test_no_answer_in_time(self) -> None:
        reactor = MemoryReactorClock()  # adopts, never connects
        answered = request_through(reactor, object(), "web", "/healthz", 5.0)
        reactor.advance(4.9)
        self.assertNoResult(answered)
        reactor.advance(0.1)
        self.failureResultOf(answered)


class CheckPathsTests(SynchronousTestCase):
    def test_paths(self) -> None:
        self.assertEqual(check_verify_paths(["/healthz", "/db?x=1"]), ("/healthz", "/db?x=1"))

    def test_bad_paths(self) -> None:
        for bad in ["healthz", "/a b", "/a\r\nX: y", 7, ""]:
            error = self.assertRaises(ConfigError, check_verify_paths, [bad])
            self.assertIn(repr(bad), str(error))
            self.assertNotIn("\n", str(error))


class VerificationTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.log: list[str] = []
        observer = lambda event: self.log.append(formatEvent(event))  # noqa: E731
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        self.asked: list[tuple[str, str, float]] = []
        self.answers: dict[str, Deferred[Answer]] = {}

    def request(self, reactor: Any, site: Any, host: str, path: str, timeout: float) -> Deferred[Answer]:
        self.asked.append((host, path, timeout))
        return self.answers.get(path) or succeed(Answer(200, "ok"))

    def verification(self, *servers: tuple[str, Any, list[str]]) -> Verification:
        return Verification(self.reactor, servers, 10.0, 42, request=self.request)

    def test_every_path_in_turn(self) -> None:
        self.successResultOf(
            self.verification(("web", None, ["/healthz", "/db"]), ("api", None, ["/ping"])).run()
        )
        self.assertEqual(
            [(host, path) for host, path, _ in self.asked],
            [("web", "/healthz"), ("web", "/db"), ("api", "/ping")],
        )
        self.assertEqual(
            [line for line in self.log if "verified" in line],
            ["42: verified /healthz (200)", "42: verified /db (200)", "42: verified /ping (200)"],
        )

    def test_a_failing_path_names_the_path_status_and_body_line(self) -> None:
        self.answers["/healthz"] = succeed(Answer(500, "database unreachable"))
        failure = self.failureResultOf(
            self.verification(("web", None, ["/healthz", "/db"])).run(), VerifyFailed
        )
        self.assertEqual(
            str(failure.value), "verify web /healthz answered 500: database unreachable"
        )
        self.assertEqual([path for _, path, _ in self.asked], ["/healthz"])  # stops there
        self.assertFalse(any("verified" in line for line in self.log))

    def test_the_timeout_is_shared(self) -> None:
        """
        All paths together have the time left: the second one gets what
        the first left over.
        """
        slow: Deferred[Answer] = Deferred()
        self.answers["/healthz"] = slow
        done = self.verification(("web", None, ["/healthz", "/db"])).run()
        self.reactor.advance(4)
        slow.callback(Answer(200, "ok"))
        self.successResultOf(done)
        self.assertEqual([timeout for _, _, timeout in self.asked], [10.0, 6.0])

    def test_no_answer(self) -> None:
        from twisted.internet.defer import TimeoutError, fail

        self.answers["/healthz"] = fail(TimeoutError())
        failure = self.failureResultOf(self.verification(("web", None, ["/healthz"])).run())
        self.assertEqual(
            str(failure.value), "verify web /healthz: no answer within ready_timeout"
        )

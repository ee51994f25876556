"""
Unit tests for L{graceful.http.streams}: a request learns that its site drains
(C{graceful.draining}), counts as a C{"stream"} meanwhile, and
L{graceful.EventStream} writes Server-Sent Events and ends with a C{retry:}
hint on a drain.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from graceful import EventStream, draining
from graceful.http.site import DrainingSite

from .test_routing import HTTPConnection


class Poll(Resource):
    """
    C{/poll} waits for the drain notice and answers then; C{/events} is an
    EventStream the test drives.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.streams: list[EventStream] = []
        self.notices: list[Deferred[None]] = []

    def render_GET(self, request: Request) -> int:
        if request.path == b"/events":
            self.streams.append(EventStream(request, retry=1500))
            return NOT_DONE_YET
        d = draining(request)
        self.notices.append(d)

        def answer(_: None) -> None:
            request.write(b"come back later")
            request.finish()

        d.addCallback(answer)
        return NOT_DONE_YET


class StreamTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.app = Poll()
        self.site = DrainingSite(self.app, reactor=self.clock)

    def connect(self) -> HTTPConnection:
        connection = HTTPConnection(self.site)
        self.addCleanup(connection.lose)
        return connection

    def test_long_poll_answers_when_the_drain_starts(self) -> None:
        connection = self.connect()
        connection.request("/poll")
        self.assertEqual(self.site.connections_by_kind(), {"stream": 1})
        self.assertEqual(connection.responses(), [])
        self.site.drain("restart")
        response = connection.only_response()
        self.assertEqual(response.body, b"come back later")
        self.assertEqual(response.header("connection"), "close")
        # Answered: no longer a stream.
        self.assertEqual(self.site.connections_by_kind(), {"http/1.1": 1})

    def test_draining_fires_at_once_once_draining(self) -> None:
        keep = self.connect()
        keep.request("/events")
        self.site.drain("shutdown")
        connection = self.connect()
        connection.request("/poll")
        self.assertEqual(connection.only_response().body, b"come back later")

    def test_not_a_graceful_site(self) -> None:
        """
        Outside a graceful server the notice never comes (and nothing fails).
        """
        from twisted.web.server import Site

        from .test_routing import HTTPConnection as Connection

        connection = Connection(Site(self.app, reactor=self.clock))
        connection.request("/poll")
        self.assertEqual(connection.transport.value(), b"")
        self.assertNoResult(self.app.notices[0])

    def test_event_stream_format(self) -> None:
        connection = self.connect()
        connection.request("/events")
        [stream] = self.app.streams
        self.assertTrue(stream.send("one"))
        stream.send("two\nlines", event="tick", id="7")
        raw = connection.transport.value()
        head = raw.split(b"\r\n\r\n")[0].lower()
        self.assertIn(b"content-type: text/event-stream; charset=utf-8", head)
        self.assertIn(b"cache-control: no-cache", head)
        self.assertIn(b": stream\n\n", raw)
        self.assertIn(b"data: one\n\n", raw)
        self.assertIn(b"event: tick\nid: 7\ndata: two\ndata: lines\n\n", raw)
        self.assertEqual(self.site.connections_by_kind(), {"stream": 1})

    def test_event_stream_ends_with_retry_on_drain(self) -> None:
        connection = self.connect()
        connection.request("/events")
        [stream] = self.app.streams
        self.site.drain("restart")
        [response] = connection.responses()
        self.assertTrue(
            response.body.endswith(b"event: drain\ndata: restart\nretry: 1500\n\n"),
            response.body,
        )
        self.assertTrue(stream.closed)
        self.successResultOf(stream.done)
        self.assertFalse(stream.send("late"))

    def test_event_stream_client_gone(self) -> None:
        connection = self.connect()
        connection.request("/events")
        [stream] = self.app.streams
        connection.lose()
        self.successResultOf(stream.done)
        self.assertFalse(stream.send("nobody listens"))
        self.assertEqual(self.site.connections_by_kind(), {})

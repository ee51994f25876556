"""
A request's body between its connection and an ASGI app's receive()
(L{graceful.asgi.body.RequestBody}), which both bridges use: streamed with
reading paused past BODY_BUFFER, read whole in BODY_CHUNK pieces, and the
disconnect; on an asyncio loop driven by hand.
"""

from __future__ import annotations

import asyncio
from io import BytesIO
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graceful.asgi.body import BODY_BUFFER, BODY_CHUNK, RequestBody

from .test_resource import settle


class BodyCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        self.reading: list[str] = []

    def body(self, content: Any = None) -> RequestBody:
        return RequestBody(lambda: self.reading.append("pause"),
                           lambda: self.reading.append("resume"), content)

    def receive(self, body: RequestBody) -> list[dict[str, Any]]:
        """
        What one receive() returns, once the loop has run ([] while it waits).
        """
        got: list[dict[str, Any]] = []
        task = self.loop.create_task(body.receive())
        task.add_done_callback(lambda t: got.append(t.result()))
        settle(self.loop, 3)
        self.receiving = task
        return got


class StreamedTests(BodyCase):
    def test_as_it_arrives(self) -> None:
        """
        Each piece goes to a waiting receive() as it arrives; the last
        message says no more body.
        """
        body = self.body()
        self.assertEqual(self.receive(body), [])
        body.add(b"a")
        settle(self.loop)
        body.add(b"b")
        body.end()
        settle(self.loop)
        self.assertEqual(self.receive(body), [
            {"type": "http.request", "body": b"b", "more_body": False}])

    def test_all_that_waits_in_one_message(self) -> None:
        body = self.body()
        body.add(b"a")
        body.add(b"b")
        self.assertEqual(self.receive(body), [
            {"type": "http.request", "body": b"ab", "more_body": True}])

    def test_reading_paused_past_the_buffer(self) -> None:
        """
        Past BODY_BUFFER bytes waiting for the app, reading pauses (each
        time: a connection may resume on its own); the app's receive()
        resumes it, once.
        """
        body = self.body()
        body.add(b"x" * BODY_BUFFER)
        self.assertEqual(self.reading, [])
        body.add(b"x")
        body.add(b"x")
        self.assertEqual(self.reading, ["pause", "pause"])
        [message] = self.receive(body)
        self.assertEqual((len(message["body"]), message["more_body"]), (BODY_BUFFER + 2, True))
        self.assertEqual(self.reading, ["pause", "pause", "resume"])
        body.end()
        self.assertEqual(self.reading, ["pause", "pause", "resume"])

    def test_disconnect(self) -> None:
        """
        The client gone, a waiting receive() and every later one say
        http.disconnect, and what waited is dropped.
        """
        body = self.body()
        body.add(b"x" * (BODY_BUFFER + 1))
        body.gone()
        self.assertEqual(self.receive(body), [{"type": "http.disconnect"}])
        self.assertEqual(self.reading, ["pause"])  # a gone connection is not resumed

    def test_after_the_body_waits_for_the_end(self) -> None:
        """
        Once the body was handed over, receive() waits until the response
        ends (or the client goes away), then says http.disconnect.
        """
        body = self.body()
        body.end()
        self.assertEqual(self.receive(body)[0]["more_body"], False)
        got = self.receive(body)
        self.assertEqual(got, [])
        body.finish()
        settle(self.loop)
        self.assertEqual(got, [{"type": "http.disconnect"}])

    def test_finish_before_the_body_came(self) -> None:
        """
        A response that ends before the body came drops what waits and
        resumes reading, so the rest is read and dropped; receive() says
        http.disconnect.
        """
        body = self.body()
        body.add(b"x" * (BODY_BUFFER + 1))
        body.finish()
        body.add(b"more")
        self.assertEqual(self.reading, ["pause", "resume"])
        self.assertEqual(self.receive(body), [{"type": "http.disconnect"}])


class WholeTests(BodyCase):
    def test_in_chunks(self) -> None:
        """
        A body read whole is handed over BODY_CHUNK bytes at a time.
        """
        body = self.body(BytesIO(b"x" * (BODY_CHUNK + 10)))
        sizes = [(len(m["body"]), m["more_body"]) for _ in range(2) for m in self.receive(body)]
        self.assertEqual(sizes, [(BODY_CHUNK, True), (10, False)])

    def test_empty(self) -> None:
        body = self.body(BytesIO())
        self.assertEqual(self.receive(body), [
            {"type": "http.request", "body": b"", "more_body": False}])

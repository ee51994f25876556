# -*- test-case-name: tests.unit.asgi.test_body -*-
"""
A request's body between its connection and an ASGI app's C{receive()},
for both bridges: twisted.web's (L{graceful.asgi.resource.HTTPCycle}) and
the native channel's (L{graceful.asgi.native.NativeCycle}).

The body goes to C{receive()} as it arrives, all that waits in one
C{http.request} message, as uvicorn hands it; while more than
L{BODY_BUFFER} bytes of it wait for the app, the connection is not read.
A body read whole already (twisted.web's, over HTTP/2 or without a body
stream) is handed over L{BODY_CHUNK} bytes at a time.  Once the body was
all handed over, C{receive()} waits until the client goes away or the
response ends, then says C{http.disconnect}, as uvicorn does.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import IO, Any, Callable

#: Bytes of request body per C{http.request} message, from a body read whole.
BODY_CHUNK = 65536

#: Bytes of request body that may wait for the app before the connection is
#: no longer read (uvicorn's high-water mark for it).
BODY_BUFFER = 65536


class RequestBody:
    """
    One request's body, from its connection to its app.

    @ivar disconnected: the client went away.
    @ivar over: the response ended (or the client went away): what more of
        the body arrives is read and dropped.
    """

    __slots__ = (
        "disconnected", "over", "_chunks", "_buffered", "_complete", "_sent", "_paused",
        "_waiting", "_pause", "_resume", "_content", "_left",
    )

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None],
                 content: IO[bytes] | None = None) -> None:
        """
        @param pause: stop reading the connection (called each time the
            buffer goes past L{BODY_BUFFER}: a connection may resume on its
            own, when its write buffer drains).
        @param resume: read the connection again.
        @param content: the body, read whole already; without it, the body
            comes by L{add} and L{end}.
        """
        self.disconnected = False
        self.over = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = content is not None
        self._sent = False
        self._paused = False
        self._waiting: asyncio.Future[None] | None = None
        self._pause = pause
        self._resume = resume
        self._content = content
        self._left = 0
        if content is not None:
            self._left = content.seek(0, 2)
            content.seek(0)

    # -- the connection's side ------------------------------------------------

    def add(self, data: bytes) -> None:
        """
        A piece of the body arrived.
        """
        if self.over:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > BODY_BUFFER:
            self._paused = True
            self._pause()
        self._wake()

    def end(self) -> None:
        """
        The whole body arrived.
        """
        self._complete = True
        self._resume_reading()
        self._wake()

    def gone(self) -> None:
        """
        The client went away.
        """
        self.disconnected = True
        self.over = True
        self._chunks.clear()
        self._wake()

    def finish(self) -> None:
        """
        The response ended (or was given up): what the app did not read is
        dropped, and the connection is read again, so that the rest of the
        body is read before its next request.
        """
        self.over = True
        self._chunks.clear()
        self._wake()
        self._resume_reading()

    def _wake(self) -> None:
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    def _resume_reading(self) -> None:
        if self._paused and not self.disconnected:
            self._paused = False
            self._resume()

    # -- the app's side -------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        """
        The app's C{receive()}: the next C{http.request} message, or
        C{http.disconnect}.
        """
        while True:
            if self.disconnected:
                return {"type": "http.disconnect"}
            if not self._sent:
                content = self._content
                if content is not None:
                    chunk = content.read(min(BODY_CHUNK, self._left))
                    self._left -= len(chunk)
                    more = self._left > 0 and bool(chunk)
                    self._sent = not more
                    return {"type": "http.request", "body": chunk, "more_body": more}
                chunks = self._chunks
                if chunks or self._complete:
                    if len(chunks) > 1:
                        body = b"".join(chunks)
                        chunks.clear()
                    else:
                        body = chunks.popleft() if chunks else b""
                    self._buffered = 0
                    more = not self._complete
                    self._sent = not more
                    self._resume_reading()
                    return {"type": "http.request", "body": body, "more_body": more}
            if self.over:
                return {"type": "http.disconnect"}
            self._waiting = asyncio.get_running_loop().create_future()
            await self._waiting

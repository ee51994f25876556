"""
A server whose answers are written in one step or several, through each way
graceful serves an app: twisted.web, WSGI and ASGI, each plain (one write
with a length) and streamed (chunked, over about 40 ms).  Every body starts
with the pid that answered.  HTTP, HTTPS and a UNIX socket.

    python tests/integration/programs/reuse.py HTTP_PORT HTTPS_PORT UNIX_PATH
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import graceful as g

certs = Path(__file__).resolve().parents[3] / "certs"
PID = b"%d\n" % os.getpid()
#: The streamed answers' pieces after the first, and the pause before each.
PIECES, PAUSE = 3, 0.01


def wsgi_plain(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(PID)))])
    return [PID]


def wsgi_stream(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield PID
    for _ in range(PIECES):
        time.sleep(PAUSE)
        yield b"piece\n"


async def asgi_plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(PID))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": PID})


async def asgi_stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"text/plain")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": PID, "more_body": True})
    for _ in range(PIECES):
        await asyncio.sleep(PAUSE)
        await send({"type": "http.response.body", "body": b"piece\n", "more_body": True})
    await send({"type": "http.response.body", "body": b""})


server = g.server("reuse")
# ASGI apps need the asyncio reactor: mounted before the reactor is imported.
server.mount_asgi("/asgi/plain", asgi_plain)
server.mount_asgi("/asgi/stream", asgi_stream)
server.mount_wsgi("/wsgi/plain", wsgi_plain)
server.mount_wsgi("/wsgi/stream", wsgi_stream)

from twisted.internet import reactor  # noqa: E402
from twisted.web.resource import Resource  # noqa: E402
from twisted.web.server import NOT_DONE_YET, Request  # noqa: E402


class Streamed(Resource):
    """
    A chunked answer: the pid now, the pieces later.
    """

    isLeaf = True

    def render_GET(self, request: Request) -> int:
        calls = [
            reactor.callLater(PAUSE * n, request.write, b"piece\n")  # type: ignore[attr-defined]
            for n in range(1, PIECES + 1)
        ]
        calls.append(reactor.callLater(PAUSE * (PIECES + 1), request.finish))  # type: ignore[attr-defined]
        # A client that leaves takes the rest of its answer with it.
        request.notifyFinish().addErrback(lambda _: [c.cancel() for c in calls if c.active()])
        request.write(PID)
        return NOT_DONE_YET


server.route("/pid", lambda request: PID)
server.route("/web/plain", lambda request: PID)
server.mount("/web/stream", Streamed())
server.set_host("127.0.0.1")
server.set_port(int(sys.argv[1]))
server.enable_https(str(certs / "server.crt"), str(certs / "server.key"))
server.set_https_port(int(sys.argv[2]))
server.set_unix_socket(sys.argv[3])
g.set_ready_timeout(10)
server.run()

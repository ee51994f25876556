"""
A raw ASGI app (no framework) for the integration tests, and a program
serving it: C{python asgi_app.py PORT}; as a config's app
C{tests.integration.programs.asgi_app:app}.

GRACEFUL_TEST_LIFESPAN names a file the app appends "startup PID" and
"shutdown PID" to; while a file named C{fail-startup} sits beside it, the
lifespan startup fails.  With GRACEFUL_TEST_LIFESPAN_RETURNS set, the
lifespan returns right after its startup.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path
from typing import Any


def _note(line: str) -> Path | None:
    log = os.environ.get("GRACEFUL_TEST_LIFESPAN")
    if not log:
        return None
    with open(log, "a") as f:
        f.write(f"{line} {os.getpid()}\n")
    return Path(log)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                log = _note("startup")
                if log is not None and (log.parent / "fail-startup").exists():
                    await send({"type": "lifespan.startup.failed", "message": "told to fail"})
                    return
                scope["state"]["started_by"] = os.getpid()
                await send({"type": "lifespan.startup.complete"})
                if os.environ.get("GRACEFUL_TEST_LIFESPAN_RETURNS"):
                    return  # its lifespan ends here: shutdown has nothing to wait for
            elif message["type"] == "lifespan.shutdown":
                _note("shutdown")
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket" and scope["path"] == "/ws-deny":
        await receive()
        await send({"type": "websocket.http.response.start", "status": 401,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "websocket.http.response.body", "body": b"log in first\n"})
        return
    if scope["type"] == "websocket":
        await websocket_echo(scope, receive, send)
        return
    special = SPECIAL.get(scope["path"])
    if special is not None:
        await special(scope, receive, send)
        return
    digest = hashlib.sha256()
    size = 0
    while True:
        message = await receive()
        body = message.get("body", b"")
        digest.update(body)
        size += len(body)
        if not message.get("more_body"):
            break
    path = scope["path"]
    if path == "/sleep":
        await asyncio.sleep(1.5)
    if path == "/echo":
        out = f"{size} {digest.hexdigest()}\n"
    elif path == "/task":
        # A task of its own on the loop the server runs.
        out = f"{await asyncio.create_task(asyncio.sleep(0.01, result='task'))}\n"
    else:
        from twisted.internet import reactor

        state = scope.get("state", {})
        # Which of Twisted's reactors it is (graceful runs a subclass of
        # its asyncio reactor).
        twisted_kind = next(
            kind.__name__ for kind in type(reactor).__mro__
            if kind.__module__.startswith("twisted.internet.")
        )
        out = f"{os.getpid()} {twisted_kind} {state.get('started_by')}\n"
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(out))],
        }
    )
    await send({"type": "http.response.body", "body": out.encode()})


async def stream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """
    /stream?mb=N: N MiB in 64 KiB pieces, as fast as send() lets it.
    """
    mib = int(scope["query_string"].decode().partition("=")[2] or 1)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % (mib << 20))]})
    piece = b"x" * 65536
    for _ in range(mib * 16):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def upload_progress(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """
    /upload-progress: answers "first N" as soon as the first piece of the
    body arrives, then "total N" once all of it did.
    """
    first = await receive()
    size = len(first["body"])
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"first %d\n" % size, "more_body": True})
    more = first.get("more_body", False)
    while more:
        message = await receive()
        size += len(message["body"])
        more = message.get("more_body", False)
    await send({"type": "http.response.body", "body": b"total %d\n" % size})


async def raise_after_start(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part of it\n", "more_body": True})
    raise ValueError("failed halfway")


SPECIAL = {"/stream": stream, "/upload-progress": upload_progress,
           "/raise-after-start": raise_after_start}


async def websocket_echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """
    Accepts, says its pid, echoes; notes "ws-disconnect-CODE PID" at the end.
    """
    while True:
        message = await receive()
        if message["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.send", "text": str(os.getpid())})
        elif message["type"] == "websocket.receive":
            await send({**message, "type": "websocket.send"})
        else:
            _note(f"ws-disconnect-{message.get('code')}")
            return


if __name__ == "__main__":
    import graceful as g

    s = g.server()
    s.mount_asgi("/", app)
    s.set_port(int(sys.argv[1]))
    s.run()

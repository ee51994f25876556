"""
Hello world as a bare ASGI app, for a peer that serves HTTP/2 (hypercorn)
in benchmarks/h2.py: C{/} says hello, C{/pid} answers the pid.
"""

import os
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = f"{os.getpid()}".encode() if scope["path"] == "/pid" else b"Hello, world!\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

"""
The two apps of benchmarks/asgi_cpu.py: C{raw}, a bare ASGI hello world,
and C{fastapi}, a FastAPI JSON route (an C{async def}, so no thread).
"""

import os
from typing import Any

_PID = b"%d\n" % os.getpid()


async def raw(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = _PID if scope["path"] == "/pid" else b"Hello, world!\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def _fastapi() -> Any:
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    async def hello() -> dict[str, str]:
        return {"message": "Hello, world!"}

    @app.get("/pid")
    async def pid() -> int:
        return os.getpid()

    return app


fastapi = _fastapi()

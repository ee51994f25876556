"""
An ASGI app whose lifespan startup takes a while and then fails, while a
file named C{fail-startup} sits in the working directory: as a config's app
C{tests.integration.programs.slow_failing_lifespan:app}.

The pause keeps a failing new process alive for a moment after it has taken
the inherited sockets, as a real app's slow startup (a database pool) does.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

#: How long the startup takes before it fails.
PAUSE = 0.8


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if Path("fail-startup").exists():
                    await asyncio.sleep(PAUSE)
                    await send({"type": "lifespan.startup.failed", "message": "told to fail"})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"{os.getpid()}\n".encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})

"""
A FastAPI app for C{graceful run tests.integration.programs.run_fastapi:app}:
C{/pid} answers the serving pid, C{/slow} takes a second, C{/who} says who the
app thinks the client is.
"""

from __future__ import annotations

import asyncio
import os

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/pid", response_class=PlainTextResponse)
async def pid() -> str:
    return f"{os.getpid()}\n"


@app.get("/slow", response_class=PlainTextResponse)
async def slow() -> str:
    await asyncio.sleep(1.0)
    return "slow done\n"


@app.get("/who")
async def who(request: Request) -> dict[str, str | None]:
    return {
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "host": request.headers.get("host"),
    }

"""
A FastAPI app for the preload tests: C{/pid} answers the serving pid from a
plain C{def}, which FastAPI runs in a worker thread, so that the answer
reaches the loop from another thread (a wake-up of the loop).
"""

from __future__ import annotations

import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/pid", response_class=PlainTextResponse)
def pid() -> str:
    return f"{os.getpid()}\n"


@app.get("/loop", response_class=PlainTextResponse)
async def loop() -> str:
    import asyncio

    return f"{type(asyncio.get_running_loop()).__module__}\n"

"""
A FastAPI app served by graceful: zero-downtime restarts for ASGI.

    pip install 'graceful[asgi]' fastapi   # asgiref, and the example's FastAPI
    python examples/asgi_app.py [PORT]

or from a config (twistd -n graceful --config FILE), with

    [servers.api]
    app = "examples.asgi_app:app"
    ports = [8000]

Then, in another terminal:

    curl http://127.0.0.1:8000/pid         # {"pid": ..., "started_by": ...}
    curl http://127.0.0.1:8000/sleep &     # waits 5 s on asyncio, answers the pid
    kill -USR1 $(curl -s http://127.0.0.1:8000/pid | python3 -c 'import json, sys; print(json.load(sys.stdin)["pid"])')
                                           # restart: /sleep still completes

Twisted's asyncio reactor runs the server, so asyncio code in the app
(asyncio.sleep, create_task, async database drivers, httpx) works; graceful
picks that reactor by itself.  The lifespan's startup runs before the new
process takes over, and if it fails the old process serves on.
"""

import asyncio
import os
import time
import sys
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Open pools and clients here; a failure keeps the old process serving.
    yield {"started_by": os.getpid()}
    # Runs once this process has finished its requests.


app = FastAPI(lifespan=lifespan)


@app.get("/")
async def hello():
    return {"hello": "world"}


@app.get("/pid")
async def pid(request: Request):
    return {"pid": os.getpid(), "started_by": request.state.started_by}


@app.get("/blocking")
def blocking():
    # A plain def endpoint: FastAPI runs it in one of anyio's worker threads.
    time.sleep(0.01)
    return {"pid": os.getpid()}


@app.get("/sleep")
async def sleep():
    await asyncio.sleep(5)
    return {"pid": os.getpid()}


if __name__ == "__main__":
    import graceful as g

    s = g.server()
    s.mount_asgi("/", app)
    s.set_port(int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
    s.run()

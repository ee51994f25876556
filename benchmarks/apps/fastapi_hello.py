"""
FastAPI hello world, the same app for every ASGI server in
benchmarks/asgi.py: C{/} says hello, C{/pid} answers the serving pid.
"""

import os

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

app = FastAPI()


@app.get("/", response_class=PlainTextResponse)
def hello() -> str:
    return "Hello, world!\n"


@app.get("/pid", response_class=PlainTextResponse)
def pid() -> str:
    return f"{os.getpid()}\n"

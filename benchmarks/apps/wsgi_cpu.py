"""
The two apps of benchmarks/wsgi_cpu.py: C{raw}, a bare WSGI hello world,
and C{flask}, a Flask JSON route.  Both answer C{/pid} with the serving
process's pid (the harness waits for it).
"""

import os
from typing import Any, Callable


def raw(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/pid":
        body = b"%d\n" % os.getpid()
    else:
        body = b"Hello, world!\n"
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def _flask() -> Any:
    from flask import Flask

    app = Flask(__name__)

    @app.get("/")
    def hello() -> dict[str, str]:
        return {"message": "Hello, world!"}

    @app.get("/pid")
    def pid() -> str:
        return f"{os.getpid()}\n"

    return app


flask = _flask()

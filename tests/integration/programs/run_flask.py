"""
A Flask app for C{graceful run tests.integration.programs.run_flask:app}:
C{/pid} answers the serving pid, C{/who} what WSGI says of the client.
"""

from __future__ import annotations

import os

from flask import Flask, request

app = Flask(__name__)


@app.get("/pid")
def pid() -> str:
    return f"{os.getpid()}\n"


@app.get("/who")
def who() -> dict[str, str | None]:
    return {
        "client": request.environ.get("REMOTE_ADDR"),
        "scheme": request.environ["wsgi.url_scheme"],
        "host": request.environ.get("HTTP_HOST"),
    }

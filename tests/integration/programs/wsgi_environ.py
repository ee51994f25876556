"""
A WSGI app that answers the environ's address keys and its pid as JSON: a
config's app C{tests.integration.programs.wsgi_environ:app}.
"""

import json
import os

KEYS = ("SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR", "REMOTE_PORT", "PATH_INFO")


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), **{key: environ.get(key) for key in KEYS}}).encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]

"""
A code-API program that sets by code calls the options a config gives as
keys: an encrypted key with its password and TLS 1.3 at the least, a WSGI
app's root_path, a JSON access log and limit_concurrency.

    python tests/integration/programs/code_options.py PORT KEY PASSWORD ACCESS_LOG

C{GET /pid} answers the pid and the app's SCRIPT_NAME; C{GET /slow} the
same after 3 s.
"""

import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import graceful as g

certs = Path(__file__).resolve().parents[3] / "certs"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    if environ["PATH_INFO"] == "/slow":
        time.sleep(3.0)
    body = f"{os.getpid()} {environ['SCRIPT_NAME']}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


port, key, password, access_log = sys.argv[1:5]
server = g.server("opts")
server.set_host("127.0.0.1")
server.set_port(int(port))
server.enable_https(certs / "server.crt", key, key_password=password, min_version="1.3")
server.mount_wsgi("/", app, root_path="/api")
server.enable_admin()
g.set_access_log(access_log, format="json")
g.set_limit_concurrency(1)
g.set_ready_timeout(10)
server.run()

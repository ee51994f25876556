"""
GoFrame's HTTPS example, in graceful.

    python examples/https.py [PORT]
    curl -k https://127.0.0.1:8200/
"""

import os
import sys
from pathlib import Path

import graceful as g

certs = Path(__file__).resolve().parent.parent / "certs"

s = g.server()
s.route("/", lambda request: "Hello!\n")
s.route("/pid", lambda request: f"{os.getpid()}\n")
s.set_graceful(True)
s.enable_https(certs / "server.crt", certs / "server.key")
s.enable_admin()
s.set_port(int(sys.argv[1]) if len(sys.argv) > 1 else 8200)
s.run()

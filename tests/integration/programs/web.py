"""
A code-API program for the restart tests: one server with HTTP and HTTPS
ports.

    python tests/integration/programs/web.py HTTP_PORT HTTPS_PORT
"""

import sys
from pathlib import Path

import graceful as g
from tests.integration.programs.pages import root

certs = Path(__file__).resolve().parents[3] / "certs"

web = g.server("web")
web.mount("/", root())
web.set_host("127.0.0.1")
web.set_port(int(sys.argv[1]))
web.enable_https(certs / "server.crt", certs / "server.key")
web.set_https_port(int(sys.argv[2]))
web.enable_admin()
g.set_ready_timeout(10)
web.run()

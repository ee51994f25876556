"""
graceful serving the benchmark's hello world on one port.

    python -m benchmarks.apps.graceful_hello PORT [route|resource] [--tls]

C{route} (the default) is what a graceful user writes: C{server.route()}
handlers.  C{resource} mounts the very twisted.web tree plain_twisted.py
serves, so the two differ only by graceful's site, channel and router.
SIGUSR1 restarts, as in every graceful program.
"""

import os
import sys
from pathlib import Path

import graceful as g
from benchmarks.apps.hello import root

CERTS = Path(__file__).resolve().parents[2] / "certs"


def main() -> None:
    port = int(sys.argv[1])
    variant = sys.argv[2] if len(sys.argv) > 2 and not sys.argv[2].startswith("-") else "route"
    s = g.server()
    if variant == "resource":
        s.mount("/", root())
    else:
        s.route("/", lambda request: "Hello!\n")
        s.route("/pid", lambda request: f"{os.getpid()}\n")
    if "--tls" in sys.argv[2:]:
        s.enable_https(CERTS / "server.crt", CERTS / "server.key")
    s.set_host("127.0.0.1")
    s.set_port(port)
    s.run()


if __name__ == "__main__":
    main()

"""
The ceiling for graceful's design: plain twisted.web serving the same
resource tree on one port, nothing else.

    python -m benchmarks.apps.plain_twisted PORT [--tls]
"""

import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.web.server import Site

from benchmarks.apps.hello import root

CERTS = Path(__file__).resolve().parents[2] / "certs"


class QuietSite(Site):
    "No access log, as for every server the benchmark compares."

    noisy = False

    def log(self, request):
        pass


def main() -> None:
    port = int(sys.argv[1])
    site = QuietSite(root())
    if "--tls" in sys.argv[2:]:
        from twisted.internet import ssl

        options = ssl.DefaultOpenSSLContextFactory(
            str(CERTS / "server.key"), str(CERTS / "server.crt")
        )
        reactor.listenSSL(port, site, options, interface="127.0.0.1")
    else:
        reactor.listenTCP(port, site, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()

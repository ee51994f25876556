"""
What graceful adds to a request, measured in process and without sockets:
each site's channel is fed the same keep-alive request over and over on an
in-memory transport, so only Python's work for one request is timed, with
none of the network or the machine's other load that makes wrk's numbers
move.

    python -m benchmarks.micro [--requests 10000] [--repeat 3]

Prints JSON: microseconds per request (best of C{--repeat}) for

- C{twisted.web}: plain C{Site} on the plain resource tree;
- C{graceful-resource}: the site a graceful server builds, on the same tree
  (mounted at C{/}): what graceful's site and channel add;
- C{graceful}: a graceful server with C{route()} handlers, as
  examples/basic.py: everything graceful adds;
- C{twisted.web+router}: plain C{Site} on a C{graceful.Router}: what the
  routes cost without graceful's site.

The graceful sites are built through the public API (C{server.start()} on
port 0, loopback) and taken from C{server.site}.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


def per_request(site, requests: int, repeat: int) -> float:
    from twisted.internet.testing import StringTransport

    channel = site.buildProtocol(None)
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(REQUEST)
    if b"Hello!" not in transport.value():
        raise RuntimeError(f"unexpected answer: {transport.value()[:200]!r}")
    best = float("inf")
    for _ in range(repeat):
        gc.collect()
        began = time.perf_counter()
        for i in range(requests):
            channel.dataReceived(REQUEST)
            if i % 256 == 0:
                transport.clear()
        best = min(best, (time.perf_counter() - began) / requests * 1e6)
    transport.clear()
    return best


def sites() -> dict:
    import graceful as g
    from benchmarks.apps.hello import root
    from benchmarks.apps.plain_twisted import QuietSite

    def graceful_site(name: str, build) -> object:
        server = g.server(name)
        build(server)
        server.set_host("127.0.0.1")
        server.set_port(0)
        server.start()
        site = getattr(server, "site", None)
        if site is None:
            raise RuntimeError("graceful.Server has no .site: update benchmarks/micro.py")
        return site

    def routes(target) -> None:
        target.route("/", lambda request: "Hello!\n")
        target.route("/pid", lambda request: f"{os.getpid()}\n")

    router = g.Router()
    routes(router)
    return {
        "twisted.web": QuietSite(root()),
        "graceful-resource": graceful_site("micro-resource", lambda s: s.mount("/", root())),
        "graceful": graceful_site("micro-routes", routes),
        "twisted.web+router": QuietSite(router),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.micro")
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    built = sites()
    results: dict[str, float] = {}
    # Two passes in alternating order; the best of each.
    for order in (list(built), list(reversed(built))):
        for name in order:
            value = per_request(built[name], args.requests, args.repeat)
            results[name] = min(results.get(name, float("inf")), value)
    json.dump({k: round(v, 3) for k, v in results.items()}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""
The CPU an ASGI server spends per keep-alive request, graceful against
uvicorn (h11 on asyncio), in one process and without wrk: each server's
protocol serves real loopback TCP connections whose client is a few lines
on the same event loop, so what the machine's other load does to wrk's
numbers does not move these.  The client's share is the same for both.

    python -m benchmarks.asgi_micro [--server graceful|uvicorn] [--app fastapi|raw]
        [--requests 20000] [--connections 32]

Without C{--server} it runs each server in its own fresh interpreter (the
asyncio reactor is installed once per process), alternating twice, and
prints one JSON line per run: CPU microseconds per request (all threads:
FastAPI's C{def} endpoint runs in anyio's worker threads) and requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from typing import Any, Callable

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
BODY = b"Hello, world!\n"


def app_named(name: str) -> Any:
    if name == "fastapi":
        from benchmarks.apps.fastapi_hello import app
    else:
        from benchmarks.apps.asgi_hello import app
    return app


def connected_pairs(n: int) -> list[tuple[socket.socket, socket.socket]]:
    listener = socket.create_server(("127.0.0.1", 0))
    pairs = []
    for _ in range(n):
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        for sock in (client, server):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pairs.append((client, server))
    listener.close()
    return pairs


def drive(
    loop: asyncio.AbstractEventLoop,
    clients: list[socket.socket],
    requests: int,
    done: Callable[[], None],
) -> dict[str, float]:
    """
    Each client sends a request, waits for its answer, sends the next, until
    C{requests} answers came in; then C{done()}.
    """
    answered = 0
    sent = 0
    started: dict[str, float] = {}

    def send(client: socket.socket) -> None:
        nonlocal sent
        if sent < requests:
            sent += 1
            client.send(REQUEST)

    def readable(client: socket.socket) -> None:
        nonlocal answered
        data = client.recv(65536)
        answered += data.count(BODY)
        if not data or answered >= requests:
            if answered >= requests and "cpu" not in started:
                started["cpu"] = time.process_time() - started["cpu0"]
                started["wall"] = time.perf_counter() - started["wall0"]
                done()
            return
        if data.endswith(BODY):
            send(client)

    for client in clients:
        loop.add_reader(client, readable, client)
    started["cpu0"] = time.process_time()
    started["wall0"] = time.perf_counter()
    for client in clients:
        send(client)
    return started


def run_graceful(app_name: str, requests: int, connections: int) -> dict[str, float]:
    from twisted.internet import asyncioreactor

    asyncioreactor.install()
    from twisted.internet import reactor

    import graceful as g

    server = g.server("micro")
    server.mount_asgi("/", app_named(app_name))
    server.set_host("127.0.0.1")
    server.set_port(0)
    server.start()
    site = server.site
    loop = reactor._asyncioEventloop  # type: ignore[attr-defined]
    pairs = connected_pairs(connections)
    for _, sock in pairs:
        reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, site)
        sock.close()  # adoptStreamConnection duplicated it
    result: dict[str, float] = {}
    clients = [c for c, _ in pairs]

    def measure(size: int, then: Callable[[], None]) -> None:
        stats = drive(loop, clients, size, lambda: loop.call_soon(finished, stats, then))

    def finished(stats: dict[str, float], then: Callable[[], None]) -> None:
        for client in clients:
            loop.remove_reader(client)
        result.update(stats)
        then()

    def begin() -> None:
        # After lifespan startup, as a real start; warm up, then measure.
        measure(2000, lambda: measure(requests, reactor.stop))

    d = server.runtime.lifespans[0].startup() if server.runtime.lifespans else None
    if d is not None:
        d.addCallback(lambda _: begin())
    else:
        reactor.callWhenRunning(begin)
    reactor.run()
    return result


def run_uvicorn(app_name: str, requests: int, connections: int) -> dict[str, float]:
    from uvicorn.config import Config
    from uvicorn.protocols.http.h11_impl import H11Protocol
    from uvicorn.server import ServerState

    config = Config(app_named(app_name), http="h11", loop="asyncio", lifespan="off",
                    access_log=False, log_level="warning")
    config.load()
    state = ServerState()
    # What uvicorn's main loop sets every second: a Date and its Server
    # header, as twisted.web sends both.
    from email.utils import formatdate

    state.default_headers = [(b"date", formatdate(usegmt=True).encode())] + config.encoded_headers
    result: dict[str, float] = {}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        pairs = connected_pairs(connections)
        for _, sock in pairs:
            await loop.connect_accepted_socket(
                lambda: H11Protocol(config, state, {}, loop), sock
            )
        for size in (2000, requests):
            finished = loop.create_future()
            stats = drive(loop, [c for c, _ in pairs], size, lambda: finished.set_result(None))
            await finished
            result.update(stats)
            for client, _ in pairs:
                loop.remove_reader(client)

    asyncio.run(main())
    return result


def one(server: str, app_name: str, requests: int, connections: int) -> dict[str, Any]:
    run = run_graceful if server == "graceful" else run_uvicorn
    result = run(app_name, requests, connections)
    return {
        "server": server,
        "app": app_name,
        "requests": requests,
        "cpu_us_per_request": round(result["cpu"] / requests * 1e6, 1),
        "requests_per_s": round(requests / result["wall"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.asgi_micro")
    parser.add_argument("--server", choices=("graceful", "uvicorn"))
    parser.add_argument("--app", choices=("fastapi", "raw"), default="fastapi")
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if args.server:
        print(json.dumps(one(args.server, args.app, args.requests, args.connections)))
        return 0
    for _ in range(args.rounds):
        for server in ("graceful", "uvicorn"):
            subprocess.run(
                [sys.executable, "-m", "benchmarks.asgi_micro", "--server", server,
                 "--app", args.app, "--requests", str(args.requests),
                 "--connections", str(args.connections)],
                check=True, env=os.environ,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())

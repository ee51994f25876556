"""
examples/websocket.py's app (WebSocket echo, SSE clock) on one port with
the drain settings given, for benchmarks/websocket_drain.py.

    python -m benchmarks.apps.graceful_live PORT DRAIN_TIMEOUT DRAIN_SPREAD
"""

import sys

import graceful as g
from examples.websocket import app


def main() -> None:
    s = g.server("live")
    s.mount("/", app())
    s.set_host("127.0.0.1")
    s.set_port(int(sys.argv[1]))
    g.set_drain_timeout(float(sys.argv[2]))
    g.set_drain_spread(float(sys.argv[3]))
    g.set_ready_timeout(30)
    s.run()


if __name__ == "__main__":
    main()

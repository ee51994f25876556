"""
examples/websocket.py's app (WebSocket echo, SSE clock) on one loopback
port with the drain settings given: the long-lived connection tests and
benchmarks/websocket_drain.py both restart it.

    python -m harness.programs.live PORT DRAIN_TIMEOUT DRAIN_SPREAD [CLOSE_HANDSHAKE_TIMEOUT]
"""

import sys

import graceful as g
from examples.websocket import app


def main() -> None:
    s = g.server("live")
    s.mount("/", app(*(float(a) for a in sys.argv[4:5])))
    s.set_host("127.0.0.1")
    s.set_port(int(sys.argv[1]))
    g.set_drain_timeout(float(sys.argv[2]))
    g.set_drain_spread(float(sys.argv[3]))
    # Generous: a benchmark's thousand clients load the machine while the
    # new process starts.
    g.set_ready_timeout(30)
    s.run()


if __name__ == "__main__":
    main()

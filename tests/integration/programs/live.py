"""
The WebSocket and SSE example (examples/websocket.py) for the long-lived
connection tests, with the drain settings given.

    python tests/integration/programs/live.py PORT DRAIN_TIMEOUT DRAIN_SPREAD [CLOSE_HANDSHAKE_TIMEOUT]
"""

import sys

import graceful as g
from examples.websocket import app

s = g.server("live")
s.mount("/", app(*(float(a) for a in sys.argv[4:5])))
s.set_host("127.0.0.1")
s.set_port(int(sys.argv[1]))
g.set_drain_timeout(float(sys.argv[2]))
g.set_drain_spread(float(sys.argv[3]))
g.set_ready_timeout(10)
s.run()

"""
GoFrame's multi-server example, in graceful: two servers on four ports.

    python examples/multi.py [PORT1 PORT2 PORT3 PORT4]
    curl http://127.0.0.1:8100/ http://127.0.0.1:8300/
"""

import os
import sys

import graceful as g

ports = [int(p) for p in sys.argv[1:5]] or [8100, 8200, 8300, 8400]

s1 = g.server("s1")
s1.route("/", lambda request: f"s1 {os.getpid()}\n")
s1.route("/pid", lambda request: f"{os.getpid()}\n")
s1.set_graceful(True)
s1.enable_admin()
s1.set_port(ports[0], ports[1])
s1.start()

s2 = g.server("s2")
s2.route("/", lambda request: f"s2 {os.getpid()}\n")
s2.route("/pid", lambda request: f"{os.getpid()}\n")
s2.set_graceful(True)
s2.enable_admin()
s2.set_port(ports[2], ports[3])
s2.start()

g.wait()

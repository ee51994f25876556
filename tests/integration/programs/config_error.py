"""
A code-API program whose C{start()} fails after its port is bound (its
admin socket cannot be made), that catches the L{graceful.ConfigError} and,
still alive, says whether a fresh socket can bind the port again.

    python tests/integration/programs/config_error.py PORT ADMIN_SOCKET_PATH
"""

import socket
import sys

import graceful as g

port, admin_socket = int(sys.argv[1]), sys.argv[2]
g.set_admin_socket(admin_socket)
s = g.server("web")
s.set_host("127.0.0.1")
s.set_port(port)
s.route("/", lambda request: b"never served\n")
try:
    s.start()
except g.ConfigError as e:
    print(f"start failed: {e}", flush=True)
else:
    print("started", flush=True)
    sys.exit(2)

probe = socket.socket()  # no SO_REUSEADDR: any socket still bound refuses it
try:
    probe.bind(("127.0.0.1", port))
    probe.listen(1)
except OSError as e:
    print(f"port still held: {e}", flush=True)
else:
    print("port free again", flush=True)
finally:
    probe.close()

"""
graceful serving the hello world with N workers.

    python -m benchmarks.apps.graceful_workers PORT WORKERS
"""

import os
import sys

import graceful as g


def main() -> None:
    port, workers = int(sys.argv[1]), int(sys.argv[2])
    g.set_workers(workers)
    s = g.server()
    s.route("/", lambda request: "Hello!\n")
    s.route("/pid", lambda request: f"{os.getpid()}\n")
    s.set_host("127.0.0.1")
    s.set_port(port)
    s.run()


if __name__ == "__main__":
    main()

"""
benchmarks/apps/fastapi_hello.py under graceful, one process, one port.

    python -m benchmarks.apps.graceful_fastapi PORT
"""

import sys

import graceful as g
from benchmarks.apps.fastapi_hello import app


def main() -> None:
    s = g.server()
    s.mount_asgi("/", app)
    s.set_host("127.0.0.1")
    s.set_port(int(sys.argv[1]))
    s.run()


if __name__ == "__main__":
    main()

"""
An app of benchmarks/apps/asgi_cpu.py under graceful, one process, one port,
on the HTTP implementation given.

    python -m benchmarks.apps.graceful_asgi APP PORT native|twisted
"""

import sys

import graceful as g
from benchmarks.apps import asgi_cpu


def main() -> None:
    name, port, impl = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = g.server()
    s.mount_asgi("/", getattr(asgi_cpu, name))
    s.set_http_impl(impl)
    s.set_host("127.0.0.1")
    s.set_port(port)
    s.run()


if __name__ == "__main__":
    main()

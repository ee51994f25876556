"""
An app of benchmarks/apps/wsgi_cpu.py under graceful, one process, one port,
on the HTTP implementation given.

    python -m benchmarks.apps.graceful_wsgi APP PORT native|twisted
"""

import sys

import graceful as g
from benchmarks.apps import wsgi_cpu


def main() -> None:
    name, port, impl = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    s = g.server()
    s.mount_wsgi("/", getattr(wsgi_cpu, name))
    s.set_http_impl(impl)
    s.set_host("127.0.0.1")
    s.set_port(port)
    s.run()


if __name__ == "__main__":
    main()

"""
An app of benchmarks/apps/asgi_cpu.py or wsgi_cpu.py under graceful, one
process, one port, on the HTTP implementation given.

    python -m benchmarks.apps.graceful_cpu asgi|wsgi APP PORT native|twisted
"""

import importlib
import sys

import graceful as g


def main() -> None:
    kind, name, port, impl = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    app = getattr(importlib.import_module(f"benchmarks.apps.{kind}_cpu"), name)
    s = g.server()
    if kind == "asgi":
        s.mount_asgi("/", app)
    else:
        s.mount_wsgi("/", app)
    s.set_http_impl(impl)
    s.set_host("127.0.0.1")
    s.set_port(port)
    s.run()


if __name__ == "__main__":
    main()

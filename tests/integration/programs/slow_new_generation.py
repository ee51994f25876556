"""
A server with a pidfile and a background service whose later generations
take 1.5 s to start: the window in which a test kills the old process after
it started the new one and before the new one is ready.

    python tests/integration/programs/slow_new_generation.py PORT DIRECTORY

The service writes DIRECTORY/started-PID when it starts.
"""

import os
import sys
import time
from pathlib import Path

# Before graceful reads (and removes) the variable.
if os.environ.get("GRACEFUL_GENERATION", "1") != "1":
    time.sleep(1.5)

from twisted.application.service import Service  # noqa: E402

import graceful as g  # noqa: E402

directory = Path(sys.argv[2]).absolute()


class Marker(Service):
    def startService(self) -> None:
        super().startService()
        (directory / f"started-{os.getpid()}").write_text("")


g.set_pidfile(str(directory / "app.pid"))
g.set_ready_timeout(10)
g.add_service(Marker())
web = g.server()
web.route("/pid", lambda request: f"{os.getpid()}\n")
web.set_host("127.0.0.1")
web.set_port(int(sys.argv[1]))
web.run()

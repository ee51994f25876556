"""
examples/background.py's services behind a web server, for the deploy tests;
a file named "fail-start" in the spool directory makes a new process fail
before it serves, as a broken release would.

    python tests/integration/programs/background_app.py PORT SPOOL_DIR [WORKERS]
"""

import os
import sys
from pathlib import Path

import graceful as g
from examples.background import SpoolConsumer, scheduler

spool = Path(sys.argv[2]).absolute()
if (spool / "fail-start").exists():
    sys.exit("fail-start present: this release cannot start")
if len(sys.argv) > 3:
    g.set_workers(int(sys.argv[3]))
g.add_service(scheduler(spool, every=0.1, work=0.15))
g.add_service(SpoolConsumer(spool, work=0.05))
web = g.server()
web.route("/pid", lambda request: f"{os.getpid()}\n")
web.set_host("127.0.0.1")
web.enable_admin()
web.set_port(int(sys.argv[1]))
g.set_ready_timeout(10)
web.run()

"""
A code-API program with workers, for the worker tests.

    python tests/integration/programs/workers.py WORKERS HTTP_PORT [HTTPS_PORT]
"""

import os
import sys
from pathlib import Path

# A broken release for one slot: the worker of slot 1 fails to start while
# the file named by FAIL_SLOT_1 exists (checked before graceful reads the
# variable).
flag = os.environ.get("FAIL_SLOT_1")
if flag and os.path.exists(flag) and os.environ.get("GRACEFUL_WORKER") == "1":
    sys.exit("FAIL_SLOT_1 is set: this worker cannot start")

import graceful as g  # noqa: E402
from tests.integration.programs.pages import root  # noqa: E402

certs = Path(__file__).resolve().parents[3] / "certs"

g.set_workers(int(sys.argv[1]))
if flag:
    # Each worker imports this afresh: forked from a template, none would.
    g.set_preload(False)
g.set_ready_timeout(10)
# Recycling and watchdog limits, for the recycling tests.
g.set_max_requests(int(os.environ.get("MAX_REQUESTS", "0")))
g.set_worker_timeout(float(os.environ.get("WORKER_TIMEOUT", "30")))
web = g.server("web")
web.mount("/", root())
web.set_host("127.0.0.1")
web.set_port(int(sys.argv[2]))
if len(sys.argv) > 3:
    web.enable_https(certs / "server.crt", certs / "server.key")
    web.set_https_port(int(sys.argv[3]))
web.enable_admin()
web.enable_health()
web.run()

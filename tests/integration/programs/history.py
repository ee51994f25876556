"""
A code-API program for the restart-history tests: one HTTP port, the admin,
a verify path; a release is broken while the file named by BROKEN_RELEASE
exists (checked at import, as a bad release's import fails).

    python tests/integration/programs/history.py HTTP_PORT
"""

import os
import sys

flag = os.environ.get("BROKEN_RELEASE")
if flag and os.path.exists(flag):
    sys.exit("broken release: BROKEN_RELEASE is set")

import graceful as g  # noqa: E402
from tests.integration.programs.pages import root  # noqa: E402

web = g.server("web")
web.mount("/", root())
web.set_host("127.0.0.1")
web.set_port(int(sys.argv[1]))
web.set_verify("/pid")
web.enable_admin()
g.set_ready_timeout(10)
web.run()

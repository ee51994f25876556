"""
Integration test: a keep-alive connection reused across restarts, on a real
process.  A plain C{http.client} connection (which does not look for a
close before reusing its socket) POSTs after each hand-over, later than the
short shutdown grace: the old process answers it with C{Connection: close}
instead of having closed the connection under it, so no request is lost.
benchmarks/keepalive_reuse.py measures the rates under random pauses.
"""

from __future__ import annotations

import http.client
import time

from twisted.trial.unittest import TestCase

from graceful.http.site import IDLE_GRACE

from tests.support import EXAMPLES, ServerProcess, free_port, pid_of, wait_until
from .test_restart import restart

#: Past the shutdown grace, within the hand-over one: where a closed idle
#: connection used to cost the request.
PAUSE = IDLE_GRACE + 0.3


class KeepAliveReuseTests(TestCase):
    def test_plain_client_reuses_connection_across_restarts(self) -> None:
        port = free_port()
        proc = ServerProcess.python(EXAMPLES / "basic.py", str(port)).start()
        self.addCleanup(proc.stop)
        wait_until(lambda: pid_of(port), what="the server to answer")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.addCleanup(conn.close)

        def post() -> tuple[int, int, str | None]:
            conn.request("POST", "/pid", body=b"not idempotent")
            response = conn.getresponse()
            return response.status, int(response.read()), response.getheader("connection")

        self.assertEqual(post()[0], 200)
        answers, expected = [], []
        for _ in range(4):
            old, new = restart(proc, port)
            # The connection now sits idle on the draining old process.
            time.sleep(PAUSE)
            # Errors here (a reset, a broken pipe, an empty answer) are
            # what the test is about: no try, let them fail it.
            answers.append(post())
            # http.client reconnects after the close, to the new process,
            # and keeps that connection for the next restart.
            answers.append(post())
            # The old process answered on the kept connection, and closed it.
            expected += [(200, old, "close"), (200, new, None)]
        self.assertEqual(answers, expected)

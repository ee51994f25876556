# -*- test-case-name: tests.unit.lifecycle.test_verification -*-
"""
What a serving process does before it reports ready: its ASGI apps start,
then each server's C{verify} paths answer through its own HTTP stack.  A
failure ends the process as a failed ASGI startup does: one line on stderr
(and to the old process, which serves on), exit 1.
"""

from __future__ import annotations

import sys

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..http.verify import Verification, VerifyFailed
from .core import ProcessCore

#: The share of ready_timeout the verify requests may use; the rest is left
#: for the report to reach the old process before it gives up on us (its
#: clock started when it spawned us, before our interpreter did).
VERIFY_SHARE = 0.9


def verify_budget(process: ProcessCore) -> float:
    """
    Seconds left for the verify requests: what this process has left of
    ready_timeout, less a margin.
    """
    elapsed = max(0.0, process.environment.now() - process.started_at)
    return max(0.0, process.settings.ready_timeout * VERIFY_SHARE - elapsed)


def verify_servers(process: ProcessCore) -> Deferred[None] | None:
    """
    Ask every server's C{verify} paths; C{None} when no server has any.
    """
    servers = [
        (server.name, server.site, server.verify_paths)
        for server in process.servers.values()
        if server.verify_paths and server.site is not None
    ]
    if not servers:
        return None
    return Verification(process.reactor, servers, verify_budget(process), process.pid).run()


def start_verified(process: ProcessCore) -> Deferred[None]:
    """
    Start the ASGI apps, then verify.  The result fires once both are done;
    on a failure it never fires: the process says why and exits.
    """
    result: Deferred[None] = Deferred()
    started = process.start_apps()
    started.addCallback(lambda _: verify_servers(process))
    started.addCallbacks(lambda _: result.callback(None), lambda f: _failed(process, f))
    return result


def _failed(process: ProcessCore, failure: Failure) -> None:
    if not failure.check(VerifyFailed):
        process.apps_failed(failure)
        return
    reason = str(failure.value)
    process.old_process.report_error(reason)
    sys.stderr.write(f"graceful: error: {reason}\n")
    sys.stderr.flush()
    process.environment.exit(1)

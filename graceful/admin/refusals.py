# -*- test-case-name: tests.unit.admin.test_resource -*-
"""
The refused admin requests of a process: counted by reason for the metrics,
and logged in aggregate so that a flood of them cannot flood the log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._logging import NamedLogger

if TYPE_CHECKING:
    from .host import AdminHost

#: Seconds between two log lines about refused admin requests.
REFUSAL_LOG_INTERVAL = 10.0
#: Peers named in one such line; more are summed up as "and others".
REFUSAL_LOG_PEERS = 10


class Refusals:
    """
    The refused admin requests of one process: counted by reason, and
    logged in aggregate.  The first refusal is logged at once; the ones
    that follow within L{REFUSAL_LOG_INTERVAL} are summed up in one line at
    its end, and so on while they keep coming.  Recording one costs a few
    dictionary and set operations: no formatting, no logging.

    @ivar counts: refusals by reason (C{"no_token"}, C{"wrong_token"},
        C{"cross_origin"}) since the process started, for the metrics.
    """

    _log = NamedLogger("graceful._refusals.Refusals")

    def __init__(
        self,
        clock: Any,
        pid: int,
        interval: float = REFUSAL_LOG_INTERVAL,
        max_peers: int = REFUSAL_LOG_PEERS,
    ) -> None:
        self.counts: dict[str, int] = {}
        self._clock = clock
        self._pid = pid
        self._interval = interval
        self._max_peers = max_peers
        self._pending: dict[str, int] = {}
        self._peers: dict[str, None] = {}  # insertion-ordered set
        self._more_peers = False
        self._window: Any = None

    def refused(self, reason: str, peer: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self._pending[reason] = self._pending.get(reason, 0) + 1
        if peer not in self._peers:
            if len(self._peers) < self._max_peers:
                self._peers[peer] = None
            else:
                self._more_peers = True
        if self._window is None:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            self._window = None
            return
        pending, self._pending = self._pending, {}
        peers = ", ".join(self._peers) + (" and others" if self._more_peers else "")
        self._peers, self._more_peers = {}, False
        count = sum(pending.values())
        reasons = ", ".join(
            f"{reason.replace('_', ' ')}: {n}" for reason, n in sorted(pending.items())
        )
        # A request with no token is how HTTP auth begins (a browser asks
        # the person, then sends it again): info.  Anything else: warn.
        emit = self._log.info if set(pending) == {"no_token"} else self._log.warn
        emit(
            "{pid}: admin refused {count} request{s} ({reasons}) from {peers}",
            pid=self._pid,
            count=count,
            s="" if count == 1 else "s",
            reasons=reasons,
            peers=peers,
        )
        self._window = self._clock.callLater(self._interval, self._flush)


def refusals_of(runtime: AdminHost) -> Refusals:
    """
    The refusal counts of C{runtime} (every server of it shares them).
    """
    return runtime.admin.kept(Refusals, lambda: Refusals(runtime.reactor, runtime.pid))



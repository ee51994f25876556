# -*- test-case-name: tests.unit.lifecycle.test_departure -*-
"""
How a serving process leaves, handed over or shut down: stop accepting,
tell the app, stop the services, drain the connections (bounded by
drain_timeout), stop the ASGI apps, exit.
"""

from __future__ import annotations

from typing import Any, Callable

from attrs import define, field
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall

from .core import ProcessCore, connections_by_kind
from .._status import DrainStatus


@define(eq=False)
class Departure:
    """
    One process leaving.

    @ivar core: the process.
    @ivar reason: C{"restart"} when a successor serves in our place (idle
        keep-alive connections then wait for their next request, and
        WebSockets hear 1012), else C{"shutdown"}.
    @ivar began: the reactor's time the drain began, once it has.
    @ivar final: whether no process takes our UNIX socket files over.
    @ivar handed_over: whether a successor owns the pidfile now.
    """

    core: ProcessCore
    reason: str
    final: bool
    handed_over: bool = False
    began: float | None = None
    _timeout: IDelayedCall | None = None
    _sites: list[Any] = field(factory=list)

    def start(self, services_stopped: Callable[[], Deferred[Any] | None] = lambda: None) -> None:
        """
        Begin; C{services_stopped} runs once the services have stopped (a
        result it returns, such as a flushed message, is waited for too).
        """
        core = self.core
        for server in core.servers.values():
            server.stop_accepting()
        if core.admin_port is not None:
            core.admin_port.stopListening()
        core.run_drain_callbacks()
        services = core.stop_services()
        services.addBoth(lambda _: services_stopped())
        self._sites = core.sites()
        self.began = core.reactor.seconds()
        timeout_s = core.settings.drain_timeout
        idle_grace = None
        if self.reason == "restart" and self._sites:
            # Here: a master has no site, and imports no twisted.web.
            from ..http.site import handover_idle_grace

            idle_grace = handover_idle_grace(timeout_s)
        drained = DeferredList(
            [
                site.drain(
                    self.reason,
                    spread=core.settings.spread,
                    timeout=timeout_s,
                    idle_grace=idle_grace,
                )
                for site in self._sites
            ]
            + [services]
        )
        in_flight = sum(site.in_flight for site in self._sites)
        if in_flight:
            core.log.info(
                "{pid}: finishing {count} request(s) in flight", pid=core.pid, count=in_flight
            )
        self._timeout = core.reactor.callLater(timeout_s, self._timed_out)
        drained.addBoth(lambda _: self._drained())

    def _drained(self) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
            self._finish()

    def _finish(self) -> None:
        self.core.stop_apps().addBoth(
            lambda _: self.core.exit(self.handed_over, final=self.final)
        )

    def _timed_out(self) -> None:
        core = self.core
        kinds: dict[str, int] = {}
        for site in self._sites:
            for kind, count in connections_by_kind(site).items():
                kinds[kind] = kinds.get(kind, 0) + count
        aborted = sum(site.abort() for site in self._sites)
        # "aborted 3 connection(s): 2 websocket, 1 http/1.1"
        which = ", ".join(
            f"{count} {kind}"
            for kind, count in sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
            if count
        )
        core.log.warn(
            "{pid}: drain_timeout of {timeout:g}s reached: aborted {count} connection(s){which}",
            pid=core.pid,
            timeout=core.settings.drain_timeout,
            count=aborted,
            which=f": {which}" if aborted and which else "",
        )
        # Services that would not stop must not hold the exit up either.
        core.reactor.callLater(0, self._finish)

    def progress(self) -> DrainStatus | None:
        """
        The status's C{drain}: since when, the window, what is left.
        """
        core = self.core
        if self.began is None:
            return None
        return DrainStatus(
            reason=self.reason,
            elapsed=max(0.0, core.reactor.seconds() - self.began),
            spread=core.settings.spread,
            timeout=core.settings.drain_timeout,
            connections_left=sum(sum(connections_by_kind(s).values()) for s in core.sites()),
        )

# -*- test-case-name: tests.unit.admin.test_resource -*-
"""
What the admin pages do: restart (coalescing a burst into one restart) and
shut down, each logged with the peer that asked.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from twisted.python.failure import Failure
from twisted.web.server import Request

from .._errors import ExecutableNotAllowed, RestartRefused
from .._logging import NamedLogger
from .._status import ProcessStatus
from .answers import error_answer, executable_field, json_answer, peer_address, wants_html
from .page import message_page

if TYPE_CHECKING:
    from .host import AdminHost
    from ..http.server import Server

ACTIONS = ("restart", "reload", "shutdown")

#: A plain restart asked for this soon after a good restart ended, with the
#: release directory unchanged, starts nothing: it belongs to the burst
#: that restart answered (100 POSTs in 1 s gave three restarts in a row,
#: each taking ~0.3 s here, the later ones for nothing).
RESTART_COALESCE_SECONDS = 1.0


def _serving_directory() -> str:
    # Where this process runs: the release directory as resolved when it
    # was started (a later symlink flip does not move it).
    return os.path.realpath(os.getcwd())


def just_restarted(host: AdminHost, status: ProcessStatus) -> float | None:
    """
    Seconds since the good restart that ended less than
    L{RESTART_COALESCE_SECONDS} ago, for the release this process serves;
    L{None} if there was none (or the release directory now names another).
    """
    last = status.last_restart
    if last is None or not last.ok or last.at is None or status.restarting or status.draining:
        return None
    ago = host.now() - last.at
    if not 0 <= ago < RESTART_COALESCE_SECONDS:
        return None
    directory = host.settings.directory
    if directory and os.path.realpath(directory) != _serving_directory():
        return None  # a new release was put in place meanwhile
    return ago


class AdminActions:
    """
    The admin's POSTs, once access is granted: a restart and a shutdown of
    the process, answered in JSON or, to a browser, with a page.
    """

    # The lines keep the namespace they have always had.
    _log = NamedLogger("graceful._admin.AdminResource")

    def __init__(self, runtime: AdminHost, server: Server) -> None:
        self._runtime = runtime
        self._server = server

    @property
    def prefix(self) -> str:
        return self._server.admin_prefix or "/debug/admin"

    def _error(self, request: Request, code: int, message: str) -> bytes:
        return error_answer(request, code, message, self.prefix)

    def restart(self, request: Request, page: str) -> bytes:
        executable = executable_field(request)
        peer = peer_address(request)
        if executable:
            self._log.info(
                "{pid}: admin {action} asked for by {peer} (executable {executable})",
                pid=self._runtime.pid,
                action=page,
                peer=peer,
                executable=executable,
            )
        else:
            self._log.info(
                "{pid}: admin {action} asked for by {peer}",
                pid=self._runtime.pid,
                action=page,
                peer=peer,
            )
        # With workers, the group's generation and its master's pid.
        group = self._runtime.status()
        generation = group.generation
        if self._runtime.taking_over:
            return self._error(request, 409, "restart refused: a restart is already running")
        ago = None if executable else just_restarted(self._runtime, group)
        if ago is not None:
            self._log.info(
                "{pid}: admin {action} for {peer} coalesced with the restart that ended "
                "{ago:.2f}s ago: nothing started",
                pid=self._runtime.pid, action=page, peer=peer, ago=ago,
            )
            return self.coalesced(request, group, ago)
        refusals: list[Failure] = []
        # Untrusted: the runtime checks the executable against
        # allowed_executables and refuses a second restart (and logs that).
        # A later failure of the restart is logged by the runtime.
        d = self._runtime.restart(executable, trusted=False)
        d.addErrback(refusals.append)
        if refusals:
            failure = refusals[0]
            if failure.check(ExecutableNotAllowed):
                self._log.warn(
                    "{pid}: admin {action} for {peer} refused: {error}",
                    pid=self._runtime.pid,
                    action=page,
                    peer=peer,
                    error=str(failure.value),
                )
                return self._error(request, 403, str(failure.value))
            if failure.check(RestartRefused):
                why = "shutting down" if self._runtime.draining else "a restart is already running"
                return self._error(request, 409, f"restart refused: {why}")
            self._log.failure(
                "{pid}: admin {action} for {peer} failed", failure,
                pid=self._runtime.pid, action=page, peer=peer,
            )
            return self._error(request, 500, f"restart failed: {failure.getErrorMessage()}")
        if wants_html(request):
            request.setResponseCode(303)
            location = f"{self.prefix}?restarted_from={generation}"
            request.setHeader(b"location", location.encode("utf-8"))
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return message_page("Restarting", "A new process is starting.", location)
        return json_answer(
            request,
            202,
            {
                "restarting": True,
                "pid": group.pid,
                "generation": generation,
                "next_generation": generation + 1,
                "executable": executable,
            },
        )

    def coalesced(self, request: Request, group: ProcessStatus, ago: float) -> bytes:
        if wants_html(request):
            request.setResponseCode(303)
            request.setHeader(b"location", self.prefix.encode("utf-8"))
            return message_page("Restarted just now", "Nothing more to do.", self.prefix)
        body = {"restarting": False, "coalesced": True, "pid": group.pid,
                "generation": group.generation, "restarted_seconds_ago": round(ago, 3)}
        return json_answer(request, 200, body)

    def shutdown(self, request: Request) -> bytes:
        peer = peer_address(request)
        self._log.info(
            "{pid}: admin {action} asked for by {peer}",
            pid=self._runtime.pid,
            action="shutdown",
            peer=peer,
        )
        already = self._runtime.draining
        group = self._runtime.status()
        in_flight = max(0, sum(s.in_flight for s in self._runtime.servers.values()) - 1)
        # After this answer is written: shutting down stops accepting first.
        self._runtime.reactor.callLater(0, self.shut_down)
        if wants_html(request):
            request.setResponseCode(202)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            return message_page(
                "Shutting down",
                f"Process {self._runtime.pid} stops accepting, finishes the "
                f"{in_flight} other request(s) in flight, and exits. "
                "This page will not come back until the server is started again.",
            )
        return json_answer(
            request,
            202,
            {
                "shutting_down": True,
                "already": already,
                "pid": group.pid,
                "generation": group.generation,
                "in_flight": in_flight,
            },
        )

    def shut_down(self) -> None:
        self._runtime.shutdown().addErrback(
            lambda f: self._log.failure("{pid}: shutdown failed", f, pid=self._runtime.pid)
        )

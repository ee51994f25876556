# -*- test-case-name: tests.unit.admin.test_operations -*-
"""
The admin's operations beside C{status}: C{GET prefix/history}, the last
restarts (L{graceful._history}), and C{POST prefix/workers}, the worker
count without a restart (L{graceful.workers.scaling}).  The token rules
are the admin's own: the same check as C{status}, and for the POST the
same origin check as C{restart}.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from .._errors import WorkerCountRefused
from ..lifecycle.roles import check_count
from .host import AdminHost
from .answers import json_answer, json_body, peer_address
from .resource import AdminResource

#: The operations' pages and the method each takes.
OPERATIONS = {"history": "GET", "workers": "POST"}


class OperationsAdmin(AdminResource):
    """
    The admin resource with its operations pages; every other page is the
    admin's.
    """

    def __init__(self, runtime: AdminHost, server: Any, private: bool = False) -> None:
        super().__init__(runtime, server, private)
        self._host = runtime

    def render(self, request: Request) -> bytes:
        page = b"/".join(request.postpath or []).strip(b"/").decode("utf-8", "replace")
        if page not in OPERATIONS:
            return super().render(request)
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        denied = self._access.check(request)
        if denied is not None:
            return denied
        method = request.method.decode("ascii", "replace").upper()
        wanted = OPERATIONS[page]
        if method != wanted and not (wanted == "GET" and method == "HEAD"):
            request.setHeader(b"allow", b"GET, HEAD" if wanted == "GET" else b"POST")
            return self._error(request, 405, f"{page} needs {wanted}")
        if page == "history":
            return json_answer(request, 200, {"history": self._host.history.log.to_json()})
        refused = self._access.check_origin(request, page)
        if refused is not None:
            return refused
        return self._workers(request)

    def _workers(self, request: Request) -> bytes:
        try:
            count = self._host.set_workers(_count(request))
        except WorkerCountRefused as e:
            self._log.info(
                "{pid}: admin workers for {peer} refused: {why}",
                pid=self._host.pid,
                peer=peer_address(request),
                why=str(e),
            )
            return self._error(request, e.code, f"workers: {e}")
        self._log.info(
            "{pid}: admin workers {count} asked for by {peer}",
            pid=self._host.pid,
            count=count,
            peer=peer_address(request),
        )
        return json_answer(request, 202, {"workers": count, "pid": self._host.status().pid})


def _count(request: Request) -> int:
    """
    The C{count} field: a form field, or a JSON body's member.
    """
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(b"count")
    value: object = (
        values[0].decode("utf-8", "replace").strip() if values else json_body(request).get("count")
    )
    if value is None:
        raise WorkerCountRefused(400, "count is missing")
    return check_count(value)

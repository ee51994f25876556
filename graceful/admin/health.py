# -*- test-case-name: tests.unit.admin.test_resource -*-
"""
The health page: 200 while serving, 503 once the process drains, so a load
balancer or a Kubernetes readiness probe takes the node out before it stops.
No auth: probes carry none, and the page tells nothing but "ok" or
"draining".

While a restart is under way the old process still serves (200); once it
hands over, or once it shuts down, it drains (503) and the connections it
still holds are answered that way.  New connections reach the new process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.web.resource import Resource
from twisted.web.server import Request

if TYPE_CHECKING:
    from .host import AdminHost


class HealthResource(Resource):
    isLeaf = True

    def __init__(self, runtime: AdminHost) -> None:
        super().__init__()
        self._runtime = runtime

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        if self._runtime.draining:
            request.setResponseCode(503)
            return b"draining\n"
        return b"ok\n"

    render_HEAD = render_GET

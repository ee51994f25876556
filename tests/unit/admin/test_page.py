"""
The admin page of a group: a row per worker with what the status tells of
it, and the master's own generation when the master says it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graceful.admin.page import admin_page
from graceful._status import PortStatus, ProcessStatus, ServerStatus, WorkerStatus


def group(master_generation: int | None = None) -> ProcessStatus:
    return ProcessStatus(
        pid=100,
        generation=4,
        servers=(ServerStatus("web", (PortStatus(port=8100),), requests=7),),
        role="master",
        started_at=0.0,
        uptime=60.0,
        workers=(
            WorkerStatus(pid=201, slot=0, generation=4, ready=True, requests=5, rss_mib=51.25,
                         last_heartbeat=0.4, last_replaced_reason="memory"),
            WorkerStatus(pid=202, slot=1, generation=4, requests=2),
        ),
        master_generation=master_generation,
    )


class GroupPageTests(SynchronousTestCase):
    def test_worker_rows(self) -> None:
        page = admin_page(group(), prefix="/a", now=60.0).decode()
        self.assertIn(
            '<tr><td class="num">0</td><td class="worker-pid">201</td><td class="num">4</td>'
            '<td>serving</td><td class="num">0</td><td class="num">5</td><td class="num">51.2</td>'
            '<td class="num">0.4s</td><td>memory</td></tr>',
            page,
        )
        # Starting: no report yet, and its slot was never replaced.
        self.assertIn(
            '<td class="worker-pid">202</td><td class="num">4</td><td>starting</td>'
            '<td class="num">0</td><td class="num">2</td><td class="num">-</td>'
            '<td class="num">-</td><td>-</td></tr>',
            page,
        )

    def test_master_generation(self) -> None:
        self.assertNotIn("master generation", admin_page(group(), prefix="/a", now=60.0).decode())
        page = admin_page(group(master_generation=2), prefix="/a", now=60.0).decode()
        self.assertIn('<dd id="master-generation">2</dd>', page)

    def test_alone(self) -> None:
        page = admin_page(
            ProcessStatus(pid=1, generation=1, servers=(), started_at=0.0), prefix="/a", now=90.0
        ).decode()
        self.assertNotIn('id="workers"', page)
        self.assertIn('<dd id="uptime" title="started 1970-01-01 00:00:00 UTC">1m 30s</dd>', page)

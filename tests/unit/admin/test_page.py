"""
The admin page of a group: a row per worker with what the status tells of
it, and the master's own generation when the master says it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from graceful._history import RestartRecord
from graceful.admin.page import admin_page
from graceful._status import DrainStatus, PortStatus, ProcessStatus, ServerStatus, WorkerStatus


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


def record(generation: int, **changes: object) -> RestartRecord:
    values: dict[str, object] = {
        "old_pid": 100 + generation, "started": 1000.0 + generation * 60,
        "new_pid": 101 + generation, "outcome": "ok",
    }
    values.update(changes)
    return RestartRecord(generation=generation, **values)  # type: ignore[arg-type]


def single(**changes: object) -> ProcessStatus:
    values: dict[str, object] = {
        "pid": 100, "generation": 3, "started_at": 0.0,
        "servers": (ServerStatus("web", (PortStatus(port=8100),), in_flight=2, requests=9),),
    }
    values.update(changes)
    return ProcessStatus(**values)  # type: ignore[arg-type]


class HistoryTableTests(SynchronousTestCase):
    """
    The restart history table: the last 20 restarts, newest first, with
    when, outcome, hand-over seconds and reason.
    """

    def test_last_twenty_newest_first(self) -> None:
        records = [record(g, ready=1000.0 + g * 60 + 1.25) for g in range(1, 25)]
        records[-1] = record(24, outcome="failed", ready=None, reason="verify: /healthz 500 <b>")
        page = admin_page(single(), prefix="/a", now=5000.0, history=records).decode()
        table = page[page.index('<table id="history">'):]
        table = table[: table.index("</table>")]
        self.assertEqual(table.count("<tr>"), 21)  # the head and 20 restarts
        self.assertLess(table.index('<td class="num">24</td>'), table.index('<td class="num">23</td>'))
        self.assertNotIn('<td class="num">4</td>', table)
        self.assertIn(
            "<tr><td><time>1970-01-01 00:40:40 UTC</time></td><td class=\"num\">24</td>"
            '<td class="bad">failed</td><td class="num">-</td>'
            '<td class="num">124 &rarr; 125</td><td>verify: /healthz 500 &lt;b&gt;</td></tr>',
            table,
        )
        self.assertIn('<td class="ok">ok</td><td class="num">1.25s</td>', table)

    def test_none_yet(self) -> None:
        page = admin_page(single(), prefix="/a", now=5000.0).decode()
        self.assertIn('<p id="history" class="muted">No restart yet.</p>', page)


class RestartProgressTests(SynchronousTestCase):
    def test_new_process_starting(self) -> None:
        history = [record(3, outcome="running", new_pid=555, started=4990.0)]
        page = admin_page(
            single(restarting=True), prefix="/a", now=4993.5, history=history, ready_timeout=15
        ).decode()
        self.assertIn('<dd id="new-process">pid 555, 3.5s of 15s</dd>', page)

    def test_draining_connections_left_by_kind(self) -> None:
        server = ServerStatus(
            "web", in_flight=1, connections={"http/1.1": 2, "websocket": 3, "h2": 0}
        )
        page = admin_page(
            single(servers=(server,), draining=True,
                   drain=DrainStatus("restart", 2.0, 5.0, 30.0, 5)),
            prefix="/a", now=5000.0,
        ).decode()
        self.assertIn('<dd id="drain-left">http/1.1 2, websocket 3</dd>', page)

    def test_old_process_draining_seen_from_the_new(self) -> None:
        history = [record(2, old_pid=90, new_pid=100, ready=4990.0, handed_over=4991.0)]
        page = admin_page(single(), prefix="/a", now=4995.0, history=history).decode()
        self.assertIn('<dd id="old-process">pid 90 draining for 4.0s</dd>', page)
        history[0].exited = 4996.0
        page = admin_page(single(), prefix="/a", now=4997.0, history=history).decode()
        self.assertNotIn('id="old-process"', page)

    def test_nothing_under_way(self) -> None:
        page = admin_page(single(), prefix="/a", now=5000.0, history=[record(1)]).decode()
        for card in ("new-process", "drain-left", "old-process"):
            self.assertNotIn(f'id="{card}"', page)


class OwnRequestTests(SynchronousTestCase):
    """
    The page's own request is in flight while the page is made: the
    counts shown leave it out.
    """

    def test_page_through_the_site(self) -> None:
        from ..http.test_routing import HTTPConnection
        from .test_resource import BROWSER, PREFIX, TOKEN, bearer, build

        runtime, server = build(token=TOKEN)
        assert server.site is not None
        connection = HTTPConnection(server.site)
        self.addCleanup(connection.lose)
        connection.request(PREFIX, headers={**BROWSER, **bearer()})
        page = connection.only_response().body.decode()
        self.assertIn('<dd id="in-flight">0</dd>', page)
        self.assertIn('<td class="num in-flight">0</td>', page)

    def test_shown_as_given_elsewhere(self) -> None:
        page = admin_page(single(), prefix="/a", now=5000.0).decode()
        self.assertIn('<dd id="in-flight">2</dd>', page)

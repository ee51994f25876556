"""
Unit tests of L{graceful.lifecycle.departure}: draining and leaving,
through a runtime.
"""

from __future__ import annotations

from graceful.http.site import IDLE_GRACE, handover_idle_grace
from graceful.handoff.pipes import ListeningSocket

from ..http.test_routing import HTTPConnection
from ..runtime_case import PID, StoppableService, _RuntimeCase


class DrainTests(_RuntimeCase):
    """
    Leaving: stop accepting, answer what is in flight, exit when nothing is
    left or at C{drain_timeout}.
    """

    def test_sockets_passed_to_new_process(self) -> None:
        _, _, port1 = self.serve("s1", 8100, 41)
        _, _, port2 = self.serve("s2", 8300, 42, graceful=False)
        self.runtime.restart()
        self.assertEqual(
            self.spawner.calls[0]["sockets"], [ListeningSocket(41, "s1/http/8100/0")]
        )
        self.assertTrue(port1.listening)
        self.assertFalse(port2.listening)
        self.assertEqual(self.runtime.servers["s2"].listeners, [])

    def test_handover_drains_in_flight(self) -> None:
        server, app, port = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/slow")
        restarted = self.runtime.restart()
        self.assertTrue(port.listening)
        self.spawner.last.report_ready()
        self.successResultOf(restarted)
        self.assertFalse(port.listening)
        self.assertFalse(self.exited)
        self.assertLogged(f"{PID}: finishing 1 request(s) in flight")
        app.answer()
        self.assertEqual(connection.only_response().header("connection"), "close")
        self.assertTrue(connection.closing)
        self.assertFalse(self.exited)
        connection.lose()
        self.assertTrue(self.exited)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_drain_timeout_aborts(self) -> None:
        self.runtime.settings.drain_timeout = 5.0
        server, _, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/slow")
        shut = self.runtime.shutdown()
        self.reactor.advance(4.9)
        self.assertFalse(connection.transport.disconnected)
        self.assertNoResult(shut)
        self.reactor.advance(0.1)
        self.assertTrue(connection.transport.disconnected)  # aborted
        self.assertLogged(
            f"{PID}: drain_timeout of 5s reached: aborted 1 connection(s): 1 http/1.1"
        )
        self.reactor.advance(0)
        self.assertTrue(self.exited)
        self.successResultOf(shut)

    def test_idle_connections_closed(self) -> None:
        server, _, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/fast")
        self.runtime.shutdown()
        self.reactor.advance(server.site.idle_grace)  # type: ignore[union-attr]
        self.assertTrue(connection.closing)
        connection.lose()
        self.assertTrue(self.exited)

    def test_idle_connections_wait_for_their_next_request_at_handover(self) -> None:
        """
        With a successor serving, an idle keep-alive connection is kept
        past the shutdown grace, to have its next request answered, and
        closed (a FIN) before drain_timeout would abort it.
        """
        self.runtime.settings.drain_timeout = 5.0
        server, _, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/fast")
        self.hand_over()
        self.reactor.advance(IDLE_GRACE * 2)
        self.assertFalse(connection.closing)
        connection.request("/fast")
        self.assertEqual(connection.responses()[-1].header("connection"), "close")
        self.assertTrue(connection.closing)
        connection.lose()
        self.assertTrue(self.exited)

    def test_silent_idle_connection_closed_before_drain_timeout(self) -> None:
        self.runtime.settings.drain_timeout = 5.0
        server, _, _ = self.serve("s1", 8100, 41)
        connection = HTTPConnection(server.site)
        connection.request("/fast")
        self.hand_over()
        self.reactor.advance(handover_idle_grace(5.0))
        self.assertTrue(connection.closing)
        self.assertFalse(connection.transport.disconnected)  # not aborted
        connection.lose()
        self.assertTrue(self.exited)

    def hand_over(self) -> None:
        restarted = self.runtime.restart()
        self.spawner.last.report_ready()
        self.successResultOf(restarted)

    def test_on_drain_callbacks(self) -> None:
        called: list[str] = []
        self.runtime.on_drain(lambda: called.append("first"))
        self.runtime.on_drain(lambda: 1 // 0)
        self.runtime.on_drain(lambda: called.append("third"))
        self.runtime.restart()
        self.assertEqual(called, [])
        self.spawner.last.report_ready()
        self.assertEqual(called, ["first", "third"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(self.exited)

    def test_services_stop_before_new_process_is_released(self) -> None:
        service = StoppableService()
        self.runtime.add_service(service)
        self.runtime.services.startService()
        self.runtime.restart()
        self.assertTrue(service.running)
        self.spawner.last.report_ready()
        self.assertFalse(service.running)
        self.assertEqual(self.spawner.last.releases, 0)
        self.assertFalse(self.exited)
        assert service.stopping is not None
        service.stopping.callback(None)
        self.assertEqual(self.spawner.last.releases, 1)
        self.assertTrue(self.exited)

    def test_service_that_never_stops(self) -> None:
        self.runtime.settings.drain_timeout = 3
        service = StoppableService()
        self.runtime.add_service(service)
        self.runtime.services.startService()
        shut = self.runtime.shutdown()
        self.reactor.advance(3)
        self.reactor.advance(0)
        self.assertTrue(self.exited)
        self.successResultOf(shut)

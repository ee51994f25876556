"""
graceful._event.Event: one-time events with any number of waiters.
"""

from twisted.trial.unittest import SynchronousTestCase

from graceful._event import Event


class EventTests(SynchronousTestCase):
    def test_waiters_before_and_after(self) -> None:
        event = Event()
        early = event.wait()
        self.assertNoResult(early)
        event.happen()
        self.assertIsNone(self.successResultOf(early))
        self.assertIsNone(self.successResultOf(event.wait()))
        self.assertTrue(event.happened)

    def test_happens_once_and_waiters_are_independent(self) -> None:
        event = Event()
        first, second = event.wait(), event.wait()
        first.addCallback(lambda _: "changed by the first waiter")
        event.happen()
        event.happen()
        self.assertIsNone(self.successResultOf(second))

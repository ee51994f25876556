"""
Feeding a state machine from the outside world.

automat refuses an input that returns a value while another input runs,
and postpones one that returns nothing.  graceful's machines therefore take
Deferreds from their callers instead of returning them, and queue every
effect the outside sees (firing those Deferreds, the app's callbacks) to run
once the transition is over, when such code may feed inputs again.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

Inputs = TypeVar("Inputs")


class Feeder(Generic[Inputs]):
    """
    Feeds inputs to one machine and runs the effects its transitions queue.

    @ivar inputs: the machine, set once it is built.
    @ivar after: effects queued by the transition under way.
    """

    inputs: Inputs

    def __init__(self) -> None:
        self.after: list[Callable[[], Any]] = []
        self._feeding = False

    def later(self, effect: Callable[[], Any]) -> None:
        """
        Run C{effect} once the transition under way is over.
        """
        self.after.append(effect)

    def feed(self, fire: Callable[[Inputs], None]) -> None:
        """
        Feed the input C{fire} gives, then run the effects it queued.
        """
        if self._feeding:
            fire(self.inputs)  # the outer feed runs the effects
            return
        self._feeding = True
        try:
            fire(self.inputs)
            while self.after:
                self.after.pop(0)()
        finally:
            self._feeding = False

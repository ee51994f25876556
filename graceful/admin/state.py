# -*- test-case-name: tests.unit.admin.test_state -*-
"""
What the admin keeps for one process, on one object its runtime owns: the
generated token, the refusal counts and the metrics registry live as long
as the runtime does, are shared by every server's admin pages, and a
runtime built for a test starts with none of them.
"""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


class AdminState:
    """
    The admin's objects of one process, one of each kind, each made on
    first use by the part of the admin that needs it (L{AdminHost.admin}).

    Kept by kind, so that this module knows none of the admin's parts and
    they all stand on it.
    """

    def __init__(self) -> None:
        self._kept: dict[type, object] = {}

    def get(self, kind: type[T]) -> T | None:
        "The kept object of C{kind}, or L{None} if none is kept yet."
        found = self._kept.get(kind)
        assert found is None or isinstance(found, kind)
        return found

    def keep(self, kind: type[T], value: T) -> T:
        "Keep C{value} as this process's object of C{kind}."
        self._kept[kind] = value
        return value

    def kept(self, kind: type[T], make: Callable[[], T]) -> T:
        "The kept object of C{kind}, made with C{make} (once) if needed."
        found = self.get(kind)
        return found if found is not None else self.keep(kind, make())

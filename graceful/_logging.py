# -*- test-case-name: tests.unit.test_logging -*-
"""
Loggers whose namespace stays put when their module moves.
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger


class NamedLogger(Logger):
    """
    A class's logger with the namespace it is given.

    Read from a class, Twisted's L{Logger} takes the class's module and name
    as its namespace, which every log line shows (C{[namespace#info]}); the
    modules moved into subpackages, and log filters match those names, so a
    class keeps the namespace its lines have always carried.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Logger:
        source: Any = owner if instance is None else instance
        return self.__class__(self.namespace, source, observer=self.observer)

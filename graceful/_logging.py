"""
Loggers whose namespace stays put when their module moves.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import (
    FilteringLogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)


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


def begin_logging(level: str = "info") -> None:
    """
    Log to standard output from C{level} up (C{graceful run}'s
    C{--log-level}: critical, error, warning, info or debug).
    """
    observer = FilteringLogObserver(
        textFileLogObserver(sys.stdout),
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(
            "warn" if level == "warning" else level
        ))],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

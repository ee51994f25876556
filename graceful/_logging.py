# -*- test-case-name: tests.unit.test_logging -*-
"""
Loggers whose namespace stays put when their module moves.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer

from ._errors import ConfigError


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


def begin_logging(level: str = "info", log_format: str = "text", log_config: str | None = None) -> None:
    """
    Where C{graceful run} logs: standard output from C{level} up
    (critical, error, warning, info or debug), as text or as one JSON object
    a line; or, with C{log_config}, Python's logging as that file configures
    it (a dictConfig in JSON, or a fileConfig INI file), each record under
    its namespace's logger (C{graceful.access}, C{graceful._core.ProcessCore}).
    """
    output: ILogObserver
    if log_config:
        configure_stdlib_logging(log_config)
        output = stdlib_observer()
    elif log_format == "json":
        output = json_lines_observer(sys.stdout)
    else:
        output = textFileLogObserver(sys.stdout)
    observer = FilteringLogObserver(
        output,
        [LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(
            "warn" if level == "warning" else level
        ))],
    )
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


def configure_stdlib_logging(path: str) -> None:
    """
    Configure Python's logging from C{path}: C{.json} a dictConfig, C{.yaml}
    or C{.yml} one too (PyYAML needed), anything else an INI fileConfig.

    @raise ConfigError: the file cannot be read or does not configure.
    """
    import logging.config

    try:
        if path.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                logging.config.dictConfig(json.load(f))
        elif path.endswith((".yaml", ".yml")):
            import yaml

            with open(path, encoding="utf-8") as f:
                logging.config.dictConfig(yaml.safe_load(f))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except Exception as e:  # each of json, yaml and logging.config raises its own
        raise ConfigError(f"log_config {path}: {type(e).__name__}: {e}".splitlines()[0]) from None


def stdlib_observer() -> ILogObserver:
    """
    Each event to the Python logger named as its namespace, so a dictConfig
    can route C{graceful.access} apart from the rest.
    """
    import logging

    levels = {
        LogLevel.debug: logging.DEBUG, LogLevel.info: logging.INFO, LogLevel.warn: logging.WARNING,
        LogLevel.error: logging.ERROR, LogLevel.critical: logging.CRITICAL,
    }

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        level = levels.get(event.get("log_level", LogLevel.info), logging.INFO)
        logger = logging.getLogger(event.get("log_namespace") or "twisted")
        if logger.isEnabledFor(level):
            message = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                message += "\n" + failure.getTraceback()
            logger.log(level, "%s", message)

    return observe


def json_lines_observer(out: IO[str]) -> ILogObserver:
    """
    One JSON object a line: time, level, namespace, pid and the message (and
    the traceback of a failure), for log collectors.
    """
    pid = os.getpid()

    @implementer(ILogObserver)
    def observe(event: dict[str, Any]) -> None:
        record = {
            "time": datetime.fromtimestamp(event.get("log_time", 0), timezone.utc).isoformat(),
            "level": getattr(event.get("log_level"), "name", "info"),
            "namespace": event.get("log_namespace", "-"),
            "pid": pid,
            "message": formatEvent(event),
        }
        failure = event.get("log_failure")
        if failure is not None:
            record["traceback"] = failure.getTraceback()
        out.write(json.dumps(record) + "\n")
        out.flush()

    return observe

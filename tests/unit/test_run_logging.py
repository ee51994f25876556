"""
Unit tests for C{graceful run}'s logs (L{graceful._logging}): JSON lines,
Python's logging configured from a file, and its one-line errors.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from pathlib import Path

from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from graceful._errors import ConfigError
from graceful._logging import configure_stdlib_logging, json_lines_observer, stdlib_observer


class JSONLinesTests(SynchronousTestCase):
    def test_one_object_a_line(self) -> None:
        out = io.StringIO()
        log = Logger(namespace="graceful.access", observer=json_lines_observer(out))
        log.info("{line}", line='"GET / HTTP/1.1" 200')
        try:
            1 / 0
        except ZeroDivisionError:
            log.failure("it broke")
        first, second = (json.loads(line) for line in out.getvalue().splitlines())
        self.assertEqual(
            {k: first[k] for k in ("level", "namespace", "message")},
            {"level": "info", "namespace": "graceful.access", "message": '"GET / HTTP/1.1" 200'},
        )
        self.assertIn("T", first["time"])
        self.assertIsInstance(first["pid"], int)
        self.assertEqual((second["level"], second["message"]), ("critical", "it broke"))
        self.assertIn("ZeroDivisionError", second["traceback"])


class StdlibTests(SynchronousTestCase):
    def test_namespace_is_the_logger(self) -> None:
        seen: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = seen.append  # type: ignore[method-assign]
        logger = logging.getLogger("graceful.access")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        self.addCleanup(logger.removeHandler, handler)
        log = Logger(namespace="graceful.access", observer=stdlib_observer())
        log.info("hello {who}", who="there")
        log.debug("not shown")
        self.assertEqual([(r.name, r.levelno, r.getMessage()) for r in seen],
                         [("graceful.access", logging.INFO, "hello there")])

    def test_dict_config(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "logging.json"
            path.write_text(json.dumps({
                "version": 1, "incremental": False, "disable_existing_loggers": False,
                "loggers": {"graceful.test.configured": {"level": "ERROR"}},
            }))
            configure_stdlib_logging(str(path))
        self.assertEqual(logging.getLogger("graceful.test.configured").level, logging.ERROR)

    def test_bad_file_is_one_line(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "logging.json"
            path.write_text("{not json")
            with self.assertRaises(ConfigError) as e:
                configure_stdlib_logging(str(path))
        self.assertTrue(str(e.exception).startswith(f"log_config {path}: JSONDecodeError: "))
        self.assertNotIn("\n", str(e.exception))

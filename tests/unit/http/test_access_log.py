"""
Unit tests for L{graceful.http.access_log}: Apache's combined format and
JSON lines, made from twisted.web's line.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graceful.http.access_log import combined, formatter, json_line
from graceful.http.server import access_log_writer

TWISTED = (
    '"192.0.2.7" - - [05/Dec/2026:11:25:03 +0000] "GET /a?b=1 HTTP/1.1" 200 61 '
    '"http://example.test/" "curl/8.0 \\"quoted\\""'
)


class FormatTests(SynchronousTestCase):
    def test_combined_is_apaches(self) -> None:
        self.assertEqual(
            combined(TWISTED),
            '192.0.2.7 - - [05/Dec/2026:11:25:03 +0000] "GET /a?b=1 HTTP/1.1" 200 61 '
            '"http://example.test/" "curl/8.0 \\"quoted\\""',
        )

    def test_json(self) -> None:
        self.assertEqual(json.loads(json_line(TWISTED)), {
            "remote": "192.0.2.7", "time": "05/Dec/2026:11:25:03 +0000", "method": "GET",
            "path": "/a?b=1", "protocol": "HTTP/1.1", "status": 200, "bytes": 61,
            "referer": "http://example.test/", "user_agent": 'curl/8.0 "quoted"',
        })

    def test_json_websocket_and_unix_peer(self) -> None:
        line = '"-" - - [05/Dec/2026:11:25:03 +0000] "GET /ws HTTP/1.1" 101 - "-" "-" 12.500'
        record = json.loads(json_line(line))
        self.assertEqual(
            (record["remote"], record["status"], record["bytes"], record["referer"],
             record["duration"]),
            (None, 101, 0, None, 12.5),
        )
        self.assertEqual(combined(line), line[1:2] + line[3:])

    def test_twisted_unchanged(self) -> None:
        self.assertEqual(formatter("twisted")(TWISTED), TWISTED)

    def test_writer_to_a_file(self) -> None:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "access.log"
            write = access_log_writer(str(path), "json")
            assert write is not None
            write(TWISTED.replace("/a?b=1", "/debug/admin/?token=s3cret"))
            record = json.loads(path.read_text())
        self.assertEqual(record["path"], "/debug/admin/?token=REDACTED")

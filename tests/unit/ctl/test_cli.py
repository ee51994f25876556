"""
Unit tests for L{graceful.ctl.cli}: the command line (nodes, token, usage
errors) and the exit of a restart that stops at a node.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from graceful.ctl import cli as ctl

from .test_roll import FakeClient, FakeNode


class CommandLineTests(SynchronousTestCase):
    def test_nodes_from_options_and_files(self) -> None:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("# the fleet\nhttp://10.0.0.6:8100/debug/admin/   # second\n\nhttps://10.0.0.7:8100/admin/status\n")
        self.addCleanup(os.unlink, f.name)
        nodes = ctl.read_nodes(["http://10.0.0.5:8100/debug/admin"], [f.name])
        self.assertEqual(
            nodes,
            ["http://10.0.0.5:8100/debug/admin", "http://10.0.0.6:8100/debug/admin", "https://10.0.0.7:8100/admin"],
        )
        self.assertRaises(ctl.UsageError, ctl.read_nodes, [], [])
        self.assertRaises(ctl.UsageError, ctl.read_nodes, ["10.0.0.5:8100"], [])
        self.assertRaises(ctl.UsageError, ctl.read_nodes, ["http://a/x", "http://a/x/"], [])
        self.assertRaises(ctl.UsageError, ctl.read_nodes, [], ["/nonexistent/nodes"])

    def test_token(self) -> None:
        with tempfile.NamedTemporaryFile("w", delete=False) as f:
            f.write("s3cret\n")
        self.addCleanup(os.unlink, f.name)
        self.assertEqual(ctl.read_token(None, f.name, {}), "s3cret")
        self.assertEqual(ctl.read_token("t", None, {}), "t")
        self.assertEqual(ctl.read_token(None, None, {ctl.TOKEN_VARIABLE: "env"}), "env")
        self.assertIsNone(ctl.read_token(None, None, {}))
        Path(f.name).write_text("\n")
        self.assertRaises(ctl.UsageError, ctl.read_token, None, f.name, {})

    def test_usage_errors(self) -> None:
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(ctl.main(["--node", "ftp://x", "status"], out, err), ctl.USAGE)
        self.assertIn("http:// or https://", err.getvalue())
        self.assertEqual(ctl.main(["status"], out, io.StringIO()), ctl.USAGE)
        self.assertEqual(ctl.main(["--node", "http://x/a", "--timeout", "0", "status"], out, io.StringIO()), ctl.USAGE)

    def test_restart_output_names_the_failed_node(self) -> None:
        client = FakeClient(FakeNode("a"), FakeNode("b", "fail"), FakeNode("c"))
        arguments = ctl.parse_arguments(["restart", "--poll-interval", "0.01"])
        out, err = io.StringIO(), io.StringIO()
        status = ctl.run(arguments, client, ["a", "b", "c"], out, err, ctl.PlainProgress(out))
        self.assertEqual(status, ctl.FAILED)
        self.assertIn("restart stopped at b: restart failed", err.getvalue())
        self.assertIn("not restarted: c", err.getvalue())

"""
The package's one description (pyproject.toml): one version, read back by
C{graceful.__version__}; the command, the twistd plugin and the type marker
packaged; an sdist that can run its tests and examples.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import graceful

ROOT = Path(__file__).resolve().parents[2]


def project() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)


class PackagingTests(SynchronousTestCase):
    def test_one_version(self) -> None:
        """
        The version is written once, in pyproject.toml; the package reads
        it from the installed metadata.
        """
        self.assertEqual(graceful.__version__, project()["project"]["version"])
        self.assertEqual(graceful.__version__, version("graceful"))
        literal = re.compile(r"""^\s*__version__\s*=\s*["']\d""", re.M)
        for path in (ROOT / "graceful").rglob("*.py"):
            self.assertIsNone(literal.search(path.read_text()), path)
        self.assertFalse((ROOT / "setup.py").exists())

    def test_command_plugin_and_types(self) -> None:
        data = project()
        self.assertEqual(data["project"]["scripts"], {"graceful": "graceful._cli:main"})
        self.assertEqual(data["tool"]["setuptools"]["package-data"],
                         {"graceful": ["py.typed"], "twisted.plugins": ["graceful_plugin.py"]})
        self.assertTrue((ROOT / "graceful" / "py.typed").exists())
        self.assertIn("Typing :: Typed", data["project"]["classifiers"])

    def test_sdist_holds_what_runs_the_tests(self) -> None:
        grafted = {
            line.split()[1] for line in (ROOT / "MANIFEST.in").read_text().splitlines()
            if line.startswith("graft ")
        }
        self.assertLessEqual({"tests", "docs", "examples", "certs", "harness"}, grafted)

    def test_extras(self) -> None:
        extras = project()["project"]["optional-dependencies"]
        self.assertLessEqual({"websocket", "http2", "asgi", "reload", "all", "test"}, set(extras))
        self.assertIn("watchfiles>=0.20", extras["reload"])
        self.assertIn("flask>=2.3", extras["test"])

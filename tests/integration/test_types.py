"""
The package stays mypy-clean (with mypy-zope for zope interfaces).
"""

import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase

from tests.support import ROOT


class TypesTests(SynchronousTestCase):
    def test_mypy_clean(self) -> None:
        try:
            import mypy  # noqa: F401
        except ImportError:
            self.skipTest("mypy is not installed (pip install '.[test]')")
        result = subprocess.run(
            [sys.executable, "-m", "mypy", "graceful"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

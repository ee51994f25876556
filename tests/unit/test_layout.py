"""
The repository's folders depend one way: the integration tests and the
benchmarks both use harness/, and neither imports the other (so a benchmark
can change without breaking a test's helpers, and the other way round).
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parents[2]

#: For each folder, the top-level packages of this repository it must not import.
FORBIDDEN = {
    "tests": {"benchmarks"},
    "benchmarks": {"tests"},
    "harness": {"tests", "benchmarks"},
}


def sources(folder: str) -> list[Path]:
    """
    The Python files of C{folder}, without hidden folders (a venv that
    benchmarks/setup makes in benchmarks/.venv is not the project's).
    """
    base = ROOT / folder
    return sorted(
        path for path in base.rglob("*.py")
        if not any(part.startswith(".") for part in path.relative_to(base).parts)
    )


def imported(path: Path) -> set[str]:
    """
    The top-level names of every module C{path} imports (relative imports
    stay in their own package and are left out).
    """
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


class FolderImportTests(SynchronousTestCase):
    def test_tests_and_benchmarks_meet_only_in_the_harness(self) -> None:
        wrong = [
            f"{path.relative_to(ROOT)} imports {name}"
            for folder, forbidden in FORBIDDEN.items()
            for path in sources(folder)
            for name in sorted(imported(path) & forbidden)
        ]
        self.assertEqual(wrong, [])

    def test_both_use_the_harness(self) -> None:
        """
        The check above is about real folders: each side does import the
        harness (were a folder renamed, the check would pass for nothing).
        """
        for folder in ("tests", "benchmarks"):
            users = [p for p in sources(folder) if "harness" in imported(p)]
            self.assertNotEqual(users, [], folder)

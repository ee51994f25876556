"""
docs/architecture.rst lists every state change of graceful's machines: the
lists are checked against the machines, so the page cannot drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graceful.lifecycle import handover
from graceful.workers import group, worker

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.rst"


def state_changes(machine: Any) -> set[str]:
    """
    Every transition of C{machine} that changes its state, as the page
    writes it: C{"Serving --restart--> Restarting"}.
    """
    return {
        f"{old.name} --{symbol}--> {new.name}"
        for old, symbol, new, _ in machine.__automat_automaton__.allTransitions()
        if old != new
    }


def listed(heading: str) -> set[str]:
    """
    The state changes the page lists in the literal block after the
    paragraph that starts with C{heading}.
    """
    text = DOC.read_text()
    start = text.index(heading)
    block = text[text.index("::\n\n", start) + 4 :]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        if line.strip():
            lines.append(line.strip())
    return set(lines)


class ArchitecturePageTests(SynchronousTestCase):
    def test_handoff(self) -> None:
        self.assertEqual(listed("A process that hands over"), state_changes(handover._machine))

    def test_worker(self) -> None:
        self.assertEqual(listed("A worker ("), state_changes(worker._machine))

    def test_group(self) -> None:
        self.assertEqual(
            listed("A master's workers"), state_changes(group._machine)
        )

    def test_linked_from_the_readme(self) -> None:
        readme = (DOC.parents[1] / "README.rst").read_text()
        self.assertIn("docs/architecture.rst", readme)

    def test_every_path_named_exists(self) -> None:
        """
        Every module the page names by its path (C{``http/site.py``}) is
        there, in graceful/ or from the repository's root.
        """
        import re

        named = set(re.findall(r"``([\w/]+/[\w]+\.py)``", DOC.read_text()))
        root = DOC.parents[1]
        missing = sorted(
            path
            for path in named
            if not (root / "graceful" / path).exists() and not (root / path).exists()
            and not path.startswith("application/")  # Twisted's, named as an example
        )
        self.assertNotEqual(named, set())
        self.assertEqual(missing, [])

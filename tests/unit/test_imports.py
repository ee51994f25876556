"""
The rule of graceful's package layout, checked from the source (every
import counted: inside functions and under TYPE_CHECKING too).

Each subpackage is one idea and stands on a floor; it imports only from
itself and from lower floors, and never from a sibling on its own floor:

    entry points     __init__, __main__, _apps, _cli, _config, _plugin, _process, _reload,
                     _run, testing
    process/         the runtime: owns the servers, picks the role
    workers/ | admin/  master and workers | the admin pages (through admin/host.py)
    lifecycle/       the core, the roles, the hand-over machine
    http/ | handoff/ serving HTTP (knows no process) | pipes, messages, OS (knows no HTTP)
    asgi/ | ctl/     ASGI on twisted.web | graceful ctl (no Twisted)
    leaves           _ends, _errors, _event, _feeding, _logging, _settings, _sockets, _status

Besides: C{graceful ctl} loads no Twisted; only the entry points and
C{asgi/resource.py} import the global reactor; no class is longer than
L{LONGEST_CLASS} lines; a module names its test modules in its first line,
and they exist.
"""

from __future__ import annotations

import ast
import functools
import re
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import graceful

PACKAGE = Path(graceful.__file__).parent
ROOT = PACKAGE.parent

#: The top-level modules everything stands on.
LEAVES = {
    "_ends", "_errors", "_event", "_feeding", "_history", "_logging", "_settings", "_sockets",
    "_status",
}
#: The top-level modules that stand on everything: how a user gets in.
ENTRY_POINTS = {
    "__init__", "__main__", "_apps", "_cli", "_config", "_plugin", "_process", "_reload", "_run",
    "testing",
}

#: The floors, lowest first.  A part imports from its own floor only itself.
FLOORS: list[set[str]] = [
    {"leaves"},
    {"asgi", "ctl"},
    {"http", "handoff"},
    {"lifecycle"},
    {"workers", "admin"},
    {"process"},
    {"entry points"},
]

#: The only modules that may import the global reactor: which one a
#: process runs is the entry points' choice (and the asyncio loop's, for
#: ASGI apps).
GLOBAL_REACTOR = {"_process", "asgi.resource"}

#: A class longer than this is doing more than one job.
LONGEST_CLASS = 300

@functools.lru_cache(maxsize=None)
def modules(package: Path = PACKAGE) -> list[str]:
    """
    Every module of graceful, dotted from inside the package
    (C{"http.site"}, C{"_errors"}, C{"__init__"}); a subpackage's
    C{__init__} as C{"http.__init__"}.
    """
    return sorted(
        ".".join(path.relative_to(package).with_suffix("").parts)
        for path in package.rglob("*.py")
        if "__pycache__" not in path.parts
    )


def part_of(module: str) -> str:
    """
    The part a module belongs to: its subpackage, or for a top-level
    module, the leaves or the entry points.
    """
    if "." in module:
        return module.split(".")[0]
    if module in LEAVES:
        return "leaves"
    if module in ENTRY_POINTS:
        return "entry points"
    return "unplaced"


def _tree(module: str, package: Path) -> ast.Module:
    return _parse(package / (module.replace(".", "/") + ".py"))


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> ast.Module:
    """
    Each file parsed once per run: every check reads every module.
    """
    return ast.parse(path.read_text())


def _resolve(module: str, level: int, name: str | None) -> str:
    """
    The module, dotted from inside the package, that a relative import in
    C{module} names.
    """
    package = module.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join(base + (name.split(".") if name else []))


@functools.lru_cache(maxsize=None)
def imports(module: str, package: Path = PACKAGE) -> frozenset[str]:
    """
    The graceful modules C{module} imports (dotted from inside the
    package; a subpackage itself as C{"http.__init__"}).
    """
    known = set(modules(package))

    def named(dotted: str) -> str:
        if dotted in known:
            return dotted
        if f"{dotted}.__init__" in known or not dotted:
            return f"{dotted}.__init__" if dotted else "__init__"
        return dotted

    found: set[str] = set()
    for node in ast.walk(_tree(module, package)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve(module, node.level, node.module)
            elif node.module and node.module.split(".")[0] == "graceful":
                base = ".".join(node.module.split(".")[1:])
            else:
                continue
            for alias in node.names:
                inner = f"{base}.{alias.name}" if base else alias.name
                found.add(named(inner) if inner in known or f"{inner}.__init__" in known else named(base))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "graceful":
                    found.add(named(".".join(parts[1:])))
    found.discard(module)
    return frozenset(found)


def floor_of(part: str) -> int:
    for number, parts in enumerate(FLOORS):
        if part in parts:
            return number
    return -1


def wrong_imports(package: Path = PACKAGE) -> list[str]:
    """
    Every import that breaks the rule, one line each.
    """
    wrong = []
    for module in modules(package):
        mine = part_of(module)
        for imported in sorted(imports(module, package)):
            theirs = part_of(imported)
            if theirs == mine:
                continue
            if floor_of(theirs) == floor_of(mine):
                wrong.append(f"{module} imports {imported}: {mine}/ and {theirs}/ are siblings")
            elif floor_of(theirs) > floor_of(mine):
                wrong.append(f"{module} imports {imported}: {theirs} stands above {mine}")
    return wrong


def global_reactor_users(package: Path = PACKAGE) -> set[str]:
    users = set()
    for module in modules(package):
        for node in ast.walk(_tree(module, package)):
            if isinstance(node, ast.ImportFrom) and node.module == "twisted.internet":
                if any(alias.name == "reactor" for alias in node.names):
                    users.add(module)
            elif isinstance(node, ast.Import):
                if any(alias.name == "twisted.internet.reactor" for alias in node.names):
                    users.add(module)
    return users


def long_classes(package: Path = PACKAGE) -> dict[str, int]:
    long = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > LONGEST_CLASS:
                    long[f"{path.relative_to(package)}: {node.name}"] = size
    return long


#: The first line of a module that has tests: which ones (trial runs them
#: for the module, and editors jump to them).
_TEST_CASE_NAME = re.compile(r"# -\*- test-case-name: (\S+) -\*-")


def named_tests(module: str, package: Path = PACKAGE) -> list[str]:
    """
    The test modules that C{module}'s first line names, dotted.
    """
    path = package / (module.replace(".", "/") + ".py")
    with path.open() as source:
        found = _TEST_CASE_NAME.fullmatch(source.readline().rstrip("\n"))
    return found.group(1).split(",") if found else []


def mirrored_test(module: str, root: Path = ROOT) -> str | None:
    """
    The test module that mirrors C{module} (C{http.site} ->
    C{tests.unit.http.test_site}, C{_config} -> C{tests.unit.test_config}),
    if there is one.
    """
    *folders, name = module.split(".")
    if name == "__init__":
        return None
    dotted = ".".join(["tests", "unit", *folders, f"test_{name.lstrip('_')}"])
    return dotted if (root / (dotted.replace(".", "/") + ".py")).exists() else None


def wrong_test_names(package: Path = PACKAGE, root: Path = ROOT) -> list[str]:
    """
    Every test module named that does not exist, and every module that
    does not name the test module mirroring it; one line each.
    """
    wrong = []
    for module in modules(package):
        named = named_tests(module, package)
        for test in named:
            if not (root / (test.replace(".", "/") + ".py")).exists():
                wrong.append(f"{module} names {test}, which does not exist")
        mirror = mirrored_test(module, root)
        if mirror is not None and mirror not in named:
            wrong.append(f"{module} does not name its test module {mirror}")
    return wrong


class LayerTests(SynchronousTestCase):
    def test_every_module_has_a_place(self) -> None:
        unplaced = [m for m in modules() if floor_of(part_of(m)) < 0]
        self.assertEqual(unplaced, [])

    def test_imports_go_down_and_never_sideways(self) -> None:
        self.assertEqual(wrong_imports(), [])

    def test_no_cycle(self) -> None:
        graph = {module: imports(module) for module in modules()}
        cycles: list[list[str]] = []
        state: dict[str, int] = {}

        def visit(module: str, path: list[str]) -> None:
            state[module] = 1
            for imported in sorted(graph.get(module, ())):
                if state.get(imported) == 1:
                    cycles.append(path[path.index(imported) :] + [imported])
                elif imported not in state and imported in graph:
                    visit(imported, path + [imported])
            state[module] = 2

        for module in sorted(graph):
            if module not in state:
                visit(module, [module])
        self.assertEqual(cycles, [])

    def test_the_check_sees_every_kind_of_import(self) -> None:
        """
        Under TYPE_CHECKING, in functions, relative at any depth, and
        C{from . import module}.
        """
        self.assertIn("admin.host", imports("admin.resource"))
        self.assertIn("asgi.resource", imports("http.site_choice"))
        self.assertIn("asgi.websocket", imports("asgi.resource"))
        self.assertIn("_errors", imports("http.server"))

    def test_a_planted_violation_is_seen(self) -> None:
        """
        A copy of the package with an upward import, a sideways one and a
        banned one fails the check, each with its reason.
        """
        import shutil
        import tempfile

        copy = Path(tempfile.mkdtemp()) / "graceful"
        self.addCleanup(shutil.rmtree, copy.parent)
        shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        for module, line in [
            ("http/site.py", "from ..handoff import pipes\n"),
            ("lifecycle/roles.py", "from ..workers.master import MasterRole\n"),
            ("admin/health.py", "from ..workers import group\n"),
        ]:
            path = copy / module
            path.write_text(path.read_text() + line)
        self.assertEqual(
            [line.split(":")[0] for line in wrong_imports(copy)],
            [
                "admin.health imports workers.group",
                "http.site imports handoff.pipes",
                "lifecycle.roles imports workers.master",
            ],
        )


class GlobalReactorTests(SynchronousTestCase):
    def test_only_the_entry_points_pick_the_reactor(self) -> None:
        self.assertEqual(global_reactor_users(), GLOBAL_REACTOR)


class CtlTests(SynchronousTestCase):
    def test_ctl_loads_no_twisted(self) -> None:
        """
        C{graceful ctl} starts in a fraction of the time Twisted takes to
        import (0.24 s and 112 modules when it did).
        """
        code = (
            "import sys, graceful.ctl.cli, graceful.ctl.operations, graceful._cli\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('twisted', 'automat')))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        self.assertEqual(out.strip(), "[]")


class ClassSizeTests(SynchronousTestCase):
    def test_no_class_is_longer_than_a_job(self) -> None:
        self.assertEqual(long_classes(), {})


class TestCaseNameTests(SynchronousTestCase):
    def test_every_named_test_module_exists(self) -> None:
        """
        Each module names its tests in its first line (C{# -*- test-case-name:
        tests.unit.http.test_site -*-}): they exist, and a module with a
        test module mirroring it names that one.
        """
        self.assertEqual(wrong_test_names(), [])

    def test_a_wrong_name_is_seen(self) -> None:
        """
        A copy of the package where one module names a test module that is
        not there, and another names none though its mirror exists.
        """
        import shutil
        import tempfile

        root = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, root)
        copy = root / "graceful"
        shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "tests", root / "tests", ignore=shutil.ignore_patterns("__pycache__"))
        site = copy / "http" / "site.py"
        site.write_text(site.read_text().split("\n", 1)[1])
        tls = copy / "http" / "tls.py"
        tls.write_text(tls.read_text().replace("test_tls ", "test_tls,tests.unit.http.test_gone ", 1))
        self.assertEqual(
            wrong_test_names(copy, root),
            [
                "http.site does not name its test module tests.unit.http.test_site",
                "http.tls names tests.unit.http.test_gone, which does not exist",
            ],
        )


class NamingTests(SynchronousTestCase):
    def test_one_class_per_name(self) -> None:
        """
        No two classes of graceful share a name (a protocol of what one
        module needs of a class elsewhere is named for that need), so that
        a name found in a traceback or a docstring means one thing.
        """
        where: dict[str, list[str]] = {}
        for path in sorted(PACKAGE.rglob("*.py")):
            for node in ast.walk(_parse(path)):
                if isinstance(node, ast.ClassDef):
                    where.setdefault(node.name, []).append(str(path.relative_to(PACKAGE)))
        self.assertEqual({name: paths for name, paths in where.items() if len(paths) > 1}, {})

    def test_one_kind_of_listening_socket(self) -> None:
        """
        A listening socket's descriptor is held by the classes of
        C{_sockets.py} alone (L{ListeningSocket} as it is passed and
        inherited, L{HeldSocket} while this process holds it open), not by a
        wrapper of its own in each module that touches one.
        """
        holders = []
        for path in sorted(PACKAGE.rglob("*.py")):
            if path.name == "testing.py":
                continue  # the fakes of Twisted's ports have a descriptor too
            for node in ast.walk(_parse(path)):
                if isinstance(node, ast.ClassDef):
                    for item in node.body:
                        target = getattr(item, "target", None)
                        if isinstance(item, ast.AnnAssign) and isinstance(target, ast.Name):
                            if target.id == "fd":
                                holders.append(f"{path.relative_to(PACKAGE)}: {node.name}")
        self.assertEqual(holders, ["_sockets.py: ListeningSocket", "_sockets.py: HeldSocket"])

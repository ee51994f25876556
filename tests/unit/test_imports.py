"""
graceful's modules import one way, downward: leaves, then the server, then
the roles, then the process, then what is built on it (admin, metrics,
config, the plugin, the public API).  Read from the source, every import
counted: inside functions and under TYPE_CHECKING too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import graceful

PACKAGE = Path(graceful.__file__).parent

#: Each module's layer; a module may import only from its own layer or
#: below.  Within a layer the imports must not form a cycle.
LAYERS: dict[str, list[str]] = {
    "leaves": [
        "_errors",
        "_event",
        "_settings",
        "_sockets",
        "_tls",
        "_supervision",
        "_messages",
        "_status",
        "_handoff",
        "_environment",
        "_executables",
        "_feeding",
        "_routing",
        "_drain",
        "_streams",
        "_websocket",
        "_h2",
        "_anyio_root",
        "_asgi_scope",
        "_asgi_websocket",
        "_asgi",
    ],
    "server": ["_server"],
    "roles": [
        "_core",
        "_admin_socket",
        "_departure",
        "_roles",
        "_single",
        "_worker_role",
        "_workers",
        "_recycling",
        "_group_status",
        "_worker_group",
        "_master",
    ],
    "process": ["_runtime"],
    "built on the process": [
        "_health",
        "_refusals",
        "_admin_token",
        "_admin_page",
        "_admin",
        "_metrics",
        "_pages",
        "_process",
        "_config",
        "_plugin",
        "_ctl",
        "_cli",
        "__init__",
        "__main__",
        "testing",
    ],
}


def _imports(module: str) -> set[str]:
    """
    The graceful modules C{module} imports, by name.
    """
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif node.level == 0 and node.module and node.module.startswith("graceful"):
                parts = node.module.split(".")
                found.add(parts[1] if len(parts) > 1 else "__init__")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "graceful":
                    found.add(parts[1] if len(parts) > 1 else "__init__")
    found.discard(module)
    return found


class ImportDirectionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.layer = {m: i for i, names in enumerate(LAYERS.values()) for m in names}

    def test_every_module_has_a_layer(self) -> None:
        modules = {path.stem for path in PACKAGE.glob("*.py")}
        self.assertEqual(sorted(modules - set(self.layer)), [])
        self.assertEqual(sorted(set(self.layer) - modules), [])

    def test_no_module_imports_one_above_it(self) -> None:
        upward = [
            f"{module} imports {imported}"
            for module in self.layer
            for imported in sorted(_imports(module))
            if self.layer.get(imported, -1) > self.layer[module]
        ]
        self.assertEqual(upward, [])

    def test_no_cycle(self) -> None:
        graph = {module: _imports(module) & set(self.layer) for module in self.layer}
        cycles: list[list[str]] = []
        state: dict[str, int] = {}

        def visit(module: str, path: list[str]) -> None:
            state[module] = 1
            for imported in sorted(graph[module]):
                if state.get(imported) == 1:
                    cycles.append(path[path.index(imported) :] + [imported])
                elif imported not in state:
                    visit(imported, path + [imported])
            state[module] = 2

        for module in sorted(graph):
            if module not in state:
                visit(module, [module])
        self.assertEqual(cycles, [])

    def test_the_check_sees_an_upward_import(self) -> None:
        """
        The parser finds imports under TYPE_CHECKING and in functions.
        """
        self.assertIn("_runtime", _imports("_admin"))
        self.assertIn("_asgi", _imports("_server"))


#: A class longer than this is doing more than one job.
LONGEST_CLASS = 375


class ClassSizeTests(SynchronousTestCase):
    def test_no_class_is_longer_than_a_job(self) -> None:
        long = []
        for path in sorted(PACKAGE.glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef):
                    size = (node.end_lineno or node.lineno) - node.lineno + 1
                    if size > LONGEST_CLASS:
                        long.append(f"{path.name}: {node.name} has {size} lines")
        self.assertEqual(long, [])

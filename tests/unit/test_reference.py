"""
docs/reference.rst is the project's contract; these tests keep it true of
the code: the config keys and their defaults, the public names and their
signatures, and the metric names, labels and types.

The page is read with a few patterns, not a reStructuredText parser, so it
keeps the shapes they look for: a config key is a definition-list term
``key`` (type, default ``TOML``) under its table's heading; a public name is
a term ``graceful.name(params)``; a metric is a row of the metrics table.
"""

from __future__ import annotations

import ast
import inspect
import re
import textwrap
import tomllib
from pathlib import Path
from typing import Any, Callable, Iterator

from attrs import NOTHING, define, field, fields
from prometheus_client.core import Metric
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

import graceful
import graceful.testing
from graceful._config import _SERVER_KEYS, _SETTINGS_KEYS, ServerConfig, parse_config
from graceful._errors import ConfigError
from graceful.admin.state import AdminState
from graceful.admin.metrics import RuntimeCollector, status_metrics, worker_metrics
from graceful.http.server import Server
from graceful._sockets import DEFAULT_UNIX_MODE
from graceful._status import (
    DURATION_BUCKETS,
    DrainStatus,
    LastRestart,
    PortStatus,
    ProcessStatus,
    ServerStatus,
    WorkerStatus,
)

REFERENCE = Path(__file__).resolve().parents[2] / "docs" / "reference.rst"

GRACEFUL_TABLE = "The ``[graceful]`` table"
SERVERS_TABLE = "The ``[servers.NAME]`` tables"

#: A key's term: ``key`` (type, default ``TOML``), or "default: none", or
#: "required".
_KEY_TERM = re.compile(
    r"^``(?P<key>[a-z_]+)`` \((?P<type>.+?), "
    r"(?:default ``(?P<default>.+)``|(?P<none>default: none)|(?P<required>required))\)$"
)
#: A name in a term: ``graceful.name(params)``, ``Server.name``, ``... = 1012``.
_NAME = re.compile(
    r"``(?P<owner>graceful\.testing\.|graceful\.|Server\.)(?P<name>\w+)"
    r"(?:\((?P<params>[^`]*)\))?(?: = (?P<value>[^`]+))?``"
)
_UNDERLINES = set("=-~")


def reference() -> str:
    return REFERENCE.read_text(encoding="utf-8")


def section(text: str, title: str) -> list[str]:
    """
    The lines of the section called C{title}, up to the next heading of
    any level.
    """
    lines = text.splitlines()
    start = lines.index(title) + 2
    for index in range(start, len(lines) - 1):
        following = lines[index + 1]
        if lines[index] and following and set(following) <= _UNDERLINES and len(following) >= 3:
            return lines[start:index]
    return lines[start:]


def terms(lines: list[str]) -> list[str]:
    """
    The terms of the definition lists in C{lines}: unindented lines followed
    by an indented one.
    """
    return [
        line
        for line, following in zip(lines, lines[1:])
        if line and not line[0].isspace() and following.startswith("    ")
    ]


@define
class DocumentedKey:
    key: str
    type: str
    #: The default as written (TOML), or None for "default: none".
    default: str | None
    required: bool


def documented_keys(title: str, text: str | None = None) -> dict[str, DocumentedKey]:
    found: dict[str, DocumentedKey] = {}
    for term in terms(section(reference() if text is None else text, title)):
        match = _KEY_TERM.match(term)
        if match is None:
            continue
        key = match["key"]
        assert key not in found, f"{key} is documented twice under {title}"
        found[key] = DocumentedKey(key, match["type"], match["default"], bool(match["required"]))
    return found


def toml_value(written: str) -> Any:
    return tomllib.loads(f"value = {written}")["value"]


def parse(graceful_table: dict[str, Any], server_table: dict[str, Any]) -> Any:
    return parse_config(
        {"graceful": graceful_table, "servers": {"s1": server_table}}, Path("/nonexistent/g.toml")
    )


MINIMAL_SERVER = {"app": "mypkg.web:root", "ports": [0]}


class ConfigKeysTests(SynchronousTestCase):
    """
    Every key the config parser accepts is documented, with its default, and
    every documented key is accepted.
    """

    def test_tables_found(self) -> None:
        """
        The page has both tables, and the pattern finds their keys (a
        renamed heading or a reworded term must not make the other tests
        pass on nothing).
        """
        self.assertIn("drain_timeout", documented_keys(GRACEFUL_TABLE))
        self.assertIn("app", documented_keys(SERVERS_TABLE))

    def test_graceful_keys_match_the_parser(self) -> None:
        """
        The C{[graceful]} keys documented are those the parser knows.
        """
        documented = set(documented_keys(GRACEFUL_TABLE))
        accepted = set(_SETTINGS_KEYS)
        self.assertEqual(
            (accepted - documented, documented - accepted),
            (set(), set()),
            "(accepted but not documented, documented but not accepted)",
        )

    def test_server_keys_match_the_parser(self) -> None:
        """
        The C{[servers.NAME]} keys documented are those the parser knows.
        """
        documented = set(documented_keys(SERVERS_TABLE))
        accepted = set(_SERVER_KEYS)
        self.assertEqual(
            (accepted - documented, documented - accepted),
            (set(), set()),
            "(accepted but not documented, documented but not accepted)",
        )

    def test_documented_graceful_keys_parse(self) -> None:
        """
        Each documented C{[graceful]} key, given its documented default (or
        a value of its kind), is accepted by the parser: not an unknown key,
        not the wrong type.
        """
        for key, doc in documented_keys(GRACEFUL_TABLE).items():
            value = toml_value(doc.default) if doc.default is not None else _sample(key)
            try:
                parse({key: value}, MINIMAL_SERVER)
            except ConfigError as e:
                self.assertNotIn("unknown key", str(e), key)
                self.assertNotIn(f"graceful.{key} must be", str(e), key)

    def test_documented_server_keys_parse(self) -> None:
        """
        Each documented C{[servers.NAME]} key is accepted by the parser.
        """
        for key, doc in documented_keys(SERVERS_TABLE).items():
            value = toml_value(doc.default) if doc.default is not None else _sample(key)
            try:
                parse({}, {**MINIMAL_SERVER, key: value})
            except ConfigError as e:
                self.assertNotIn("unknown key", str(e), key)
                self.assertNotIn(f"servers.s1.{key} must be", str(e), key)

    def test_graceful_defaults(self) -> None:
        """
        The documented default of each C{[graceful]} key is what a config
        without it gets.
        """
        config = parse({}, MINIMAL_SERVER)
        effective: dict[str, Callable[[], Any]] = {
            # Unset, the spread in effect follows drain_timeout.
            "drain_spread": lambda: config.settings.spread,
            "services": lambda: list(config.services),
        }
        for key, doc in documented_keys(GRACEFUL_TABLE).items():
            actual = effective.get(key, lambda: getattr(config.settings, key))()
            expected = None if doc.default is None else toml_value(doc.default)
            self.assertEqual(actual, expected, key)

    def test_server_defaults(self) -> None:
        """
        The documented default of each C{[servers.NAME]} key is what a server
        without it gets; C{app} alone is required.
        """
        defaults = {a.name: a.default for a in fields(ServerConfig)}
        for key, doc in documented_keys(SERVERS_TABLE).items():
            if doc.required:
                self.assertIs(defaults[key], NOTHING, key)
                continue
            actual = defaults.get(key)  # admin_token_file is read into admin_token
            if isinstance(actual, tuple):
                actual = list(actual)
            if key == "unix_socket_mode" and actual is None:
                actual = DEFAULT_UNIX_MODE  # the server's, when the config sets none
            expected = None if doc.default is None else toml_value(doc.default)
            self.assertEqual(actual, expected, key)

    def test_a_key_missing_from_the_page_is_found(self) -> None:
        """
        The check above fails when a key the parser accepts is not
        documented.
        """
        text = reference()
        without = "\n".join(
            line for line in text.splitlines() if not line.startswith("``workers`` (")
        )
        self.assertIn("workers", documented_keys(GRACEFUL_TABLE, text))
        self.assertNotIn("workers", documented_keys(GRACEFUL_TABLE, without))


def _sample(key: str) -> Any:
    """
    A value of the right kind for a key documented without a default.
    """
    samples = {
        "access_log": "-",
        "env_file": ".env",
        "log_config": "logging.json",
        "key_password": "secret",
        "ca_certs": "ca.pem",
        "ciphers": "ECDHE+AESGCM",
        "app_dir": "/",
        "pidfile": "graceful.pid",
        "directory": "/",
        "admin_socket": "/tmp/graceful-reference-test.sock",
        "cert": "server.crt",
        "key": "server.key",
        "admin": "/debug/admin",
        "admin_token": "secret",
        "admin_token_file": "token",
        "health": "/healthz",
        "app": "mypkg.web:root",
        "unix_socket_group": 0,
    }
    return samples[key]


# -- the public API ---------------------------------------------------------------


@define
class DocumentedName:
    owner: str
    name: str
    params: str | None
    value: str | None


def documented_names() -> Iterator[DocumentedName]:
    for term in terms(reference().splitlines()):
        for match in _NAME.finditer(term):
            yield DocumentedName(match["owner"], match["name"], match["params"], match["value"])


def parameters(written: str) -> list[tuple[str, str | None]]:
    """
    C{"name, retry=1000, **kwargs"} as C{[("name", None), ("retry", "1000"),
    ("kwargs", None)]}.
    """
    found = []
    for part in (p.strip() for p in written.split(",")):
        if not part or part in ("*", "/"):
            continue
        name, _, default = part.partition("=")
        name = name.split(":")[0].strip().lstrip("*")
        found.append((name, default.strip() or None))
    return found


class PublicNamesTests(SynchronousTestCase):
    """
    Every public name is documented, with the parameters it really takes.
    """

    def test_every_public_name_is_documented(self) -> None:
        """
        Each name of C{graceful.__all__} and C{graceful.testing.__all__} has
        a term of its own.
        """
        documented = {(d.owner, d.name) for d in documented_names()}
        for module, owner in ((graceful, "graceful."), (graceful.testing, "graceful.testing.")):
            missing = [name for name in module.__all__ if (owner, name) not in documented]
            self.assertEqual(missing, [], f"{module.__name__} names not in docs/reference.rst")

    def test_documented_names_exist(self) -> None:
        """
        Every name the page documents is there, and the constants have the
        values it says.
        """
        owners = {"graceful.": graceful, "graceful.testing.": graceful.testing, "Server.": Server}
        for doc in documented_names():
            owner = owners[doc.owner]
            self.assertTrue(hasattr(owner, doc.name), f"{doc.owner}{doc.name}")
            if doc.owner != "Server.":
                module_all = owner.__all__  # type: ignore[attr-defined]
                self.assertIn(doc.name, module_all, f"{doc.owner}{doc.name} is not public")
            if doc.value is not None:
                self.assertEqual(getattr(owner, doc.name), ast.literal_eval(doc.value))

    def test_signatures(self) -> None:
        """
        The parameters written for a callable are its parameters, in order,
        with the defaults written, and none it requires is left out.
        """
        owners = {"graceful.": graceful, "graceful.testing.": graceful.testing, "Server.": Server}
        checked = 0
        for doc in documented_names():
            if doc.params is None:
                continue
            target = getattr(owners[doc.owner], doc.name)
            where = f"{doc.owner}{doc.name}({doc.params})"
            if isinstance(target, type) and issubclass(target, Exception) and (
                target.__init__ is Exception.__init__
            ):
                continue  # Exception's own (*args): the message
            signature = inspect.signature(target)
            real = [p for p in signature.parameters.values() if p.name != "self"]
            written = parameters(doc.params)
            real_names = [p.name for p in real]
            names = [name for name, _ in written]
            self.assertEqual(
                names, [n for n in real_names if n in names], f"{where}: unknown or out of order"
            )
            for p in real:
                if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                    self.assertIn(p.name, names, f"{where}: {p.name} is required")
            for name, default in written:
                if default is not None:
                    self.assertEqual(
                        signature.parameters[name].default,
                        ast.literal_eval(default),
                        f"{where}: default of {name}",
                    )
            checked += 1
        self.assertGreater(checked, 30)


class TestingExampleTests(SynchronousTestCase):
    """
    The example of C{graceful.testing} on the page runs as written.
    """

    def test_example_runs(self) -> None:
        lines = section(reference(), "Testing: ``graceful.testing``")
        start = next(i for i, line in enumerate(lines) if line.endswith("::")) + 2
        block = []
        for line in lines[start:]:
            if line and not line.startswith("    "):
                break
            block.append(line[4:])
        code = textwrap.dedent("\n".join(block))
        self.assertIn("memory_runtime", code)
        exec(compile(code, f"{REFERENCE}:testing example", "exec"), {})


# -- the metrics ------------------------------------------------------------------------


METRICS_SECTION = "The metrics (``GET <admin>/metrics``)"
_METRIC_ROW = re.compile(
    r"^``(?P<name>graceful_\w+)(?:\{(?P<labels>[\w,]+)\})?``\s+(?P<type>counter|gauge|histogram)\s"
)


@define(eq=False)
class _StatusSource:
    """
    What the collector reads of a runtime.
    """

    current: ProcessStatus
    reactor: MemoryReactorClock = field(factory=MemoryReactorClock)
    pid: int = 100
    admin: AdminState = field(factory=AdminState)

    def status(self) -> ProcessStatus:
        return self.current


def _every_metric() -> dict[str, tuple[str, frozenset[str]]]:
    """
    Every graceful metric the admin page can show, by exposed name: its
    type and labels, from a master's status where every part is present.
    """
    status = ProcessStatus(
        pid=100,
        generation=2,
        servers=(
            ServerStatus(
                "web", (PortStatus(port=8100),), 1, requests=5, connections={"http/1.1": 1},
                responses={"2xx": 5}, duration_counts=(5,) + (0,) * len(DURATION_BUCKETS),
                duration_sum=0.01, refused={"limit_concurrency": 1},
            ),
        ),
        role="master",
        draining=True,
        drain=DrainStatus("restart", 1.0, 5.0, 30.0, 1),
        last_restart=LastRestart(True, None, 1.0, 0.3, 0.0, 0.004),
        workers=(WorkerStatus(100, 0, 2, ready=True, rss_mib=10.0, last_heartbeat=0.1),),
        last_replaced_reason={0: "roll"},
        worker_replacements={"roll": 1},
    )
    families: list[Metric] = [
        *RuntimeCollector(_StatusSource(status)).collect(),  # type: ignore[arg-type]
        *status_metrics(status),
        *worker_metrics(status),
    ]
    found = {}
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = frozenset(label for sample in family.samples for label in sample.labels)
        if family.type == "histogram":
            labels -= {"le"}  # each bucket's bound, not a label of the metric
        assert family.samples, f"{name}: the status above should give it a value"
        found[name] = (family.type, labels)
    return found


class MetricsTests(SynchronousTestCase):
    """
    The metrics table names every metric, with its labels and type.
    """

    def test_metrics_table(self) -> None:
        documented = {}
        for line in section(reference(), METRICS_SECTION):
            match = _METRIC_ROW.match(line)
            if match is not None:
                labels = frozenset((match["labels"] or "").split(",")) - {""}
                documented[match["name"]] = (match["type"], labels)
        self.assertEqual(documented, _every_metric())

    def test_readme_lists_every_metric(self) -> None:
        readme = (REFERENCE.parents[1] / "README.rst").read_text()
        missing = {name for name in _every_metric() if f"``{name}" not in readme}
        self.assertEqual(missing, set())


class ReadmeOptionsTableTests(SynchronousTestCase):
    """
    README's table of C{graceful run}'s options gives each a code call (or
    says why there is none), and the calls it names exist.
    """

    def rows(self) -> list[str]:
        readme = (REFERENCE.parents[1] / "README.rst").read_text().splitlines()
        start = next(i for i, line in enumerate(readme) if line.split()[:3] == ["option", "TOML", "key"])
        rows = []
        for line in readme[start + 1:]:
            if not line.strip():
                break
            rows.append(line)
        return rows

    def test_every_option_has_a_code_call(self) -> None:
        rows = self.rows()
        self.assertGreater(len(rows), 30)
        self.assertEqual([row for row in rows if row.rstrip().endswith(" -")], [])

    def test_the_calls_exist(self) -> None:
        named = set()
        for row in self.rows():
            named.update(re.findall(r"\b([gs])\.(\w+)\(", row))
        self.assertGreater(len(named), 15)
        for owner, name in sorted(named):
            self.assertTrue(hasattr(graceful if owner == "g" else Server, name), f"{owner}.{name}")

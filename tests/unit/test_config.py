"""
Unit tests for L{graceful._config}: reading, checking and applying the TOML
config.  Every bad input must give a one-line L{ConfigError} naming the key or
file; good input must come out resolved and with its defaults.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from twisted.application.service import IService
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import IResource, Resource

from graceful._config import (
    Config,
    apply_config,
    check_apps_apart,
    classify_app,
    load_config,
    load_object,
    parse_config,
)
from graceful._errors import ConfigError
from graceful.process.runtime import Runtime

CONFIG_NAME = "graceful.toml"


class _ConfigDirectory(SynchronousTestCase):
    """
    A temporary folder holding a config file and whatever files it names.
    """

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="graceful-config-")).resolve()
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.config_path = self.folder / CONFIG_NAME

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(textwrap.dedent(text))
        return path

    def load(self, text: str) -> Config:
        self.write(CONFIG_NAME, text)
        return load_config(self.config_path)

    def assertConfigError(self, text: str, *fragments: str) -> str:
        """
        Loading C{text} fails with a one-line error holding every fragment.
        """
        error = self.assertRaises(ConfigError, self.load, text)
        return self.assertOneLine(error, *fragments)

    def assertOneLine(self, error: Exception, *fragments: str) -> str:
        message = str(error)
        self.assertNotIn("\n", message)
        for fragment in fragments:
            self.assertIn(fragment, message)
        return message


MINIMAL_SERVER = """
[servers.s1]
app = "mypkg.web:root"
ports = [8100]
"""


def server_table(*lines: str) -> str:
    """
    C{[servers.s1]} with a valid app and port unless C{lines} set them.
    """
    given = {line.split("=", 1)[0].strip() for line in lines}
    defaults = [f"{k} = {v}" for k, v in (("app", '"m:a"'), ("ports", "[8100]")) if k not in given]
    return "\n".join(["[servers.s1]", *defaults, *lines]) + "\n"


class BadConfigTests(_ConfigDirectory):
    """
    Every mistake in a config file is one line that names the key or file.
    """

    def test_missing_file(self) -> None:
        missing = self.folder / "nope.toml"
        error = self.assertRaises(ConfigError, load_config, missing)
        self.assertOneLine(error, "config file not found", str(missing))

    def test_directory_instead_of_file(self) -> None:
        error = self.assertRaises(ConfigError, load_config, self.folder)
        self.assertOneLine(error, str(self.folder))

    def test_invalid_toml(self) -> None:
        self.assertConfigError("[servers.s1\napp = ", str(self.config_path), "not valid TOML")

    def test_not_utf8(self) -> None:
        self.write(CONFIG_NAME, b'[servers.s1]\napp = "caf\xe9:x"\nports = [1]\n')
        error = self.assertRaises(ConfigError, load_config, self.config_path)
        self.assertOneLine(error, str(self.config_path))

    def test_unknown_top_level_key(self) -> None:
        self.assertConfigError("colour = 1\n" + MINIMAL_SERVER, "unknown key", "colour")

    def test_unknown_graceful_key(self) -> None:
        self.assertConfigError(
            "[graceful]\ndrain_timout = 3\n" + MINIMAL_SERVER, "graceful.drain_timout"
        )

    def test_canary_settings(self) -> None:
        self.assertConfigError(
            "[graceful]\ncanary_seconds = -1\n" + MINIMAL_SERVER,
            str(self.config_path),
            "graceful.canary_seconds must be 0 (off) or more",
        )
        self.assertConfigError(
            "[graceful]\ncanary_seconds = 30\ncanary_max_error_ratio = 2\n" + MINIMAL_SERVER,
            "graceful.canary_max_error_ratio must be from 0 to 1",
        )
        self.assertConfigError(
            '[graceful]\ncanary_seconds = "30"\n' + MINIMAL_SERVER, "graceful.canary_seconds"
        )
        settings = self.load("[graceful]\ncanary_seconds = 2\n" + MINIMAL_SERVER).settings
        self.assertEqual((settings.canary_seconds, settings.canary_max_error_ratio), (2.0, 0.01))

    def test_unknown_server_key(self) -> None:
        self.assertConfigError(MINIMAL_SERVER + "prots = [1]\n", "servers.s1.prots")

    def test_graceful_not_a_table(self) -> None:
        self.assertConfigError('graceful = 3\n' + MINIMAL_SERVER, "graceful must be a table")

    def test_server_not_a_table(self) -> None:
        self.assertConfigError("[servers]\ns1 = 3\n", "servers.s1 must be a table")

    def test_no_servers(self) -> None:
        self.assertConfigError("[graceful]\nworkers = 2\n", "[servers.NAME]")

    def test_wrong_types(self) -> None:
        cases = {
            '[graceful]\ndrain_timeout = "5"\n': "graceful.drain_timeout",
            "[graceful]\nready_timeout = [1]\n": "graceful.ready_timeout",
            "[graceful]\nworkers = 2.5\n": "graceful.workers",
            '[graceful]\nallowed_executables = "/bin/sh"\n': "graceful.allowed_executables",
            "[graceful]\nallowed_executables = [1]\n": "graceful.allowed_executables",
            "[graceful]\nservices = [1]\n": "graceful.services",
            "[graceful]\naccess_log = true\n": "graceful.access_log",
        }
        for table, key in cases.items():
            self.assertConfigError(table + MINIMAL_SERVER, key)
        server_cases = {
            "app = 3": "servers.s1.app",
            "ports = 8100": "servers.s1.ports",
            'ports = ["8100"]': "servers.s1.ports",
            "graceful = 1": "servers.s1.graceful",
            "admin = true": "servers.s1.admin",
            "host = 127": "servers.s1.host",
        }
        for line, key in server_cases.items():
            self.assertConfigError(server_table(line), key)

    def test_bool_where_number_expected(self) -> None:
        for key in ("workers", "drain_timeout", "ready_timeout"):
            self.assertConfigError(
                f"[graceful]\n{key} = true\n" + MINIMAL_SERVER, f"graceful.{key}", "True"
            )
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nports = [true]\n', "servers.s1.ports", "True"
        )

    def test_numbers_out_of_range(self) -> None:
        for table, key in {
            "drain_timeout = 0": "graceful.drain_timeout",
            "ready_timeout = -1": "graceful.ready_timeout",
            "workers = 0": "graceful.workers",
        }.items():
            self.assertConfigError(f"[graceful]\n{table}\n" + MINIMAL_SERVER, key)

    def test_drain_spread_below_drain_timeout(self) -> None:
        for table in ("drain_timeout = 5\ndrain_spread = 5", "drain_spread = -1", "drain_spread = nan"):
            self.assertConfigError(f"[graceful]\n{table}\n" + MINIMAL_SERVER, "graceful.drain_spread")

    def test_worker_limits_not_negative(self) -> None:
        for key in ("max_requests", "max_requests_jitter", "max_worker_memory", "worker_timeout"):
            self.assertConfigError(f"[graceful]\n{key} = -1\n" + MINIMAL_SERVER, f"graceful.{key}")
        self.assertConfigError("[graceful]\nmax_requests = 1.5\n" + MINIMAL_SERVER, "max_requests")

    def test_worker_limits(self) -> None:
        settings = self.load(
            "[graceful]\nmax_requests = 1000\nmax_requests_jitter = 50\n"
            "max_worker_memory = 512\nworker_timeout = 3\n" + MINIMAL_SERVER
        ).settings
        self.assertEqual(
            (settings.max_requests, settings.max_requests_jitter),
            (1000, 50),
        )
        self.assertEqual((settings.max_worker_memory, settings.worker_timeout), (512, 3))
        defaults = self.load(MINIMAL_SERVER).settings
        self.assertEqual((defaults.max_requests, defaults.worker_timeout), (0, 30))

    def test_drain_spread(self) -> None:
        settings = self.load("[graceful]\ndrain_timeout = 10\ndrain_spread = 2.5\n" + MINIMAL_SERVER).settings
        self.assertEqual(settings.spread, 2.5)
        # Unset: 5 s, or half a shorter drain_timeout.
        self.assertEqual(self.load(MINIMAL_SERVER).settings.spread, 5.0)
        self.assertEqual(self.load("[graceful]\ndrain_timeout = 4\n" + MINIMAL_SERVER).settings.spread, 2.0)

    def test_timeouts_must_be_finite(self) -> None:
        """
        C{nan} and C{inf} are valid TOML floats but no number of seconds.
        """
        for value in ("nan", "inf"):
            self.assertConfigError(
                f"[graceful]\ndrain_timeout = {value}\n" + MINIMAL_SERVER,
                "graceful.drain_timeout",
            )

    def test_missing_app(self) -> None:
        self.assertConfigError("[servers.s1]\nports = [8100]\n", "servers.s1.app is missing")

    def test_no_ports(self) -> None:
        self.assertConfigError('[servers.s1]\napp = "m:a"\n', "servers.s1", "no ports")

    def test_port_out_of_range(self) -> None:
        for port in ("65536", "-1"):
            self.assertConfigError(
                f'[servers.s1]\napp = "m:a"\nports = [{port}]\n', "servers.s1.ports", port
            )
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nhttps_ports = [70000]\ncert = "c"\nkey = "k"\n',
            "servers.s1.https_ports",
            "70000",
        )

    def test_port_twice_in_one_list(self) -> None:
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nports = [8100, 8100]\n', "servers.s1.ports", "twice"
        )

    def test_port_twice_within_a_server(self) -> None:
        self.write("c.pem", "x")
        self.write("k.pem", "x")
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nports = [8100]\nhttps_ports = [8100]\n'
            'cert = "c.pem"\nkey = "k.pem"\n',
            "port 8100",
            "servers.s1.ports",
            "servers.s1.https_ports",
        )

    def test_port_twice_across_servers(self) -> None:
        self.assertConfigError(
            MINIMAL_SERVER + '[servers.s2]\napp = "m:b"\nports = [8200, 8100]\n',
            "port 8100",
            "servers.s1.ports",
            "servers.s2.ports",
        )

    def test_port_zero_may_repeat(self) -> None:
        config = self.load(
            '[servers.s1]\napp = "m:a"\nports = [0, 0]\n[servers.s2]\napp = "m:b"\nports = [0]\n'
        )
        self.assertEqual([s.ports for s in config.servers], [(0, 0), (0,)])

    def test_same_port_on_different_hosts(self) -> None:
        config = self.load(
            '[servers.s1]\napp = "m:a"\nports = [8100]\nhost = "127.0.0.1"\n'
            '[servers.s2]\napp = "m:b"\nports = [8100]\nhost = "127.0.0.2"\n'
        )
        self.assertEqual(len(config.servers), 2)

    def test_cert_without_key(self) -> None:
        self.write("c.pem", "x")
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nports = [1]\ncert = "c.pem"\n', "servers.s1.key"
        )
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nports = [1]\nkey = "c.pem"\n', "servers.s1.cert"
        )

    def test_https_ports_without_cert(self) -> None:
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nhttps_ports = [8443]\n', "servers.s1.https_ports"
        )

    def test_missing_cert_or_key_file(self) -> None:
        self.write("c.pem", "x")
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nports = [1]\ncert = "c.pem"\nkey = "gone.pem"\n',
            "servers.s1.key",
            str(self.folder / "gone.pem"),
        )
        self.assertConfigError(
            '[servers.s1]\napp = "m:a"\nports = [1]\ncert = "gone.pem"\nkey = "c.pem"\n',
            "servers.s1.cert",
            str(self.folder / "gone.pem"),
        )

    def test_pages_need_a_slash(self) -> None:
        for key in ("admin", "health"):
            self.assertConfigError(
                MINIMAL_SERVER + f'{key} = "debug"\n', f"servers.s1.{key}", "'/'"
            )

    def test_http_impl(self) -> None:
        self.assertEqual(self.load(MINIMAL_SERVER).servers[0].http_impl, "auto")
        config = self.load(MINIMAL_SERVER + 'http_impl = "twisted"\n')
        self.assertEqual(config.servers[0].http_impl, "twisted")
        self.assertConfigError(MINIMAL_SERVER + 'http_impl = "fast"\n', "servers.s1.http_impl",
                               "auto, twisted, native, httptools, h11")

    def test_admin_token_file_missing(self) -> None:
        self.assertConfigError(
            MINIMAL_SERVER + 'admin = "/a"\nadmin_token_file = "token"\n',
            "servers.s1.admin_token_file",
            str(self.folder / "token"),
        )

    def test_admin_token_file_empty(self) -> None:
        self.write("token", "  \n")
        self.assertConfigError(
            MINIMAL_SERVER + 'admin = "/a"\nadmin_token_file = "token"\n',
            "servers.s1.admin_token_file",
            "empty",
        )

    def test_both_token_forms(self) -> None:
        self.write("token", "secret\n")
        self.assertConfigError(
            MINIMAL_SERVER + 'admin_token = "x"\nadmin_token_file = "token"\n',
            "servers.s1",
            "not both",
        )

    def test_bad_server_names(self) -> None:
        for name in ('"a:b"', '"a/b"', '""', '"a\\tb"'):
            self.assertConfigError(
                f'[servers.{name}]\napp = "m:a"\nports = [1]\n', "server name"
            )

    def test_directory_missing(self) -> None:
        self.assertConfigError(
            '[graceful]\ndirectory = "releases/current"\n' + MINIMAL_SERVER,
            "graceful.directory",
            str(self.folder / "releases" / "current"),
        )


class GoodConfigTests(_ConfigDirectory):
    """
    A valid config comes out with defaults filled in and every relative path
    taken from the config file's folder.
    """

    def test_defaults(self) -> None:
        config = self.load(MINIMAL_SERVER)
        self.assertEqual(config.path, self.config_path)
        self.assertEqual(
            (
                config.settings.drain_timeout,
                config.settings.ready_timeout,
                config.settings.workers,
                config.settings.allowed_executables,
                config.settings.access_log,
                config.settings.directory,
            ),
            (30.0, 15.0, 1, [], None, None),
        )
        self.assertEqual(config.services, ())
        [server] = config.servers
        self.assertEqual(
            (server.name, server.app, server.ports, server.https_ports, server.host),
            ("s1", "mypkg.web:root", (8100,), (), ""),
        )
        self.assertEqual(
            (server.cert, server.key, server.graceful, server.admin, server.admin_token),
            (None, None, True, None, None),
        )

    def test_full_config(self) -> None:
        self.write("certs/server.crt", "cert")
        self.write("certs/server.key", "key")
        self.write("secrets/token", "s3cret\n")
        (self.folder / "release").mkdir()
        config = self.load(
            """
            [graceful]
            drain_timeout = 5
            ready_timeout = 2.5
            workers = 3
            allowed_executables = ["bin/next", "/usr/bin/python3"]
            access_log = "logs/access.log"
            directory = "release"
            services = ["mypkg.jobs:scheduler"]

            [servers.s1]
            app = "mypkg.web:root"
            ports = [8100, 0]
            admin = "/debug/admin"
            admin_token_file = "secrets/token"
            health = "/healthz"
            graceful = false

            [servers.s2]
            app = "mypkg.web:other"
            https_ports = [8443]
            host = "127.0.0.1"
            cert = "certs/server.crt"
            key = "certs/server.key"
            admin_token = "inline"
            """
        )
        settings = config.settings
        self.assertEqual((settings.drain_timeout, settings.ready_timeout), (5.0, 2.5))
        self.assertIsInstance(settings.drain_timeout, float)
        self.assertEqual(settings.workers, 3)
        self.assertEqual(
            settings.allowed_executables, [str(self.folder / "bin/next"), "/usr/bin/python3"]
        )
        self.assertEqual(settings.access_log, str(self.folder / "logs/access.log"))
        self.assertEqual(settings.directory, str(self.folder / "release"))
        self.assertEqual(config.services, ("mypkg.jobs:scheduler",))
        s1, s2 = config.servers
        self.assertEqual((s1.ports, s1.graceful, s1.admin, s1.health), ((8100, 0), False, "/debug/admin", "/healthz"))
        self.assertEqual(s1.admin_token, "s3cret")
        self.assertEqual(s2.https_ports, (8443,))
        self.assertEqual(s2.host, "127.0.0.1")
        self.assertEqual(s2.cert, str(self.folder / "certs/server.crt"))
        self.assertEqual(s2.key, str(self.folder / "certs/server.key"))
        self.assertEqual(s2.admin_token, "inline")

    def test_access_log_to_process_log(self) -> None:
        config = self.load('[graceful]\naccess_log = "-"\n' + MINIMAL_SERVER)
        self.assertEqual(config.settings.access_log, "-")

    def test_absolute_paths_kept(self) -> None:
        cert = self.write("elsewhere/c.pem", "x")
        key = self.write("elsewhere/k.pem", "x")
        path = self.folder / "conf" / CONFIG_NAME
        path.parent.mkdir()
        path.write_text(
            f'[servers.s1]\napp = "m:a"\nports = [1]\ncert = "{cert}"\nkey = "{key}"\n'
        )
        [server] = load_config(path).servers
        self.assertEqual((server.cert, server.key), (str(cert), str(key)))

    def test_parse_config_takes_the_folder_from_path(self) -> None:
        """
        L{parse_config} resolves against the folder of the path it is given,
        not the working directory.
        """
        self.write("c.pem", "x")
        self.write("k.pem", "x")
        data: dict[str, Any] = {
            "servers": {"s": {"app": "m:a", "ports": [1], "cert": "c.pem", "key": "k.pem"}}
        }
        [server] = parse_config(data, self.folder / "any.toml").servers
        self.assertEqual(server.cert, str(self.folder / "c.pem"))


class _Modules(SynchronousTestCase):
    """
    Importable modules written to a temporary folder on C{sys.path}.
    """

    _counter = 0

    def setUp(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="graceful-modules-")).resolve()
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.add_path(str(self.folder))

    def add_path(self, entry: str) -> None:
        sys.path.insert(0, entry)
        self.addCleanup(lambda: entry in sys.path and sys.path.remove(entry))

    def module(self, source: str, folder: Path | None = None) -> str:
        """
        Write a module with a fresh name; returns the name.
        """
        _Modules._counter += 1
        name = f"graceful_test_module_{_Modules._counter}"
        (folder or self.folder).joinpath(f"{name}.py").write_text(textwrap.dedent(source))
        self.addCleanup(sys.modules.pop, name, None)
        return name


APP_SOURCE = """
from twisted.web.resource import Resource

class Data(Resource):
    isLeaf = True

    def __init__(self, data):
        super().__init__()
        self.data = data

    def render_GET(self, request):
        return self.data

root = Data(b"root")

class Nested:
    inner = Data(b"inner")

def wsgi(environ, start_response):
    start_response("200 OK", [])
    return [b"wsgi"]

class WSGIClass:
    def __call__(self, environ, start_response):
        return []

wsgi_object = WSGIClass()

def make_resource():
    return Data(b"made")

def make_wsgi():
    return wsgi

def broken_factory():
    raise ValueError("no database\\nsecond line")

def one_argument(request):
    return b""

number = 42
"""


class LoadObjectTests(_Modules):
    """
    C{module:attribute} specs: imported, or a one-line error naming them.
    """

    def test_loads_attribute(self) -> None:
        name = self.module(APP_SOURCE)
        self.assertEqual(load_object(f"{name}:number", "where"), 42)

    def test_dotted_attribute(self) -> None:
        name = self.module(APP_SOURCE)
        obj = load_object(f"{name}:Nested.inner", "where")
        self.assertTrue(IResource.providedBy(obj))

    def test_malformed_spec(self) -> None:
        for spec in ("nocolon", ":attr", "module:"):
            error = self.assertRaises(ConfigError, load_object, spec, "servers.s1.app")
            self.assertIn("servers.s1.app", str(error))
            self.assertIn(repr(spec), str(error))

    def test_module_that_fails_to_import(self) -> None:
        name = self.module("import graceful_no_such_dependency\n")
        error = self.assertRaises(ConfigError, load_object, f"{name}:root", "servers.s1.app")
        message = str(error)
        self.assertNotIn("\n", message)
        self.assertIn("servers.s1.app", message)
        self.assertIn(repr(name), message)
        self.assertIn("graceful_no_such_dependency", message)

    def test_module_with_multi_line_error(self) -> None:
        name = self.module('raise RuntimeError("first\\nsecond")\n')
        error = self.assertRaises(ConfigError, load_object, f"{name}:x", "w")
        self.assertNotIn("\n", str(error))
        self.assertIn(repr(name), str(error))

    def test_module_with_syntax_error(self) -> None:
        name = self.module("def (:\n")
        error = self.assertRaises(ConfigError, load_object, f"{name}:x", "w")
        self.assertIn(repr(name), str(error))
        self.assertIn("SyntaxError", str(error))

    def test_missing_extra_says_what_to_install(self) -> None:
        """
        An app that needs autobahn where it is not installed: the one line
        says which extra brings it.
        """
        # None in sys.modules makes the import fail as if it were missing.
        saved = sys.modules.get("autobahn")
        sys.modules["autobahn"] = None  # type: ignore[assignment]
        self.addCleanup(
            lambda: sys.modules.__setitem__("autobahn", saved)
            if saved is not None
            else sys.modules.pop("autobahn", None)
        )
        name = self.module("import autobahn\n")
        error = self.assertRaises(ConfigError, load_object, f"{name}:root", "servers.s1.app")
        self.assertNotIn("\n", str(error))
        self.assertIn("servers.s1.app", str(error))
        self.assertIn("pip install 'graceful[websocket]'", str(error))

    def test_module_not_found(self) -> None:
        error = self.assertRaises(
            ConfigError, load_object, "graceful_nowhere_module:app", "servers.s1.app"
        )
        self.assertIn("'graceful_nowhere_module'", str(error))

    def test_missing_attribute(self) -> None:
        name = self.module(APP_SOURCE)
        error = self.assertRaises(ConfigError, load_object, f"{name}:nothing", "servers.s1.app")
        self.assertIn("servers.s1.app", str(error))
        self.assertIn("'nothing'", str(error))
        self.assertIn(repr(name), str(error))


class ClassifyAppTests(_Modules):
    """
    What an app spec names: a resource, a WSGI app, or a factory of one.
    """

    def classify(self, attribute: str) -> tuple[str, Any]:
        name = self.module(APP_SOURCE)
        spec = f"{name}:{attribute}"
        return classify_app(load_object(spec, "w"), "w", spec)

    def assertClassifyFails(self, attribute: str, *fragments: str) -> None:
        error = self.assertRaises(ConfigError, self.classify, attribute)
        self.assertNotIn("\n", str(error))
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_resource(self) -> None:
        kind, app = self.classify("root")
        self.assertEqual(kind, "resource")
        self.assertEqual(app.data, b"root")

    def test_wsgi_function(self) -> None:
        kind, app = self.classify("wsgi")
        self.assertEqual(kind, "wsgi")
        self.assertEqual(app.__name__, "wsgi")

    def test_wsgi_callable_object(self) -> None:
        kind, app = self.classify("wsgi_object")
        self.assertEqual(kind, "wsgi")
        self.assertEqual(type(app).__name__, "WSGIClass")

    def test_factory_of_resource(self) -> None:
        kind, app = self.classify("make_resource")
        self.assertEqual((kind, app.data), ("resource", b"made"))

    def test_factory_of_wsgi(self) -> None:
        kind, app = self.classify("make_wsgi")
        self.assertEqual((kind, app.__name__), ("wsgi", "wsgi"))

    def test_resource_class(self) -> None:
        """
        A resource class is a zero-argument factory of resources.
        """
        kind, app = classify_app(Resource, "w", "m:Resource")
        self.assertEqual(kind, "resource")
        self.assertIsInstance(app, Resource)

    def test_klein_style_resource_method(self) -> None:
        class KleinLike:
            def resource(self) -> Resource:
                return Resource()

        kind, app = classify_app(KleinLike(), "w", "m:app")
        self.assertEqual(kind, "resource")
        self.assertIsInstance(app, Resource)

    def test_factory_that_fails(self) -> None:
        self.assertClassifyFails("broken_factory", "broken_factory", "ValueError", "no database")

    def test_something_else(self) -> None:
        self.assertClassifyFails("number", "number", "int")
        self.assertClassifyFails("one_argument", "one_argument")

    def test_factory_returning_something_else(self) -> None:
        error = self.assertRaises(ConfigError, classify_app, lambda: 42, "w", "m:f")
        self.assertIn("int", str(error))


class ApplyConfigTests(_Modules):
    """
    L{apply_config} declares the servers of a config on a runtime, loads
    apps and services, and binds nothing.
    """

    def setUp(self) -> None:
        super().setUp()
        self.reactor = MemoryReactorClock()
        self.runtime = Runtime(
            reactor=self.reactor, environ={}, pid=123, cwd=str(self.folder)
        )

    def config(self, text: str) -> Config:
        path = self.folder / CONFIG_NAME
        path.write_text(textwrap.dedent(text))
        return load_config(path)

    def test_servers_declared(self) -> None:
        name = self.module(APP_SOURCE)
        (self.folder / "c.pem").write_text("x")
        (self.folder / "k.pem").write_text("x")
        config = self.config(
            f"""
            [graceful]
            drain_timeout = 7
            [servers.s1]
            app = "{name}:root"
            ports = [8100, 8200]
            admin = "/debug/admin"
            admin_token = "tok"
            health = "/healthz"
            graceful = false
            [servers.s2]
            app = "{name}:wsgi"
            https_ports = [8443]
            host = "127.0.0.1"
            cert = "c.pem"
            key = "k.pem"
            """
        )
        apply_config(config, self.runtime)
        self.assertIs(self.runtime.settings, config.settings)
        self.assertEqual(self.runtime.settings.drain_timeout, 7.0)
        s1, s2 = self.runtime.servers["s1"], self.runtime.servers["s2"]
        self.assertEqual(list(self.runtime.servers), ["s1", "s2"])
        self.assertEqual((s1.http_ports, s1.https_ports, s1.graceful), ([8100, 8200], [], False))
        self.assertEqual((s1.admin_prefix, s1.admin_token, s1.health_path), ("/debug/admin", "tok", "/healthz"))
        self.assertIs(s1.router._mounts[()], sys.modules[name].root)
        self.assertEqual((s2.https_ports, s2.host), ([8443], "127.0.0.1"))
        self.assertEqual((s2.cert, s2.key), (str(self.folder / "c.pem"), str(self.folder / "k.pem")))
        self.assertEqual(s2._wsgi_mounts, [("/", sys.modules[name].wsgi)])
        self.assertEqual(self.reactor.adoptedPorts, [])
        self.assertEqual([(s.listeners, s._prepared) for s in (s1, s2)], [([], [])] * 2)

    def test_cert_without_https_ports_serves_https_on_ports(self) -> None:
        name = self.module(APP_SOURCE)
        (self.folder / "c.pem").write_text("x")
        (self.folder / "k.pem").write_text("x")
        config = self.config(
            f'[servers.s]\napp = "{name}:root"\nports = [8100]\ncert = "c.pem"\nkey = "k.pem"\n'
        )
        apply_config(config, self.runtime)
        specs = self.runtime.servers["s"].listen_specs()
        self.assertEqual([(spec.port, spec.tls) for spec in specs], [(8100, True)])

    def test_app_directory_comes_first(self) -> None:
        """
        Apps import from C{graceful.directory} (a release folder) when set.
        """
        release = self.folder / "release"
        release.mkdir()
        name = self.module(APP_SOURCE, folder=release)
        config = self.config(
            f'[graceful]\ndirectory = "release"\n[servers.s]\napp = "{name}:root"\nports = [1]\n'
        )
        self.addCleanup(lambda: str(release) in sys.path and sys.path.remove(str(release)))
        apply_config(config, self.runtime)
        self.assertEqual(sys.path[0], str(release))
        self.assertEqual(sys.modules[name].__file__, str(release / f"{name}.py"))

    def test_a_master_imports_no_app(self) -> None:
        """
        A master (C{serves=False}) declares the servers' sockets, but
        imports neither the apps nor the services: its workers do.
        """
        name = self.module(APP_SOURCE)
        config = self.config(
            f'[graceful]\nworkers = 2\nservices = ["{name}:root"]\n'
            f'[servers.s]\napp = "{name}:root"\nports = [8100]\n'
        )
        apply_config(config, self.runtime, serves=False)
        self.assertEqual(self.runtime.servers["s"].http_ports, [8100])
        self.assertEqual(self.runtime.settings.workers, 2)
        self.assertNotIn(name, sys.modules)
        self.assertEqual(list(self.runtime.core.services), [])

    def test_apps_checked_apart(self) -> None:
        """
        L{check_apps_apart} imports the apps and services in a child
        process: a good config passes with nothing imported here, a bad app
        or service is the child's one-line error.
        """
        name = self.module(APP_SOURCE)
        good = self.config(
            f'[graceful]\nservices = ["{name}:root"]\n[servers.s]\napp = "{name}:root"\nports = [1]\n'
        )
        check_apps_apart(good, str(self.folder))
        self.assertNotIn(name, sys.modules)
        for text, fragment in [
            ('[servers.s]\napp = "graceful_absent_app:x"\nports = [1]\n', "servers.s.app"),
            (f'[graceful]\nservices = ["{name}:nothing"]\n[servers.s]\napp = "{name}:root"\n'
             "ports = [1]\n", "graceful.services[0]"),
        ]:
            error = self.assertRaises(ConfigError, check_apps_apart, self.config(text), str(self.folder))
            self.assertNotIn("\n", str(error))
            self.assertIn(fragment, str(error))

    def test_bad_app(self) -> None:
        config = self.config('[servers.s]\napp = "graceful_absent_app:x"\nports = [1]\n')
        error = self.assertRaises(ConfigError, apply_config, config, self.runtime)
        self.assertIn("servers.s.app", str(error))
        self.assertIn(str(config.path), str(error))
        self.assertIn("graceful_absent_app", str(error))

    def test_services(self) -> None:
        name = self.module(
            APP_SOURCE
            + """
from twisted.application.service import Service
instance = Service()
instance.setName("instance")
class Factory(Service):
    name = "from-class"
def not_a_service():
    return 3
"""
        )
        config = self.config(
            f'[graceful]\nservices = ["{name}:instance", "{name}:Factory"]\n'
            f'[servers.s]\napp = "{name}:root"\nports = [1]\n'
        )
        apply_config(config, self.runtime)
        services = list(self.runtime.services)
        self.assertEqual([s.name for s in services], ["instance", "from-class"])
        self.assertTrue(all(IService.providedBy(s) for s in services))
        self.assertFalse(any(s.running for s in services))

    def test_service_that_is_not_one(self) -> None:
        name = self.module(APP_SOURCE + "\ndef not_a_service():\n    return 3\n")
        config = self.config(
            f'[graceful]\nservices = ["{name}:number", "{name}:not_a_service"]\n'
            f'[servers.s]\napp = "{name}:root"\nports = [1]\n'
        )
        error = self.assertRaises(ConfigError, apply_config, config, self.runtime)
        self.assertIn("graceful.services[0]", str(error))
        self.assertIn("IService", str(error))


class ConnectionKeysTests(_ConfigDirectory):
    """
    C{backlog}, C{timeout_keep_alive}, C{ws_max_size}, C{ws_ping_interval}
    and the servers' C{http_impl}.
    """

    def test_given(self) -> None:
        config = self.load(
            "[graceful]\nbacklog = 64\ntimeout_keep_alive = 1\nws_max_size = 0\n"
            "ws_ping_interval = 7.5\n" + server_table('http_impl = "twisted"')
        )
        settings = config.settings
        self.assertEqual(
            (settings.backlog, settings.timeout_keep_alive, settings.ws_max_size,
             settings.ws_ping_interval, config.servers[0].http_impl),
            (64, 1.0, 0, 7.5, "twisted"),
        )

    def test_bad(self) -> None:
        for text, fragment in [
            ("[graceful]\nbacklog = 0\n", "graceful.backlog must be 1 or more, not 0"),
            ('[graceful]\nbacklog = "2"\n', "graceful.backlog must be a whole number, not '2'"),
            ("[graceful]\ntimeout_keep_alive = -1\n",
             "graceful.timeout_keep_alive must be above 0 and finite, not -1"),
            ("[graceful]\nws_ping_interval = nan\n", "graceful.ws_ping_interval must be 0 (off)"),
        ]:
            self.assertConfigError(text + MINIMAL_SERVER, str(self.config_path), fragment)
        self.assertConfigError(
            server_table('http_impl = "uvloop"'),
            "servers.s1.http_impl must be one of auto, twisted, native, httptools, h11, not 'uvloop'",
        )


class WSGIThreadsKeyTests(_ConfigDirectory):
    """
    C{wsgi_threads}: the threads that run each WSGI app at most.
    """

    def test_default_and_given(self) -> None:
        self.assertEqual(self.load(MINIMAL_SERVER).settings.wsgi_threads, 16)
        config = self.load("[graceful]\nwsgi_threads = 4\n" + MINIMAL_SERVER)
        self.assertEqual(config.settings.wsgi_threads, 4)

    def test_bad(self) -> None:
        for text, fragment in [
            ("[graceful]\nwsgi_threads = 0\n",
             "graceful.wsgi_threads must be a whole number of 1 or more, not 0"),
            ('[graceful]\nwsgi_threads = "8"\n',
             "graceful.wsgi_threads must be a whole number, not '8'"),
            ("[graceful]\nwsgi_threads = true\n",
             "graceful.wsgi_threads must be a whole number, not True"),
        ]:
            self.assertConfigError(text + MINIMAL_SERVER, str(self.config_path), fragment)

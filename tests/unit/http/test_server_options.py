"""
Unit tests for L{graceful.http.server_options}: the code calls of the
options the config gives as keys, C{Server.enable_https()}'s TLS options
and C{mount_asgi()}'s and C{mount_wsgi()}'s root_path and lifespan.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from twisted.internet.testing import MemoryReactorClock

import graceful as g
from graceful._config import parse_config
from graceful._errors import ConfigError
from graceful._settings import TLSSettings
from graceful.asgi import resource as asgi_resource

from ..test_registry import _Installed

ROOT = Path(__file__).resolve().parents[3]
CERT = ROOT / "certs" / "server.crt"
KEY = ROOT / "certs" / "server.key"


def encrypted_key(case: _Installed, password: bytes) -> Path:
    key = serialization.load_pem_private_key(KEY.read_bytes(), password=None)
    folder = Path(tempfile.mkdtemp())
    case.addCleanup(lambda: [p.unlink() for p in folder.iterdir()] and folder.rmdir())
    path = folder / "encrypted.key"
    path.write_bytes(key.private_bytes(  # type: ignore[union-attr]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    ))
    return path


class EnableHTTPSTests(_Installed):
    """
    C{enable_https(cert, key, *, key_password, ca_certs, cert_reqs,
    ciphers, min_version)}: the config's TLS keys in code.
    """

    def https_server(self) -> g.Server:
        s1 = g.server("s1")
        s1.set_host("127.0.0.1")
        s1.set_port(0)
        return s1

    def test_encrypted_key_with_its_password_serves(self) -> None:
        """
        A server with an encrypted key and its password starts; the
        password is where the config's C{key_password} goes.
        """
        key = encrypted_key(self, b"s3cret")
        s1 = self.https_server()
        s1.enable_https(str(CERT), str(key), key_password="s3cret")
        s1.prepare()
        self.addCleanup(s1.release_prepared)
        self.assertEqual(self.runtime.settings.tls["s1"], TLSSettings(key_password="s3cret"))

    def test_encrypted_key_without_password_fails_to_start(self) -> None:
        key = encrypted_key(self, b"s3cret")
        s1 = self.https_server()
        s1.enable_https(str(CERT), str(key))
        error = self.assertRaises(ConfigError, s1.prepare)
        self.assertEqual(str(error), f"key file {key} is encrypted: give its password (key_password)")

    def test_every_option_lands_in_the_settings(self) -> None:
        s1 = self.https_server()
        s1.enable_https(
            CERT, KEY, ca_certs=CERT, cert_reqs="required", ciphers="ECDHE+AESGCM",
            min_version="1.3",
        )
        self.assertEqual(
            self.runtime.settings.tls["s1"],
            TLSSettings(None, str(CERT), "required", "ECDHE+AESGCM", "1.3"),
        )
        self.assertEqual((s1.cert, s1.key), (str(CERT), str(KEY)))

    def test_two_arguments_mean_the_defaults(self) -> None:
        """
        The two-argument form still works, and drops options given before.
        """
        s1 = self.https_server()
        s1.enable_https(str(CERT), str(KEY), min_version="1.3")
        s1.enable_https(str(CERT), str(KEY))
        self.assertNotIn("s1", self.runtime.settings.tls)
        s1.prepare()
        self.addCleanup(s1.release_prepared)

    def test_ciphers_that_select_none_fail_to_start(self) -> None:
        s1 = self.https_server()
        s1.enable_https(str(CERT), str(KEY), ciphers="NOSUCHCIPHER")
        error = self.assertRaises(ConfigError, s1.prepare)
        self.assertEqual(str(error), "ciphers 'NOSUCHCIPHER' select no cipher this OpenSSL offers")

    def test_bad_options_say_what_the_config_says(self) -> None:
        """
        A bad option is one line naming the server and the option, the
        config's line for the same key; nothing of it is kept.
        """
        cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
            ({"cert_reqs": "maybe"}, {"cert_reqs": "maybe", "ca_certs": str(CERT)},
             "cert_reqs must be one of none, optional, required, not 'maybe'"),
            ({"cert_reqs": "required"}, {"cert_reqs": "required"},
             "cert_reqs needs ca_certs: the authorities to check against"),
            ({"key_password": 1234}, {"key_password": 1234},
             "key_password must be a string, not 1234"),
        ]
        for code, config, message in cases:
            error = self.assertRaises(
                ConfigError, g.server("s1").enable_https, str(CERT), str(KEY), **code
            )
            self.assertEqual(str(error), f"server 's1': {message}")
            table = {"app": "m:a", "ports": [0], "cert": str(CERT), "key": str(KEY), **config}
            error = self.assertRaises(
                ConfigError, parse_config, {"servers": {"s1": table}}, Path("/x/g.toml")
            )
            self.assertIn(f"servers.s1.{message.split(' ', 1)[0]}", str(error))
            self.assertTrue(str(error).endswith(message.split(" ", 1)[1]), str(error))
        error = self.assertRaises(
            ConfigError, g.server("s1").enable_https, str(CERT), str(KEY), min_version="1.1"
        )
        self.assertEqual(str(error), "server 's1': min_version must be one of 1.2, 1.3, not '1.1'")
        self.assertIsNone(g.server("s1").cert)
        self.assertEqual(self.runtime.settings.tls, {})


def run_asgi(app: Any, scope: dict[str, Any], inbox: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> Any:
        return inbox.pop(0) if inbox else {"type": "lifespan.shutdown"}

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


class MountOptionsTests(_Installed):
    """
    C{mount_asgi(prefix, app, *, root_path, lifespan)} and
    C{mount_wsgi(prefix, app, *, root_path)}: the config's C{root_path} and
    C{lifespan} in code, done to the app as the config does it.
    """

    def setUp(self) -> None:
        super().setUp()
        # Whichever reactor this test process imported first.
        self.patch(asgi_resource, "ensure_asyncio_reactor", lambda: None)
        self.patch(asgi_resource, "asyncio_reactor_running", lambda: True)

    def built(self, server: g.Server) -> list[Any]:
        lifespans: list[Any] = []
        server._apps.build(MemoryReactorClock(), lifespans.append)
        return lifespans

    def test_root_path_reaches_the_scope(self) -> None:
        seen: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["root_path"])

        s1 = g.server("s1")
        s1.mount_asgi("/", app, root_path="/api/")
        [lifespan] = self.built(s1)
        run_asgi(lifespan.app, {"type": "http", "root_path": ""}, [])
        self.assertEqual(seen, ["/api"])

    def test_lifespan_off_never_runs_the_apps(self) -> None:
        called: list[str] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            called.append(scope["type"])

        s1 = g.server("s1")
        s1.mount_asgi("/", app, lifespan="off")
        [lifespan] = self.built(s1)
        run_asgi(lifespan.app, {"type": "lifespan"}, [{"type": "lifespan.startup"}])
        self.assertEqual(called, [])

    def test_lifespan_on_fails_an_app_without_one(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise RuntimeError("only HTTP here")

        s1 = g.server("s1")
        s1.mount_asgi("/", app, lifespan="on")
        [lifespan] = self.built(s1)
        sent = run_asgi(lifespan.app, {"type": "lifespan"}, [{"type": "lifespan.startup"}])
        self.assertEqual(sent, [{"type": "lifespan.startup.failed",
                                 "message": "lifespan on: RuntimeError: only HTTP here"}])

    def test_one_lifespan_for_an_app_mounted_twice(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            pass

        s1 = g.server("s1")
        s1.mount_asgi("/a", app, root_path="/x")
        s1.mount_asgi("/b", app, root_path="/y")
        self.assertEqual(len(self.built(s1)), 1)

    def test_wsgi_root_path_is_script_name(self) -> None:
        seen: list[str] = []
        s1 = g.server("s1")
        s1.mount_wsgi("/", lambda environ, start: seen.append(environ["SCRIPT_NAME"]),
                      root_path="/api")
        [(prefix, app)] = s1._wsgi_mounts
        app({"SCRIPT_NAME": ""}, None)
        self.assertEqual(seen, ["/api"])

    def test_bad_options(self) -> None:
        s1 = g.server("s1")
        for call, message in [
            (lambda: s1.mount_asgi("/", lambda *a: None, lifespan="yes"),
             "lifespan must be \"auto\", \"on\" or \"off\", not 'yes'"),
            (lambda: s1.mount_asgi("/", lambda *a: None, root_path="api"),
             "root_path must start with '/'"),
            (lambda: s1.mount_wsgi("/", lambda *a: None, root_path="api"),
             "root_path must start with '/'"),
        ]:
            error = self.assertRaises(ConfigError, call)
            self.assertEqual(str(error), f"server 's1': {message}")
        # Nothing was mounted: "/" is still free.
        s1.route("/", lambda request: "ok")

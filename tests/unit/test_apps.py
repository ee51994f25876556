"""
Unit tests for L{graceful._apps}: the environment file, factories, and an
ASGI app's root_path and lifespan mode.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from graceful._apps import (
    ENV_FILE_NAMES,
    call_factory,
    load_env_file,
    parse_env_file,
    wrap_app,
)
from graceful._errors import ConfigError


class EnvFileTests(SynchronousTestCase):
    def test_parse(self) -> None:
        text = (
            "# a comment\n\nPLAIN=1\nexport EXPORTED=yes\nQUOTED=\"a b\"  # trailing\n"
            "SINGLE='x=y'\nEMPTY=\n"
        )
        self.assertEqual(
            parse_env_file(text, ".env"),
            {"PLAIN": "1", "EXPORTED": "yes", "QUOTED": "a b", "SINGLE": "x=y", "EMPTY": ""},
        )

    def test_bad_line(self) -> None:
        with self.assertRaises(ConfigError) as e:
            parse_env_file("OK=1\nnot a setting\n", "/app/.env")
        self.assertEqual(str(e.exception), "/app/.env, line 2: not NAME=value: 'not a setting'")

    def test_load_keeps_what_was_set_before_and_rereads_its_own(self) -> None:
        """
        A variable set before graceful started wins (as uvicorn); one the
        file set is read afresh by the next generation, which inherits it.
        """
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / ".env"
            path.write_text("A=file\nB=file\n")
            environ = {"A": "shell"}
            load_env_file(str(path), environ)
            self.assertEqual(environ, {"A": "shell", "B": "file", ENV_FILE_NAMES: "B"})
            path.write_text("A=file\nB=changed\n")
            next_generation = dict(environ)
            load_env_file(str(path), next_generation)
            self.assertEqual(next_generation["B"], "changed")
            self.assertEqual(next_generation["A"], "shell")


class FactoryTests(SynchronousTestCase):
    def test_called(self) -> None:
        self.assertEqual(call_factory(lambda: "app", "where", "m:f"), "app")

    def test_failure_is_one_line(self) -> None:
        def broken() -> None:
            raise ValueError("no\nmore")

        with self.assertRaises(ConfigError) as e:
            call_factory(broken, "where", "m:f")
        self.assertEqual(str(e.exception), "where: calling 'm:f' failed: ValueError: no")


def run_asgi(app: Any, scope: dict[str, Any], incoming: list[dict[str, Any]]) -> list[Any]:
    sent: list[Any] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    return sent


class ASGIWrapperTests(SynchronousTestCase):
    def test_defaults_leave_the_app(self) -> None:
        app = object()
        self.assertIs(wrap_app("asgi", app, "", "auto"), app)
        self.assertIs(wrap_app("wsgi", app, "", "off"), app)

    def test_root_path(self) -> None:
        seen: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope["root_path"])

        run_asgi(wrap_app("asgi", app, "/api", "auto"), {"type": "http", "root_path": ""}, [])
        self.assertEqual(seen, ["/api"])

    def test_wsgi_script_name(self) -> None:
        seen: list[Any] = []
        app = wrap_app("wsgi", lambda environ, start: seen.append(environ["SCRIPT_NAME"]), "/api", "auto")
        app({"SCRIPT_NAME": ""}, None)
        self.assertEqual(seen, ["/api"])

    def test_lifespan_off(self) -> None:
        called: list[Any] = []

        async def app(scope: Any, receive: Any, send: Any) -> None:
            called.append(scope["type"])

        run_asgi(wrap_app("asgi", app, "", "off"), {"type": "lifespan"}, [])
        self.assertEqual(called, [])

    def test_lifespan_on_fails_an_app_without(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            raise RuntimeError("only HTTP here")

        sent = run_asgi(wrap_app("asgi", app, "", "on"), {"type": "lifespan"},
                        [{"type": "lifespan.startup"}])
        self.assertEqual(sent, [{"type": "lifespan.startup.failed",
                                 "message": "lifespan on: RuntimeError: only HTTP here"}])

    def test_lifespan_on_runs_one_with(self) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            await send({"type": "lifespan.startup.complete"})

        sent = run_asgi(wrap_app("asgi", app, "", "on"), {"type": "lifespan"},
                        [{"type": "lifespan.startup"}])
        self.assertEqual(sent, [{"type": "lifespan.startup.complete"}])

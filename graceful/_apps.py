# -*- test-case-name: tests.unit.test_apps -*-
"""
Preparing an app as C{graceful run}'s options ask: the environment file
read before it is imported, a factory called, an ASGI app's root_path and
lifespan mode.
"""

from __future__ import annotations

import os
import shlex
from typing import Any, Callable, MutableMapping

from ._errors import ConfigError

#: The names the environment file set, so that a restart (which inherits
#: the environment) reads the file afresh rather than keeping old values,
#: while a variable set before graceful started still wins, as with uvicorn.
ENV_FILE_NAMES = "GRACEFUL_ENV_FILE_NAMES"


def parse_env_file(text: str, path: str) -> dict[str, str]:
    """
    C{NAME=value} lines, as python-dotenv reads them: C{#} comments,
    C{export NAME=value}, single or double quotes.
    """
    values: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, equals, value = line.partition("=")
        name = name.strip()
        if not equals or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise ConfigError(f"{path}, line {number}: not NAME=value: {line[:40]!r}")
        value = value.strip()
        try:
            parts = shlex.split(value, comments=True) if value else [""]
        except ValueError as e:
            raise ConfigError(f"{path}, line {number}: {e}") from None
        values[name] = " ".join(parts) if parts else ""
    return values


def load_env_file(path: str, environ: MutableMapping[str, str]) -> None:
    """
    Set the variables of the file at C{path} that were not set before
    graceful first read it.
    """
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        raise ConfigError(f"env file {path}: {e.strerror}") from None
    ours = set(filter(None, environ.get(ENV_FILE_NAMES, "").split(",")))
    for name, value in parse_env_file(text, path).items():
        if name not in environ or name in ours:
            environ[name] = value
            ours.add(name)
    environ[ENV_FILE_NAMES] = ",".join(sorted(ours))


def call_factory(factory: Any, where: str, spec: str) -> Any:
    """
    C{--factory}: the app is what C{factory()} returns.
    """
    if not callable(factory):
        raise ConfigError(f"{where}: {spec!r} is not callable, so it is no factory")
    try:
        return factory()
    except Exception as e:
        raise ConfigError(
            f"{where}: calling {spec!r} failed: {type(e).__name__}: {e}".splitlines()[0]
        ) from None


ASGIApp = Callable[..., Any]


def wrap_app(kind: str, app: Any, root_path: str, lifespan: str) -> Any:
    """
    C{app} with its root_path and lifespan mode; unchanged (no cost) with
    the defaults.
    """
    if kind == "wsgi" and root_path:
        return _wsgi_root_path(app, root_path)
    if kind != "asgi" or (not root_path and lifespan == "auto"):
        return app
    return _asgi(app, root_path, lifespan)


def _wsgi_root_path(app: Any, root_path: str) -> Any:
    def with_root_path(environ: dict[str, Any], start_response: Any) -> Any:
        environ["SCRIPT_NAME"] = root_path + environ.get("SCRIPT_NAME", "")
        return app(environ, start_response)

    return with_root_path


def _asgi(app: ASGIApp, root_path: str, lifespan: str) -> ASGIApp:
    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            if lifespan == "off":
                # Returning before lifespan.startup is how an app says it
                # has none: graceful serves it without.
                return
            if lifespan == "on":
                return await _lifespan_required(app, scope, receive, send)
        elif root_path:
            scope = {**scope, "root_path": root_path + scope.get("root_path", "")}
        await app(scope, receive, send)

    return wrapped


async def _lifespan_required(app: ASGIApp, scope: Any, receive: Any, send: Any) -> None:
    """
    C{--lifespan on}: an app that fails before it asks for startup fails
    startup, rather than being taken for one without lifespan.
    """
    received = False

    async def tracking_receive() -> Any:
        nonlocal received
        received = True
        return await receive()

    try:
        await app(scope, tracking_receive, send)
    except Exception as e:
        if received:
            raise
        await receive()
        await send({"type": "lifespan.startup.failed",
                    "message": f"lifespan on: {type(e).__name__}: {e}"})
        return
    if not received:
        await receive()
        await send({"type": "lifespan.startup.failed",
                    "message": "lifespan on: the app returned without a lifespan"})

# -*- test-case-name: tests.unit.test_apps -*-
"""
Preparing an app as C{graceful run}'s options ask: the environment file
read before it is imported, a factory called, an ASGI app's root_path and
lifespan mode (those two in L{graceful.http.app_options}, which
C{Server.mount_asgi()} uses too).
"""

from __future__ import annotations

import os
import shlex
from typing import Any, MutableMapping

from ._errors import ConfigError
from .http.app_options import wrap_app

__all__ = ["ENV_FILE_NAMES", "call_factory", "load_env_file", "parse_env_file", "wrap_app"]

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

# -*- test-case-name: tests.unit.test_apps,tests.unit.http.test_server_options -*-
"""
What the root_path and lifespan options do to an app, whether they come
from the config (C{servers.NAME.root_path}, C{lifespan}), from C{graceful
run}'s options, or from C{Server.mount_asgi()} and C{mount_wsgi()}.
"""

from __future__ import annotations

from typing import Any, Callable

from .._errors import ConfigError

#: What C{lifespan} takes: C{"auto"} runs an app's lifespan if it has one,
#: C{"on"} fails startup if it has none, C{"off"} never runs it.
LIFESPAN_MODES = ("auto", "on", "off")


def check_lifespan(value: object) -> str:
    """
    C{value} if C{lifespan} takes it, else a L{ConfigError} naming it.
    """
    if value not in LIFESPAN_MODES:
        raise ConfigError(f'lifespan must be "auto", "on" or "off", not {value!r}')
    assert isinstance(value, str)
    return value


def check_root_path(value: object) -> str:
    """
    C{value} without its trailing slash, if it is empty or starts with
    C{/}, else a L{ConfigError} naming C{root_path}.
    """
    if not isinstance(value, str):
        raise ConfigError(f'root_path must be a path such as "/api", not {value!r}')
    root_path = value.rstrip("/")
    if root_path and not root_path.startswith("/"):
        raise ConfigError("root_path must start with '/'")
    return root_path


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

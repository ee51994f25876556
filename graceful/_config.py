# -*- test-case-name: tests.unit.test_config -*-
"""
The TOML config: read, checked key by key, and applied to a runtime.

Every problem is a L{ConfigError} whose one line names the key or file.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import asdict, frozen

from ._apps import call_factory, load_env_file, wrap_app
from .http.app_options import check_lifespan, check_root_path
from .http.access_log import ACCESS_LOG_FORMATS
from ._errors import ConfigError
from .http.verify import check_verify_paths
from ._settings import LOG_LEVELS, TLSSettings, check_tls_settings
from .process.runtime import Runtime, Settings
from .process.transports import import_transport, twisted_tls_needed
from ._settings import check_canary, check_connection_settings, check_http_impl
from ._settings import check_wsgi_threads
from ._sockets import check_names, check_unix_path, unix_group

if TYPE_CHECKING:
    from .http.server import Server

_SETTINGS_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "drain_timeout": ((int, float), "a number of seconds"),
    "drain_spread": ((int, float), "a number of seconds"),
    "ready_timeout": ((int, float), "a number of seconds"),
    "workers": (int, "a whole number"),
    "max_requests": (int, "a whole number"),
    "max_requests_jitter": (int, "a whole number"),
    "max_worker_memory": ((int, float), "a number of MiB"),
    "worker_timeout": ((int, float), "a number of seconds"),
    "allowed_executables": (list, "a list of paths"),
    "access_log": (str, '"-" or a file path'),
    "access_log_format": (str, '"twisted", "combined" or "json"'),
    "directory": (str, "a directory path"),
    "services": (list, 'a list of "module:attribute" strings'),
    "admin_socket": (str, "a UNIX socket path"),
    "fd_store": (bool, "true or false"),
    "preload": (bool, "true or false"),
    "proxy_headers": (bool, "true or false"),
    "limit_concurrency": (int, "a whole number"),
    "forwarded_allow_ips": (list, 'a list of addresses or networks, or ["*"]'),
    "log_level": (str, 'one of "critical", "error", "warning", "info", "debug"'),
    "log_format": (str, '"text" or "json"'),
    "log_config": (str, "a file path"),
    "env_file": (str, "a file path"),
    "app_dir": (str, "a directory path"),
    "pidfile": (str, "a file path"),
    "reload": (bool, "true or false"),
    "reload_dirs": (list, "a list of directory paths"),
    "canary_seconds": ((int, float), "a number of seconds"),
    "canary_max_error_ratio": ((int, float), "a number from 0 to 1"),
    "backlog": (int, "a whole number"),
    "timeout_keep_alive": ((int, float), "a number of seconds"),
    "ws_max_size": (int, "a whole number of bytes"),
    "ws_ping_interval": ((int, float), "a number of seconds"),
    "wsgi_threads": (int, "a whole number"),
}

_SERVER_KEYS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "app": (str, 'a "module:attribute" string'),
    "ports": (list, "a list of port numbers"),
    "https_ports": (list, "a list of port numbers"),
    "unix_sockets": (list, "a list of UNIX socket paths"),
    "unix_socket_mode": ((int, str), 'a file mode such as 0o660 or "0660"'),
    "unix_socket_group": ((int, str), 'a group name or number such as "www-data"'),
    "host": (str, "an address"),
    "cert": (str, "a file path"),
    "key": (str, "a file path"),
    "graceful": (bool, "true or false"),
    "admin": (str, 'a path such as "/debug/admin"'),
    "admin_token": (str, "a string"),
    "admin_token_file": (str, "a file path"),
    "health": (str, 'a path such as "/healthz"'),
    "verify": (list, 'a list of paths such as ["/healthz"]'),
    "factory": (bool, "true or false"),
    "root_path": (str, 'a path such as "/api"'),
    "lifespan": (str, '"auto", "on" or "off"'),
    "key_password": (str, "a string"),
    "ca_certs": (str, "a file path"),
    "cert_reqs": (str, '"none", "optional" or "required"'),
    "ciphers": (str, "an OpenSSL cipher string"),
    "tls_min_version": (str, '"1.2" or "1.3"'),
    "http_impl": (str, '"auto", "twisted", "native", "httptools" or "h11"'),
}


#: Modules an app may need that come with one of graceful's extras.
_EXTRAS = {"autobahn": "websocket", "h2": "http2"}


@frozen
class ServerConfig:
    name: str
    app: str
    ports: tuple[int, ...] = ()
    https_ports: tuple[int, ...] = ()
    unix_sockets: tuple[str, ...] = ()
    unix_socket_mode: int | None = None
    unix_socket_group: int | None = None
    host: str = ""
    cert: str | None = None
    key: str | None = None
    graceful: bool = True
    admin: str | None = None
    admin_token: str | None = None
    health: str | None = None
    verify: tuple[str, ...] = ()
    factory: bool = False
    root_path: str = ""
    lifespan: str = "auto"
    key_password: str | None = None
    ca_certs: str | None = None
    cert_reqs: str = "none"
    ciphers: str | None = None
    tls_min_version: str = "1.2"
    http_impl: str = "auto"

    @property
    def tls(self) -> TLSSettings:
        return TLSSettings(
            self.key_password, self.ca_certs, self.cert_reqs, self.ciphers, self.tls_min_version
        )


@frozen
class Config:
    path: Path
    settings: Settings
    services: tuple[str, ...]
    servers: tuple[ServerConfig, ...]


def load_config(path: str | Path) -> Config:
    """
    Read and check the config at C{path}.  Relative file paths in it are
    taken from the config file's folder.
    """
    path = Path(path)
    return parse_config(read_config_data(path), path)


def read_config_data(path: Path) -> dict[str, Any]:
    """
    The TOML at C{path}, unchecked.
    """
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}")
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text: {e.reason} at byte {e.start}")


def parse_config(data: dict[str, Any], path: Path) -> Config:
    base = path.parent
    for key in data:
        if key not in ("graceful", "servers"):
            raise ConfigError(f"{path}: unknown key {key!r}")
    table = _table(data.get("graceful", {}), "graceful", path)
    _check_keys(table, _SETTINGS_KEYS, "graceful", path)
    settings = Settings()
    for key in ("drain_timeout", "ready_timeout"):
        if key in table:
            if not 0 < table[key] < float("inf"):  # also refuses nan
                raise ConfigError(f"{path}: graceful.{key} must be above 0 and finite")
            setattr(settings, key, float(table[key]))
    if "drain_spread" in table:
        spread = table["drain_spread"]
        if not 0 <= spread < settings.drain_timeout:  # also refuses nan
            raise ConfigError(
                f"{path}: graceful.drain_spread must be 0 or more and less than "
                f"drain_timeout ({settings.drain_timeout:g}), not {spread!r}"
            )
        settings.drain_spread = float(spread)
    if "workers" in table:
        if table["workers"] < 1:
            raise ConfigError(f"{path}: graceful.workers must be 1 or more")
        settings.workers = table["workers"]
    for key in ("max_requests", "max_requests_jitter", "max_worker_memory", "worker_timeout"):
        if key in table:
            if not 0 <= table[key] < float("inf"):  # also refuses nan
                raise ConfigError(f"{path}: graceful.{key} must be 0 (off) or more")
            setattr(settings, key, table[key])
    settings.allowed_executables = [
        str(_resolve(base, p))
        for p in _strings(table.get("allowed_executables", []), "graceful.allowed_executables", path)
    ]
    if "access_log" in table:
        log = table["access_log"]
        settings.access_log = log if log in ("", "-") else str(_resolve(base, log))
    if table.get("access_log_format", "twisted") not in ACCESS_LOG_FORMATS:
        raise ConfigError(
            f"{path}: graceful.access_log_format must be one of {', '.join(ACCESS_LOG_FORMATS)}, "
            f"not {table['access_log_format']!r}"
        )
    settings.access_log_format = table.get("access_log_format", "twisted")
    if "directory" in table:
        directory = Path(table["directory"]).expanduser()
        if not directory.is_absolute():
            directory = base / directory
        if not directory.is_dir():
            raise ConfigError(f"{path}: graceful.directory is not a directory: {directory}")
        settings.directory = str(directory)
    if "admin_socket" in table:
        settings.admin_socket = _unix_path(table["admin_socket"], base, "graceful.admin_socket", path)
    settings.fd_store = table.get("fd_store", True)
    settings.preload = table.get("preload", True)
    _command_settings(settings, table, base, path)
    if "canary_seconds" in table or "canary_max_error_ratio" in table:
        try:
            settings.canary_seconds, settings.canary_max_error_ratio = check_canary(
                table.get("canary_seconds", 0.0), table.get("canary_max_error_ratio", 0.01)
            )
        except ConfigError as e:
            raise ConfigError(f"{path}: graceful.{e}")
    services = tuple(_strings(table.get("services", []), "graceful.services", path))

    servers_table = _table(data.get("servers", {}), "servers", path)
    if not servers_table:
        raise ConfigError(f"{path}: no [servers.NAME] table: nothing to serve")
    servers = tuple(
        _server(name, _table(value, f"servers.{name}", path), base, path)
        for name, value in servers_table.items()
    )
    _check_ports_unique(servers, path)
    settings.tls = {s.name: s.tls for s in servers if s.tls != TLSSettings()}
    _check_unix_unique(servers, settings, path)
    return Config(path, settings, services, servers)


def _command_settings(settings: Settings, table: dict[str, Any], base: Path, path: Path) -> None:
    """
    The keys of C{graceful run}'s options and of proxy headers.
    """
    settings.proxy_headers = table.get("proxy_headers", False)
    if table.get("limit_concurrency", 0) < 0:
        raise ConfigError(f"{path}: graceful.limit_concurrency must be 0 (no limit) or more")
    settings.limit_concurrency = table.get("limit_concurrency", 0)
    if "forwarded_allow_ips" in table:
        allowed = _strings(table["forwarded_allow_ips"], "graceful.forwarded_allow_ips", path)
        from .http.proxy import check_trusted  # (twisted.web: not for a master)

        try:
            check_trusted(allowed)
        except ConfigError as e:
            raise ConfigError(f"{path}: graceful.forwarded_allow_ips: {e}") from None
        settings.forwarded_allow_ips = allowed
    if "log_level" in table:
        if table["log_level"] not in LOG_LEVELS:
            raise ConfigError(
                f"{path}: graceful.log_level must be one of {', '.join(LOG_LEVELS)}, "
                f"not {table['log_level']!r}"
            )
        settings.log_level = table["log_level"]
    if table.get("log_format", "text") not in ("text", "json"):
        raise ConfigError(
            f"{path}: graceful.log_format must be \"text\" or \"json\", not {table['log_format']!r}"
        )
    settings.log_format = table.get("log_format", "text")
    if "log_config" in table:
        log_config = _resolve(base, table["log_config"])
        if not log_config.is_file():
            raise ConfigError(f"{path}: graceful.log_config: file not found: {log_config}")
        settings.log_config = str(log_config)
    if "env_file" in table:
        env_file = _resolve(base, table["env_file"])
        if not env_file.is_file():
            raise ConfigError(f"{path}: graceful.env_file: file not found: {env_file}")
        settings.env_file = str(env_file)
    if "app_dir" in table:
        app_dir = _resolve(base, table["app_dir"])
        if not app_dir.is_dir():
            raise ConfigError(f"{path}: graceful.app_dir is not a directory: {app_dir}")
        settings.app_dir = str(app_dir)
    if "pidfile" in table:
        settings.pidfile = str(_resolve(base, table["pidfile"])) if table["pidfile"] else None
    settings.reload = table.get("reload", False)
    dirs = []
    for directory in _strings(table.get("reload_dirs", []), "graceful.reload_dirs", path):
        if not _resolve(base, directory).is_dir():
            raise ConfigError(
                f"{path}: graceful.reload_dirs: not a directory: {_resolve(base, directory)}"
            )
        dirs.append(str(_resolve(base, directory)))
    settings.reload_dirs = dirs
    keys = ("backlog", "timeout_keep_alive", "ws_max_size", "ws_ping_interval")
    try:
        (settings.backlog, settings.timeout_keep_alive, settings.ws_max_size,
         settings.ws_ping_interval) = check_connection_settings(
            *(table.get(key, getattr(settings, key)) for key in keys)
        )
    except ConfigError as e:
        raise ConfigError(f"{path}: graceful.{e}") from None
    try:
        settings.wsgi_threads = check_wsgi_threads(table.get("wsgi_threads", settings.wsgi_threads))
    except ConfigError as e:
        raise ConfigError(f"{path}: graceful.{e}") from None


def _server(name: str, table: dict[str, Any], base: Path, path: Path) -> ServerConfig:
    where = f"servers.{name}"
    try:
        check_names([name])
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    _check_keys(table, _SERVER_KEYS, where, path)
    if "app" not in table:
        raise ConfigError(f"{path}: {where}.app is missing")
    ports = _ports(table.get("ports", []), f"{where}.ports", path)
    https_ports = _ports(table.get("https_ports", []), f"{where}.https_ports", path)
    unix_sockets = tuple(
        _unix_path(p, base, f"{where}.unix_sockets", path)
        for p in _strings(table.get("unix_sockets", []), f"{where}.unix_sockets", path)
    )
    if len(set(unix_sockets)) != len(unix_sockets):
        raise ConfigError(f"{path}: {where}.unix_sockets lists a path twice")
    mode = None
    if "unix_socket_mode" in table:
        mode = _mode(table["unix_socket_mode"], f"{where}.unix_socket_mode", path)
    group = None
    if "unix_socket_group" in table:
        try:
            group = unix_group(table["unix_socket_group"])
        except ConfigError as e:
            raise ConfigError(f"{path}: {where}.unix_socket_group: {e}") from None
    if not ports and not https_ports and not unix_sockets:
        raise ConfigError(f"{path}: {where} has no ports, https_ports or unix_sockets")
    cert = table.get("cert")
    key = table.get("key")
    if (cert is None) != (key is None):
        missing = "key" if key is None else "cert"
        raise ConfigError(f"{path}: {where}.{missing} is missing (cert and key go together)")
    if https_ports and cert is None:
        raise ConfigError(f"{path}: {where}.https_ports needs cert and key")
    for field_name, value in (("cert", cert), ("key", key)):
        if value is not None and not _resolve(base, value).is_file():
            raise ConfigError(
                f"{path}: {where}.{field_name}: file not found: {_resolve(base, value)}"
            )
    token = table.get("admin_token")
    if "admin_token_file" in table:
        if token is not None:
            raise ConfigError(f"{path}: {where}: give admin_token or admin_token_file, not both")
        token_path = _resolve(base, table["admin_token_file"])
        try:
            token = token_path.read_text().strip()
        except OSError:
            raise ConfigError(f"{path}: {where}.admin_token_file: cannot read {token_path}")
        if not token:
            raise ConfigError(f"{path}: {where}.admin_token_file is empty: {token_path}")
    for page in ("admin", "health"):
        if page in table and not table[page].startswith("/"):
            raise ConfigError(f"{path}: {where}.{page} must start with '/'")
    try:
        verify = check_verify_paths(table.get("verify", []))
    except ConfigError as e:
        raise ConfigError(f"{path}: {where}.verify: {e}") from None
    _check_tls(table, base, where, path)
    try:
        # The checks of Server.mount_asgi(), so that both say the same.
        root_path = check_root_path(table.get("root_path", ""))
        check_lifespan(table.get("lifespan", "auto"))
        check_http_impl(table.get("http_impl", "auto"))
    except ConfigError as e:
        raise ConfigError(f"{path}: {where}.{e}") from None
    return ServerConfig(
        name=name,
        app=table["app"],
        ports=ports,
        https_ports=https_ports,
        unix_sockets=unix_sockets,
        unix_socket_mode=mode,
        unix_socket_group=group,
        host=table.get("host", ""),
        cert=None if cert is None else str(_resolve(base, cert)),
        key=None if key is None else str(_resolve(base, key)),
        graceful=table.get("graceful", True),
        admin=table.get("admin"),
        admin_token=token,
        health=table.get("health"),
        verify=verify,
        factory=table.get("factory", False),
        root_path=root_path,
        lifespan=table.get("lifespan", "auto"),
        key_password=table.get("key_password"),
        ca_certs=str(_resolve(base, table["ca_certs"])) if "ca_certs" in table else None,
        cert_reqs=table.get("cert_reqs", "none"),
        ciphers=table.get("ciphers"),
        tls_min_version=table.get("tls_min_version", "1.2"),
        http_impl=table.get("http_impl", "auto"),
    )


def _check_tls(table: dict[str, Any], base: Path, where: str, path: Path) -> None:
    # The checks of Server.enable_https(), so that both say the same.
    try:
        check_tls_settings(
            table.get("key_password"), table.get("ca_certs"), table.get("cert_reqs", "none"),
            table.get("ciphers"), table.get("tls_min_version", "1.2"),
        )
    except ConfigError as e:
        raise ConfigError(f"{path}: {where}.{e}") from None
    if "ca_certs" in table and not _resolve(base, table["ca_certs"]).is_file():
        raise ConfigError(
            f"{path}: {where}.ca_certs: file not found: {_resolve(base, table['ca_certs'])}"
        )


def _unix_path(value: str, base: Path, where: str, path: Path) -> str:
    try:
        return check_unix_path(str(_resolve(base, value)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {where}: {e}") from None


def _mode(value: int | str, where: str, path: Path) -> int:
    if isinstance(value, str):
        try:
            value = int(value, 8)
        except ValueError:
            raise ConfigError(f"{path}: {where} must be an octal mode such as \"0660\", not {value!r}")
    if not 0 <= value <= 0o777:
        raise ConfigError(f"{path}: {where} must be from 0o000 to 0o777, not {oct(value)}")
    return value


def _check_unix_unique(servers: tuple[ServerConfig, ...], settings: Settings, path: Path) -> None:
    seen: dict[str, str] = {}
    if settings.admin_socket:
        seen[settings.admin_socket] = "graceful.admin_socket"
    for server in servers:
        where = f"servers.{server.name}.unix_sockets"
        for socket_path in server.unix_sockets:
            if socket_path in seen:
                raise ConfigError(
                    f"{path}: UNIX socket {socket_path} is used twice ({seen[socket_path]} and {where})"
                )
            seen[socket_path] = where


def _check_ports_unique(servers: tuple[ServerConfig, ...], path: Path) -> None:
    seen: dict[tuple[str, int], str] = {}
    for server in servers:
        for kind, ports in (("ports", server.ports), ("https_ports", server.https_ports)):
            for port in ports:
                where = f"servers.{server.name}.{kind}"
                key = (server.host, port)
                if port and key in seen:
                    raise ConfigError(
                        f"{path}: port {port} is used twice ({seen[key]} and {where})"
                    )
                seen[key] = where


def _table(value: Any, where: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: {where} must be a table")
    return value


def _check_keys(
    table: dict[str, Any], known: dict[str, tuple[Any, str]], where: str, path: Path
) -> None:
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key '{where}.{key}'")
        kind, description = known[key]
        wrong_bool = isinstance(value, bool) and kind is not bool
        if wrong_bool or not isinstance(value, kind):
            raise ConfigError(
                f"{path}: {where}.{key} must be {description}, not {value!r}"
            )


def _ports(value: list[Any], where: str, path: Path) -> tuple[int, ...]:
    for port in value:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"{path}: {where}: {port!r} is not a port number (0-65535)")
    nonzero = [p for p in value if p]
    if len(set(nonzero)) != len(nonzero):
        raise ConfigError(f"{path}: {where} lists a port twice")
    return tuple(value)


def _strings(value: list[Any], where: str, path: Path) -> list[str]:
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(f"{path}: {where} must hold strings, not {item!r}")
    return list(value)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


# -- applying ------------------------------------------------------------------


def load_object(spec: str, where: str) -> Any:
    """
    Import C{"module:attribute"} (attribute may be dotted).
    """
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{where}: {spec!r} is not of the form 'module:attribute'")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        line = f"{where}: cannot import {module_name!r}: {type(e).__name__}: {e}".splitlines()[0]
        missing = (getattr(e, "name", None) or "").partition(".")[0]
        if isinstance(e, ImportError) and missing in _EXTRAS:
            line += f" (pip install 'graceful[{_EXTRAS[missing]}]')"
        raise ConfigError(line)
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{where}: module {module_name!r} has no attribute {attribute!r}")
    return obj


def classify_app(obj: Any, where: str, spec: str) -> tuple[str, Any]:
    """
    Whether C{obj} is a resource, a WSGI or an ASGI app, calling it first
    if it is a zero-argument factory: C{("resource", r)}, C{("wsgi", app)}
    or C{("asgi", app)}.
    """
    # Here, not at the top: a master imports no app, and no twisted.web.
    from twisted.web.resource import IResource

    from .asgi.resource import is_asgi_app

    for attempt in range(2):
        if IResource.providedBy(obj):
            return "resource", obj
        klein_resource = getattr(obj, "resource", None)
        if callable(klein_resource) and not isinstance(obj, type):
            try:
                candidate = klein_resource()
            except TypeError:
                candidate = None
            if IResource.providedBy(candidate):
                return "resource", candidate
        required = _required_arguments(obj)
        if is_asgi_app(obj, required):
            return "asgi", obj
        if required == 2:
            return "wsgi", obj
        if required == 0 and attempt == 0:
            try:
                obj = obj()
            except Exception as e:
                raise ConfigError(
                    f"{where}: calling {spec!r} failed: {type(e).__name__}: {e}".splitlines()[0]
                )
            continue
        break
    raise ConfigError(
        f"{where}: {spec!r} is not a twisted.web resource, a WSGI app, an ASGI app, "
        f"or a zero-argument factory of one (it is {type(obj).__name__})"
    )


def _required_arguments(obj: Any) -> int | None:
    if not callable(obj):
        return None
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    return sum(
        1
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    )


Apps = dict[str, tuple[str, Any]]


def load_apps(config: Config, cwd: str) -> Apps:
    """
    Import every server's app: its name to C{(kind, app)} as
    L{classify_app} tells.
    """
    if config.settings.env_file:
        load_env_file(config.settings.env_file, os.environ)
    app_directory = config.settings.app_dir or config.settings.directory or cwd
    if app_directory not in sys.path:
        sys.path.insert(0, app_directory)
    apps: Apps = {}
    for server_config in config.servers:
        where = f"{config.path}: servers.{server_config.name}.app"
        obj = load_object(server_config.app, where)
        if server_config.factory:
            obj = call_factory(obj, where, server_config.app)
        kind, app = apps[server_config.name] = classify_app(obj, where, server_config.app)
        app = wrap_app(kind, app, server_config.root_path, server_config.lifespan)
        apps[server_config.name] = (kind, app)
        if kind == "asgi":
            from .asgi.resource import ensure_asyncio_reactor

            # At once: the apps imported after this one get the asyncio
            # reactor too, should their modules import the reactor.
            import_transport(twisted_tls_needed_by(config, apps))
            ensure_asyncio_reactor()
    return apps


def twisted_tls_needed_by(config: Config, apps: Apps | None) -> bool:
    """
    Whether this process imports Twisted's transport with TLS (see
    L{graceful.process.transports}): not in a master (C{apps} is C{None}),
    which serves nothing itself; elsewhere, unless its ports speak no TLS,
    it runs no services and every app is known to be ASGI or WSGI.
    """
    if apps is None:
        return False
    kinds = [apps[s.name][0] if s.name in apps else None for s in config.servers]
    tls_ports = any(s.https_ports for s in config.servers)
    return twisted_tls_needed(tls_ports, bool(config.services), kinds)


def apply_config(
    config: Config, runtime: Runtime, apps: Apps | None = None, *, serves: bool = True
) -> None:
    """
    Set the runtime's settings, load every app (unless C{apps} has them
    loaded already) and service, and declare the servers.  Nothing listens
    yet.  A master (C{serves} false) declares the servers' sockets alone:
    its workers import the apps and run the services.
    """
    if apps is None and serves:
        apps = load_apps(config, runtime.cwd)
    runtime.settings = config.settings
    for server_config in config.servers:
        server = runtime.server(server_config.name)
        if apps is not None:
            _mount(config, server_config.name, server, *apps[server_config.name])
        server.set_port(*server_config.ports)
        server.set_https_port(*server_config.https_ports)
        server.set_unix_socket(
            *server_config.unix_sockets,
            mode=server_config.unix_socket_mode,
            group=server_config.unix_socket_group,
        )
        server.set_host(server_config.host)
        if server_config.cert and server_config.key:
            # Without https_ports, `ports` serve HTTPS (as set_port does).
            server.enable_https(server_config.cert, server_config.key, **asdict(server_config.tls))
        server.set_graceful(server_config.graceful)
        if server_config.admin:
            server.enable_admin(server_config.admin, server_config.admin_token)
        if server_config.health:
            server.enable_health(server_config.health)
        server.set_verify(*server_config.verify)
        server.set_http_impl(server_config.http_impl)
    if not serves or not config.services:
        return
    from twisted.application.service import IService

    for index, spec in enumerate(config.services):
        where = f"{config.path}: graceful.services[{index}]"
        service = load_object(spec, where)
        if isinstance(service, type) or (
            not IService.providedBy(service) and callable(service)
        ):
            service = service()
        if not IService.providedBy(service):
            raise ConfigError(f"{where}: {spec!r} is not a twisted IService")
        runtime.add_service(service)


def _mount(config: Config, name: str, server: Server, kind: str, app: Any) -> None:
    """
    Mount a server's app at C{/}, as its kind wants.
    """
    if kind == "asgi":
        where = f"{config.path}: servers.{name}.app"
        try:
            server.mount_asgi("/", app)
        except ConfigError:
            raise ConfigError(
                f"{where}: ASGI apps need Twisted's asyncio reactor, but "
                "twisted.internet.reactor was imported before this app (by an "
                "app listed above, or twistd -r): list the ASGI servers first"
            ) from None
    elif kind == "wsgi":
        server.mount_wsgi("/", app)
    else:
        server.mount("/", app)


def check_apps_apart(config: Config, cwd: str) -> None:
    """
    Import every app and service in a forked child, for a master that
    imports none itself (its workers do): an app that will not import is
    still one line and exit status 1 before anything listens, and the
    master's memory holds none of the app's modules (a FastAPI app's were
    16 MiB of its PSS).

    @raise ConfigError: what the child found wrong.
    """
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover (the child never returns)
        status = 0
        try:
            os.close(read_end)
            load_apps(config, cwd)
            for index, spec in enumerate(config.services):
                load_object(spec, f"{config.path}: graceful.services[{index}]")
        except ConfigError as e:
            os.write(write_end, str(e).encode(errors="replace"))
            status = 1
        except BaseException as e:
            os.write(write_end, f"{config.path}: {type(e).__name__}: {e}".encode(errors="replace"))
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        found = pipe.read().decode(errors="replace")
    _, status = os.waitpid(child, 0)
    if found or os.waitstatus_to_exitcode(status) != 0:
        raise ConfigError(found or f"{config.path}: checking the apps failed (status {status})")

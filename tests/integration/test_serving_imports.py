"""
What a serving process imports, seen from a real one: a new generation
imports what its configured servers need and no more (each module is time
taken from a restart), and a workers master imports no app and no
twisted.web.  Each case starts a process that binds a port on 127.0.0.1
and prints its modules.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

from twisted.trial.unittest import SynchronousTestCase


#: What a process serving a plain HTTP app from a config imports, up to
#: serving (its sockets adopted; the reactor is never run): the twistd
#: plugin's path, as twistd takes it, or C{graceful run}'s.
_SERVE_AND_LIST = """
import json, os, sys
from graceful._config import twisted_tls_needed_by
from graceful.process.transports import import_transport
entry = sys.argv[1]
if entry == "master":
    from graceful import _cli, _process, _run
    from graceful._config import apply_config
    options = _cli.parser().parse_args(["run", "--config", "graceful.toml", "--workers", "2"])
    config = _run.build_config(options)
    _process.apps_come_later = True
    runtime = _process.runtime()
    assert not _process.serves_apps(config.settings), "not a master"
    import_transport(twisted_tls_needed_by(config, None))
    apply_config(config, runtime, serves=False)
    for server in runtime.servers.values():
        runtime.prepare_server(server)
    assert runtime.servers["web"].has_prepared(), "no socket held"
    print(json.dumps(sorted(sys.modules)))
    sys.exit(0)
elif entry == "plugin":
    from graceful import _plugin
    options = _plugin.Options()
    options.parseOptions(["--config", "graceful.toml"])
    runtime = _plugin.makeService(options).runtime
else:
    from graceful import _cli, _process, _run
    from graceful._config import apply_config, load_apps
    options = _cli.parser().parse_args(["run", "--config", "graceful.toml"])
    config = _run.build_config(options)
    _process.apps_come_later = True
    runtime = _process.runtime()
    apps = load_apps(config, runtime.cwd)
    import_transport(twisted_tls_needed_by(config, apps))
    apply_config(config, runtime, apps)
    for server in runtime.servers.values():
        runtime.prepare_server(server)
runtime.serve_prepared()
assert runtime.servers["web"].ports, "not serving"
print(json.dumps(sorted(sys.modules)))
"""

_APPS = '''
async def asgi(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})

def wsgi(environ, start_response):
    start_response("200 OK", [])
    return [b"hello"]
'''

#: Modules a server of a plain HTTP app does not need: the admin pages
#: (unless configured), the workers' master, TLS (unless configured), the
#: package metadata behind C{graceful.__version__}, the metrics' library.
NOT_FOR_PLAIN_HTTP = [
    "graceful.admin.operations",
    "graceful.admin.resource",
    "graceful.admin.page",
    "graceful.admin.metrics",
    "graceful.admin.token",
    "graceful.workers.master",
    "graceful.workers.group",
    "graceful.workers.starter",
    "graceful.http.tls",
    "importlib.metadata",
    "prometheus_client",
]


#: Twisted's TLS, and what it imports: 40 ms of a start and 12 MiB.
TLS = ["OpenSSL", "cryptography", "twisted.protocols.tls", "twisted.internet.ssl"]

#: Leaves Twisted's TLS out, then serves TLS with listenSSL and reaches it
#: with connectSSL, as Twisted code of an app may.
_TLS_ON_FIRST_USE = """
import sys
from graceful.process.transports import import_transport
assert import_transport(False), "TLS not left out"
from twisted.internet import reactor
assert "OpenSSL" not in sys.modules, "OpenSSL imported with the reactor"
from twisted.internet import protocol, ssl
from twisted.internet.interfaces import IReactorSSL
assert IReactorSSL.providedBy(reactor)
certificate = ssl.KeyPair.generate().selfSignedCert(1, CN="localhost")
answers = []
class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)
class Client(protocol.Protocol):
    def connectionMade(self):
        self.transport.write(b"over TLS")
    def dataReceived(self, data):
        answers.append(data)
        reactor.stop()
port = reactor.listenSSL(
    0, protocol.Factory.forProtocol(Echo), certificate.options(), interface="127.0.0.1"
)
reactor.connectSSL(
    "127.0.0.1", port.getHost().port, protocol.ClientFactory.forProtocol(Client),
    ssl.CertificateOptions(),
)
reactor.callLater(20, reactor.stop)
reactor.run()
print(b"".join(answers).decode())
"""


class ServingImportsTests(SynchronousTestCase):
    """
    A new generation imports what its configured servers need and no more:
    each module is time taken from a restart (a hello world's hand-over
    was 0.36 s, two thirds of it imports).
    """

    def served_modules(self, entry: str, app: str) -> set[str]:
        import json
        import os
        import tempfile

        folder = Path(tempfile.mkdtemp())
        self.addCleanup(__import__("shutil").rmtree, folder)
        (folder / "lean_apps.py").write_text(_APPS)
        (folder / "graceful.toml").write_text(
            f'[servers.web]\napp = "lean_apps:{app}"\nhost = "127.0.0.1"\nports = [0]\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GRACEFUL_", "LISTEN_"))}
        env["PWD"] = str(folder)
        out = subprocess.run(
            [sys.executable, "-c", _SERVE_AND_LIST, entry], cwd=folder, env=env,
            capture_output=True, text=True, timeout=120,
        )
        self.assertEqual(out.returncode, 0, out.stderr)
        return set(json.loads(out.stdout.splitlines()[-1]))

    def assertLean(self, modules: set[str], also: Sequence[str] = ()) -> None:
        self.assertIn("graceful.http.server", modules)  # it did serve
        self.assertEqual(sorted(modules & {*NOT_FOR_PLAIN_HTTP, *also}), [])

    def test_asgi_plugin(self) -> None:
        self.assertLean(self.served_modules("plugin", "asgi"), TLS)

    def test_wsgi_plugin(self) -> None:
        """
        Under twistd too, whose reactor comes after the plugin's options:
        a WSGI app's process leaves TLS out of Twisted's transport.
        """
        self.assertLean(self.served_modules("plugin", "wsgi"), TLS)

    def test_asgi_run(self) -> None:
        """
        C{graceful run} needs no twisted.application (twistd imports it
        anyway) until a service is added or the services start, once the
        hand-over is done.
        """
        self.assertLean(
            self.served_modules("run", "asgi"),
            ["twisted.application.service", "twisted.plugin", *TLS],
        )

    def test_master(self) -> None:
        """
        A workers master holds the sockets and serves nothing: no app, no
        twisted.web, no ASGI (its workers import them).
        """
        modules = self.served_modules("master", "asgi")
        self.assertIn("graceful.http.server", modules)
        self.assertEqual(
            sorted(m for m in modules if m.startswith(("lean_apps", "twisted.web", "graceful.asgi"))),
            [],
        )
        self.assertEqual(sorted(modules & set(TLS)), [])

    def test_wsgi_has_no_asyncio_reactor(self) -> None:
        """
        A WSGI app needs no asyncio loop: the default reactor, without
        uvloop or Twisted's asyncio reactor.
        """
        self.assertLean(
            self.served_modules("run", "wsgi"),
            ["twisted.internet.asyncioreactor", "uvloop", "graceful.asgi.native", *TLS],
        )

    def test_tls_on_first_use(self) -> None:
        """
        With TLS left out of Twisted's transport, the reactor still serves
        and connects over TLS (it imports TLS then).
        """
        out = subprocess.run(
            [sys.executable, "-c", _TLS_ON_FIRST_USE], capture_output=True, text=True, timeout=60
        )
        self.assertEqual((out.returncode, out.stdout.strip()), (0, "over TLS"), out.stderr)

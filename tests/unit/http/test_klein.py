"""
A Klein app served by graceful: mounted in code, and named as a config's app.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site

from graceful._config import classify_app
from graceful.http.routing import Router
from .test_routing import HTTPConnection

try:
    from klein import Klein
except ImportError:  # pragma: no cover
    Klein = None


def klein_app() -> "Klein":
    app = Klein()

    @app.route("/hello/<name>")
    def hello(request: object, name: str) -> str:
        return f"hello {name}"

    return app


def get(resource: Router, path: str) -> tuple[int, bytes]:
    connection = HTTPConnection(Site(resource, reactor=Clock()))
    connection.request(path)
    response = connection.only_response()
    return response.status, response.body


class KleinTests(SynchronousTestCase):
    def setUp(self) -> None:
        if Klein is None:
            self.skipTest("klein is not installed")

    def test_mounted_klein_resource(self) -> None:
        router = Router()
        router.mount("/api", klein_app().resource())
        self.assertEqual(get(router, "/api/hello/world"), (200, b"hello world"))

    def test_klein_app_as_config_app(self) -> None:
        kind, resource = classify_app(klein_app(), "servers.web.app", "mod:app")
        self.assertEqual(kind, "resource")
        router = Router()
        router.mount("/", resource)
        self.assertEqual(get(router, "/hello/klein"), (200, b"hello klein"))

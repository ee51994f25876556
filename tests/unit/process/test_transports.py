"""
Twisted's transport without TLS, where nothing in the process can use it.
What leaving it out does to a real process is in
tests/integration/test_serving_imports.py.
"""

from __future__ import annotations

import sys

from twisted.trial.unittest import SynchronousTestCase

from graceful.process.transports import OnFirstUse, import_transport, twisted_tls_needed


class TLSNeededTests(SynchronousTestCase):
    def test_asgi_and_wsgi_only(self) -> None:
        self.assertFalse(twisted_tls_needed(False, False, ["asgi", "wsgi"]))

    def test_no_apps(self) -> None:
        """
        A master serves nothing itself.
        """
        self.assertFalse(twisted_tls_needed(False, False, []))

    def test_tls_ports(self) -> None:
        self.assertTrue(twisted_tls_needed(True, False, ["asgi"]))

    def test_services(self) -> None:
        """
        A service is Twisted code, which may call startTLS().
        """
        self.assertTrue(twisted_tls_needed(False, True, ["asgi"]))

    def test_resource(self) -> None:
        self.assertTrue(twisted_tls_needed(False, False, ["asgi", "resource"]))

    def test_app_not_imported_yet(self) -> None:
        """
        An app not imported yet may be a resource.
        """
        self.assertTrue(twisted_tls_needed(False, False, ["asgi", None]))


class ImportTransportTests(SynchronousTestCase):
    def test_imported_already(self) -> None:
        """
        Once the transport is imported (here, by the tests' reactor),
        nothing changes and TLS was not left out.
        """
        import twisted.internet.tcp

        before = twisted.internet.tcp.Server
        self.assertFalse(import_transport(False))
        self.assertIs(sys.modules["twisted.internet.tcp"].Server, before)

    def test_tls_wanted(self) -> None:
        self.assertFalse(import_transport(True))


class OnFirstUseTests(SynchronousTestCase):
    def test_imports_on_first_attribute(self) -> None:
        """
        The module is imported when an attribute is first asked for, and
        the attribute is the module's own.
        """
        name = "graceful_on_first_use_probe"
        self.addCleanup(sys.modules.pop, name, None)
        imported = []

        class Finder:
            def find_spec(self, fullname: str, path: object, target: object = None) -> object:
                if fullname != name:
                    return None
                import importlib.util

                class Inline:
                    def create_module(self, spec: object) -> None:
                        return None

                    def exec_module(self, module: object) -> None:
                        imported.append(fullname)
                        module.answer = 42  # type: ignore[attr-defined]

                return importlib.util.spec_from_loader(fullname, Inline())  # type: ignore[arg-type]

        finder = Finder()
        sys.meta_path.insert(0, finder)  # type: ignore[arg-type]
        self.addCleanup(sys.meta_path.remove, finder)
        lazy = OnFirstUse(name)
        self.assertEqual(imported, [])
        self.assertEqual(lazy.answer, 42)
        self.assertEqual(imported, [name])
        self.assertIs(sys.modules[name].answer, 42)

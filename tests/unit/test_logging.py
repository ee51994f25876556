"""
Unit tests for L{graceful._logging}: every log line keeps the namespace it
has always shown (its C{[namespace#level]}), though the classes moved into
subpackages, or into the collaborators split out of a class (whose
lines keep the namespace of the class they left).
"""

from __future__ import annotations

import io

from twisted.logger import LogPublisher, textFileLogObserver
from twisted.trial.unittest import SynchronousTestCase

from graceful._logging import NamedLogger
from graceful.admin.actions import AdminActions
from graceful.admin.refusals import Refusals
from graceful.admin.resource import AdminResource
from graceful.handoff.pipes import NewProcess, OldProcess
from graceful.http.routing import HandlerResource
from graceful.http.listening import ServerSockets
from graceful.http.server import Server
from graceful.http.site import DrainingSite
from graceful.http.websocket import UpgradeDrain
from graceful.lifecycle.admin_socket import AdminSocket
from graceful.lifecycle.core import ProcessCore
from graceful.lifecycle.pidfile import PidfileKeeper
from graceful.process.runtime import Runtime

#: Each class's logger, and the namespace its lines showed before the move
#: (written in parts, so that no rename of module paths can touch them).
NAMESPACES = [
    (Refusals, "_log", ("_refusals", "Refusals")),
    (AdminResource, "_log", ("_admin", "AdminResource")),
    (AdminActions, "_log", ("_admin", "AdminResource")),
    (NewProcess, "_log", ("_handoff", "NewProcess")),
    (OldProcess, "_log", ("_handoff", "OldProcess")),
    (HandlerResource, "_log", ("_routing", "HandlerResource")),
    (Server, "_log", ("_server", "Server")),
    (ServerSockets, "_log", ("_server", "Server")),
    (DrainingSite, "_log", ("_drain", "DrainingSite")),
    (UpgradeDrain, "_log", ("_websocket", "UpgradeDrain")),
    (AdminSocket, "_log", ("_admin_socket", "AdminSocket")),
    (ProcessCore, "log", ("_core", "ProcessCore")),
    (PidfileKeeper, "log", ("_core", "ProcessCore")),
    (Runtime, "_log", ("_runtime", "Runtime")),
]


class NamespaceTests(SynchronousTestCase):
    def test_every_class_keeps_its_namespace(self) -> None:
        for cls, attribute, (module, name) in NAMESPACES:
            logger = getattr(cls, attribute)
            self.assertEqual(logger.namespace, ".".join(["graceful", module, name]))
            self.assertIs(logger.source, cls)

    def test_the_line_shows_it(self) -> None:
        """
        Read from an instance too, the logger writes the line as before.
        """
        out = io.StringIO()

        class Owner:
            log = NamedLogger("graceful.somewhere.Owner", observer=LogPublisher(textFileLogObserver(out)))

        owner = Owner()
        owner.log.info("{pid}: hello", pid=7)
        self.assertIs(owner.log.source, owner)
        self.assertIn("[graceful.somewhere.Owner#info] 7: hello\n", out.getvalue())

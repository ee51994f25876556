"""
graceful's asyncio reactor (L{graceful.asgi.reactor}): a ready connection
is called with the same legacy log context and failure handling as
Twisted's asyncio reactor gives it, without C{log.callWithLogger}; on an
asyncio loop driven by hand and a pipe.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from twisted.internet import asyncioreactor
from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.python import context, log
from twisted.trial.unittest import SynchronousTestCase

from graceful.asgi.reactor import GracefulAsyncioReactor


class Reader:
    """
    A reader of a pipe that records the log context it is read in.
    """

    def __init__(self, fd: int, prefix: str = "Reader,7,10.0.0.7", fail: BaseException | None = None) -> None:
        self.fd = fd
        self.prefix = prefix
        self.fail = fail
        self.systems: list[str] = []
        self.lost: list[Any] = []

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return self.prefix

    def doRead(self) -> Any:
        os.read(self.fd, 100)
        self.systems.append(context.get(log.ILogContext)["system"])
        if self.fail is not None:
            raise self.fail
        return None

    def connectionLost(self, reason: Any) -> None:
        self.lost.append(reason)


class ReactorTests(SynchronousTestCase):
    def read_once(self, kind: type[AsyncioSelectorReactor], reader_args: dict[str, Any]) -> Reader:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        reactor = kind(loop)
        self.addCleanup(reactor.disconnectAll)
        read, write = os.pipe()
        self.addCleanup(os.close, write)
        self.addCleanup(os.close, read)
        reader = Reader(read, **reader_args)
        reactor.addReader(reader)
        os.write(write, b"x")
        loop.run_until_complete(asyncio.sleep(0.0))
        loop.run_until_complete(asyncio.sleep(0.0))
        reactor.removeReader(reader)
        return reader

    def test_context_as_twisted(self) -> None:
        """
        While a connection is called, the legacy log's system is its log
        prefix, as under Twisted's reactor; outside, it is as before.
        """
        for kind in (GracefulAsyncioReactor, AsyncioSelectorReactor):
            reader = self.read_once(kind, {})
            self.assertEqual(reader.systems, ["Reader,7,10.0.0.7"], kind)
        self.assertEqual(context.get(log.ILogContext)["system"], "-")

    def test_without_call_with_logger(self) -> None:
        """
        The connection is called without log.callWithLogger and its five
        frames.
        """
        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("callWithLogger used")

        self.patch(log, "callWithLogger", refuse)
        self.patch(asyncioreactor, "callWithLogger", refuse)
        reader = self.read_once(GracefulAsyncioReactor, {})
        self.assertEqual(reader.systems, ["Reader,7,10.0.0.7"])

    def test_failure_disconnects(self) -> None:
        """
        A connection whose doRead raises is logged and disconnected, as
        under Twisted's reactor.
        """
        for kind in (GracefulAsyncioReactor, AsyncioSelectorReactor):
            reader = self.read_once(kind, {"fail": ValueError("broken")})
            self.assertEqual(len(reader.lost), 1, kind)
            self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

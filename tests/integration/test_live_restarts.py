"""
Integration tests of long-lived connections across restarts, with real
processes (harness/programs/live.py, the examples/websocket.py app) and real
clients: the C{websockets} library for WebSockets, C{http.client} for SSE.

A restart closes each WebSocket with 1012, spread over drain_spread; the
clients reconnect to the new process and no echo is lost or wrong; a
shutdown closes with 1001; a client that never answers the close is cut at
drain_timeout; an SSE stream ends with a C{retry:} event.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import os
import signal
import socket
import threading
import time
from typing import Any

from twisted.trial.unittest import TestCase
from websockets.asyncio.client import connect as async_connect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.support import PROGRAMS, WAIT, ServerProcess, free_port, pid_of, process_alive, wait_until

PROGRAM = PROGRAMS / "live.py"


class _Live(TestCase):
    def start(self, *args: str) -> int:
        self.port = free_port()
        server = ServerProcess.python(PROGRAM, str(self.port), *args).start()
        self.server = server
        self.addCleanup(server.stop)
        pid = wait_until(lambda: self._pid(), what="the server to answer")
        return server.remember(pid)

    def _pid(self) -> int | None:
        try:
            return pid_of(self.port)
        except OSError:
            return None

    def restart(self, old: int) -> tuple[int, float]:
        """
        SIGUSR1 to C{old}: the new pid, and when it first answered.
        """
        self.server.signal(old)
        new = wait_until(
            lambda: (p := self._pid()) is not None and p != old and p, what="a new pid"
        )
        return self.server.remember(new), time.monotonic()


class EchoClient(threading.Thread):
    """
    Echoes numbered messages; reconnects when closed, until told to stop.

    @ivar pids: the pid each connection was served by, in order.
    @ivar codes: the close code of each connection that ended.
    @ivar wrong: echoes that did not match what was sent.
    """

    def __init__(self, port: int, name: str) -> None:
        super().__init__(daemon=True)
        self.port, self.name = port, name
        self.pids: list[int] = []
        self.codes: list[int | None] = []
        self.wrong: list[tuple[str, str]] = []
        self.echoes = 0
        self.stopping = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + 120
        n = 0
        while not self.stopping.is_set() and time.monotonic() < deadline:
            try:
                with connect(f"ws://127.0.0.1:{self.port}/ws", open_timeout=5) as ws:
                    greeting = str(ws.recv(timeout=5))
                    self.pids.append(int(greeting.split()[1]))
                    try:
                        while time.monotonic() < deadline:
                            n += 1
                            sent = f"{self.name}-{n}"
                            ws.send(sent)
                            answer = str(ws.recv(timeout=10))
                            if answer.startswith("reconnect"):
                                answer = str(ws.recv(timeout=10))
                            if answer != sent:
                                self.wrong.append((sent, answer))
                            self.echoes += 1
                            time.sleep(0.02)
                    except ConnectionClosed as e:
                        self.codes.append(e.rcvd.code if e.rcvd else None)
            except (OSError, TimeoutError) as e:
                if not self.stopping.is_set():
                    self.errors.append(repr(e))
                time.sleep(0.1)


#: Restarts the echo clients live through.
RESTARTS = 5


class WebSocketRestartTests(_Live):
    def test_echo_clients_across_restarts(self) -> None:
        """
        Eight echo clients across five restarts and a shutdown: each close
        is 1012 (1001 at the end), each client comes back to the new pid,
        no echo is wrong, and the old process leaves within drain_spread
        (plus a margin), long before drain_timeout.
        """
        spread = 1.0
        pid = self.start("20", str(spread))
        clients = [EchoClient(self.port, f"c{i}") for i in range(8)]
        for c in clients:
            c.start()
        wait_until(lambda: all(c.echoes for c in clients), what="every client to echo")
        pids = [pid]
        exits = []
        for _ in range(RESTARTS):
            new, answered = self.restart(pids[-1])
            self.server.wait_gone(pids[-1])
            exits.append(time.monotonic() - answered)
            pids.append(new)
            wait_until(
                lambda: all(c.pids and c.pids[-1] == new for c in clients),
                what="every client to reconnect to the new pid",
            )
            echoes = [c.echoes for c in clients]
            wait_until(
                lambda: all(c.echoes > e for c, e in zip(clients, echoes)),
                what="every client to echo on the new pid",
            )
        for c in clients:
            c.stopping.set()
        os.kill(pids[-1], signal.SIGTERM)
        self.server.wait_gone(pids[-1])
        for c in clients:
            c.join(WAIT)
        for c in clients:
            self.assertEqual(c.wrong, [])
            self.assertEqual(c.pids, pids)
            self.assertEqual(c.codes, [1012] * RESTARTS + [1001])
        # drain_timeout is 20 s: every old process left once its clients did.
        self.assertLess(max(exits), spread + 3.0, exits)

    def test_closes_spread_over_the_window(self) -> None:
        """
        Fifty WebSockets across one restart with drain_spread = 3: the
        closes span most of the window, not one instant.
        """
        spread = 3.0
        pid = self.start("20", str(spread))
        closed: list[tuple[float, int | None]] = []

        async def client() -> None:
            async with async_connect(f"ws://127.0.0.1:{self.port}/ws", open_timeout=10) as ws:
                await ws.recv()
                ready.append(1)
                try:
                    async for _ in ws:
                        pass
                except ConnectionClosed:
                    pass
                closed.append((time.monotonic(), ws.close_code))

        ready: list[int] = []

        async def main() -> None:
            tasks = [asyncio.ensure_future(client()) for _ in range(50)]
            for _ in range(200):
                if len(ready) == 50:
                    break
                await asyncio.sleep(0.05)
            self.server.signal(pid)
            await asyncio.wait_for(asyncio.gather(*tasks), WAIT)

        asyncio.run(main())
        self.server.wait_gone(pid)
        times = sorted(t for t, _ in closed)
        self.assertEqual({code for _, code in closed}, {1012})
        self.assertEqual(len(times), 50)
        span = times[-1] - times[0]
        print(f"50 closes spread over {span:.2f}s of a {spread:g}s window")
        self.assertGreater(span, 0.6 * spread)
        self.assertLess(span, spread + 1.0)
        # Evenly: no second of the window holds much more than its share.
        per_second = [sum(1 for t in times if s <= t - times[0] < s + 1) for s in range(3)]
        self.assertLess(max(per_second), 30, per_second)

    def test_client_that_never_answers_is_cut_at_drain_timeout(self) -> None:
        """
        A raw client that never answers the close frame (and autobahn set to
        wait longer than drain_timeout): cut at drain_timeout, and the log
        says it was a websocket.
        """
        timeout = 2.0
        pid = self.start(str(timeout), "0.5", "60")
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(sock.close)
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        self.assertIn(b" 101 ", head)
        new, answered = self.restart(pid)
        self.server.wait_gone(pid)
        took = time.monotonic() - answered
        self.assertGreater(took, timeout - 0.5)
        self.assertLess(took, timeout + 2.0)
        self.assertIn("aborted 1 connection(s): 1 websocket", self.server.log())
        # It got the close frame (opcode 8, code 1012) before being cut.
        data = head.partition(b"\r\n\r\n")[2]
        try:
            while chunk := sock.recv(4096):
                data += chunk
        except OSError:
            pass
        self.assertIn(b"\x88", data)
        self.assertIn((1012).to_bytes(2, "big"), data)


class EventStreamRestartTests(_Live):
    def read_events(self, response: Any) -> list[dict[str, str]]:
        events: list[dict[str, str]] = []
        event: dict[str, str] = {}
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            line = response.readline()
            if not line:
                break
            text = line.decode().rstrip("\n")
            if not text:
                if event:
                    events.append(event)
                    event = {}
                continue
            if text.startswith(":"):
                continue
            name, _, value = text.partition(": ")
            event[name] = value
        return events

    def test_sse_client_across_a_restart(self) -> None:
        pid = self.start("20", "1")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(conn.close)
        conn.request("GET", "/clock")
        response = conn.getresponse()
        self.assertEqual(response.getheader("content-type"), "text/event-stream; charset=utf-8")
        first = response.readline() + response.readline()  # ": stream" comment
        self.assertEqual(first, b": stream\n\n")
        pid_event = response.readline() + response.readline()
        self.assertEqual(pid_event, f"event: pid\ndata: {pid}\n".encode())
        new, _ = self.restart(pid)
        events = self.read_events(response)
        self.assertEqual(events[-1], {"event": "drain", "data": "restart", "retry": "1000"})
        self.server.wait_gone(pid)
        # The reconnection (as an EventSource would, after retry) reaches
        # the new process.
        again = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        self.addCleanup(again.close)
        again.request("GET", "/clock")
        r = again.getresponse()
        r.readline(), r.readline()
        self.assertEqual(r.readline() + r.readline(), f"event: pid\ndata: {new}\n".encode())
        self.assertTrue(process_alive(new))

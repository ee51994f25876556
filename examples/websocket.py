"""
Long-lived connections across restarts: a chat-like WebSocket echo (with
autobahn) and a Server-Sent Events clock (with graceful.EventStream).

    pip install 'graceful[websocket]'
    python examples/websocket.py [PORT [DRAIN_TIMEOUT [DRAIN_SPREAD]]]

Then:

    python -m websockets ws://127.0.0.1:8199/ws      # "pid 1234", then echoes;
                                                    # "all: hi" goes to everyone
    curl -N http://127.0.0.1:8199/clock              # an event every second
    kill -USR1 $(curl -s http://127.0.0.1:8199/pid)  # restart

On the restart every WebSocket hears "reconnect" and gets a close frame 1012
(service restart), the closes spread over drain_spread seconds; the clock
sends a last "drain" event with "retry: 1000" and ends.  Clients that
reconnect reach the new process.  Served from examples/graceful.toml too
(server "live").
"""

from __future__ import annotations

import os
import sys
import time

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import task

import graceful as g


class Chat(WebSocketServerProtocol):
    """
    Says which process serves it, echoes each message, and sends messages
    starting with C{all:} to every client.
    """

    def onOpen(self) -> None:
        self.factory.clients.add(self)
        self.sendMessage(f"pid {os.getpid()}".encode())

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.state != self.STATE_OPEN:
            # A message that crossed our close frame: the client is leaving.
            return
        if payload.startswith(b"all:"):
            for client in list(self.factory.clients):
                if client.state == client.STATE_OPEN:
                    client.sendMessage(payload, isBinary)
        else:
            self.sendMessage(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.clients.discard(self)

    def on_drain(self, notice: g.DrainNotice) -> None:
        # Called at this connection's turn in the drain; graceful sends the
        # close frame (1012 or 1001) right after.  Return seconds to get a
        # longer grace, or a Deferred to close when it fires.
        self.sendMessage(f"reconnect {notice.reason}".encode())


def clock(request: object) -> object:
    "An SSE event every second; on a drain, a last event with retry: and the end."
    stream = g.EventStream(request, retry=1000)  # type: ignore[arg-type]
    stream.send(str(os.getpid()), event="pid")
    ticks = task.LoopingCall(lambda: stream.send(time.strftime("%H:%M:%S")))
    ticks.start(1.0, now=False)
    stream.done.addBoth(lambda _: ticks.stop() if ticks.running else None)
    return stream.done


def app(close_handshake_timeout: float = 1.0) -> g.Router:
    """
    /ws (WebSocket), /clock (SSE), /pid.

    @param close_handshake_timeout: seconds autobahn waits for a client to
        answer the close frame before it drops the connection.
    """
    factory = WebSocketServerFactory()
    factory.protocol = Chat
    factory.setProtocolOptions(closeHandshakeTimeout=close_handshake_timeout)
    factory.clients = set()
    pages = g.Router()
    pages.mount("/ws", WebSocketResource(factory))
    pages.route("/clock", clock)
    pages.route("/pid", lambda request: f"{os.getpid()}\n")
    return pages


if __name__ == "__main__":
    s = g.server("live")
    s.mount("/", app())
    s.set_host("127.0.0.1")
    s.set_port(int(sys.argv[1]) if len(sys.argv) > 1 else 8199)
    if len(sys.argv) > 2:
        g.set_drain_timeout(float(sys.argv[2]))
    if len(sys.argv) > 3:
        g.set_drain_spread(float(sys.argv[3]))
    s.run()

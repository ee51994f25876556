"""
Handing a native channel's connection to a twisted.web channel of the same
site, for what the native channel does not serve itself (a WebSocket
upgrade, a path that is not the app's: the admin and health pages).

httptools has parsed the request by then, so it is written out again for
the twisted.web channel: its head as it came (headers in wire order), its
body in its own framing.  Until the next message boundary the native
channel goes on parsing and passing on; after it (and after an upgrade) the
bytes go through as they come.  What is pipelined behind requests the
native channel still answers waits for their responses.
"""

from __future__ import annotations

from typing import Any


class Relay:
    """
    The twisted.web channel serving the rest of a connection.

    @ivar parsing: the native channel's parser still reads the bytes (a
        message is under way); else they go through as they come.
    """

    def __init__(self, channel: Any, transport: Any) -> None:
        self.channel = channel
        self.parsing = True
        self.chunked = False
        self._held: list[bytes] = []
        self._hold = False
        channel.makeConnection(transport)

    def hold(self, holding: bool) -> None:
        """
        Keep what is passed on until requests before it are answered.
        """
        self._hold = holding
        if not holding and self._held:
            held, self._held = self._held, []
            self.channel.dataReceived(b"".join(held))

    def head(self, method: bytes, target: bytes, version: bytes,
             headers: list[tuple[bytes, bytes]], chunked: bool) -> None:
        self.chunked = chunked
        lines = [method + b" " + target + b" " + version + b"\r\n"]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        lines.append(b"\r\n")
        self.forward(b"".join(lines))

    def body(self, data: bytes) -> None:
        self.forward(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)

    def message_complete(self) -> None:
        if self.chunked:
            self.forward(b"0\r\n\r\n")

    def forward(self, data: bytes) -> None:
        if self._hold:
            self._held.append(data)
        else:
            self.channel.dataReceived(data)

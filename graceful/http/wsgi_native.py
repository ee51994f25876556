# -*- test-case-name: tests.unit.http.test_wsgi_native -*-
"""
WSGI apps on graceful's native HTTP/1.1 channel (L{graceful.http.native}).

The app runs in a bounded pool of threads of its own (L{WSGI_THREADS}),
not the reactor's: a slow app cannot starve the reactor's other users of
threads (DNS, anyio's), and the pool's size bounds the requests an app has
in hand at once.  The environ is built from the parsed request; the body
is read from C{wsgi.input}, which blocks the app's thread until bytes come
(the connection is not read while more than L{BODY_BUFFER} bytes wait).
The response goes to the reactor once per response when the app returns a
list (the common case: one call of the reactor's thread for a whole
response) and once per piece of a streamed body, the thread waiting while
the connection's write buffer is over its high-water mark.  twisted.web's
WSGIResource goes to the reactor once per C{write}, and again to finish.

C{wsgi.file_wrapper} hands the reactor the file in blocks of
L{FILE_BLOCK} bytes, one reactor call each, with the same back pressure.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import unquote_to_bytes

from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from .exchange import Exchange

#: Threads that run a server's WSGI app at most.
WSGI_THREADS = 16
#: Request body bytes that may wait for the app before reading pauses.
BODY_BUFFER = 65536
#: Bytes of a C{wsgi.file_wrapper} file per reactor call.
FILE_BLOCK = 65536

_log = Logger(namespace="graceful.wsgi")


class FileWrapper:
    """
    C{wsgi.file_wrapper}: a file sent in blocks.
    """

    def __init__(self, filelike: Any, block: int = FILE_BLOCK) -> None:
        self.filelike = filelike
        self.block = block

    def __iter__(self) -> Any:
        read = self.filelike.read
        while True:
            data = read(self.block)
            if not data:
                return
            yield data

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()


class NativeWSGI:
    """
    Serves the native channel's requests under C{root_path} with a WSGI app.
    """

    def __init__(self, reactor: Any, app: Callable[..., Any], root_path: str = "",
                 threads: int = WSGI_THREADS, pool: Any = None) -> None:
        self.reactor = reactor
        self.app = app
        self.root_path = root_path.rstrip("/")
        self.pool = pool or ThreadPool(minthreads=0, maxthreads=threads, name="graceful-wsgi")
        self._started = pool is not None

    def __call__(self, exchange: Exchange) -> None:
        if not self._started:
            self._started = True
            self.pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)
        call = WSGICall(self, exchange)
        exchange.attach(call)
        self.pool.callInThread(call.run)


def environ_of(exchange: Exchange, root_path: str) -> dict[str, Any]:
    """
    The WSGI environ of C{exchange}'s request, as PEP 3333 and gunicorn
    build it.
    """
    raw_path, _, query = exchange.uri.partition(b"?")
    path = unquote_to_bytes(raw_path).decode("latin-1")
    script = root_path
    if script and (path == script or path.startswith(script + "/")):
        path = path[len(script):]
    environ: dict[str, Any] = {
        "REQUEST_METHOD": exchange.method.decode("latin-1"),
        "SCRIPT_NAME": script,
        "PATH_INFO": path,
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_PROTOCOL": exchange.clientproto.decode("latin-1"),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
    }
    host_header = b""
    for name, value in exchange.headers:
        if name == b"content-type":
            environ["CONTENT_TYPE"] = value.decode("latin-1")
            continue
        if name == b"content-length":
            environ["CONTENT_LENGTH"] = value.decode("latin-1")
            continue
        if name == b"host":
            host_header = value
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = environ[key] + "," + text if key in environ else text
    channel: Any = exchange.channel
    peer = channel.peer
    local: Any = channel.transport.getHost() if channel.transport is not None else None
    if getattr(local, "port", None) is not None:
        environ["SERVER_NAME"] = str(local.host)
        environ["SERVER_PORT"] = str(local.port)
        environ["REMOTE_ADDR"] = str(getattr(peer, "host", ""))
        environ["REMOTE_PORT"] = str(getattr(peer, "port", ""))
    else:
        # A UNIX socket, as uvicorn and gunicorn: the Host header's name and port.
        server, _, port = host_header.decode("latin-1").rpartition(":")
        if not server or not port.isdigit():
            server, port = host_header.decode("latin-1") or "localhost", "80"
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server, port
        environ["REMOTE_ADDR"] = environ["REMOTE_PORT"] = ""
    said = exchange.forwarded
    if said is not None:
        # What a trusted proxy said, as twisted.web's WSGI path shows it
        # (its Host is HTTP_HOST already).
        if said.client is not None:
            environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = said.client, "0"
        if said.scheme is not None:
            environ["wsgi.url_scheme"] = said.scheme
    return environ


class _Input:
    """
    C{wsgi.input}: the request body, read by the app's thread as the
    reactor receives it.
    """

    def __init__(self, call: WSGICall) -> None:
        self._call = call
        self._buffer = b""

    def _more(self) -> bool:
        chunk = self._call.take_body()
        if chunk is None:
            return False
        self._buffer += chunk
        return True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            while self._more():
                pass
            data, self._buffer = self._buffer, b""
            return data
        while len(self._buffer) < size and self._more():
            pass
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def readline(self, size: int | None = -1) -> bytes:
        while b"\n" not in self._buffer and (size is None or size < 0 or len(self._buffer) < size):
            if not self._more():
                break
        end = self._buffer.find(b"\n") + 1 or len(self._buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        data, self._buffer = self._buffer[:end], self._buffer[end:]
        return data

    def readlines(self, hint: int | None = None) -> list[bytes]:
        return list(iter(self.readline, b""))

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


class WSGICall:
    """
    One request through a WSGI app: the exchange's sink on the reactor's
    side, the app's call on a thread of the pool.
    """

    def __init__(self, glue: NativeWSGI, exchange: Exchange) -> None:
        self.glue = glue
        self.exchange = exchange
        self._lock = threading.Condition()
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._body_complete = False
        self._paused = False
        self._gone = False
        self._writable = True
        self._status: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._started = False

    # -- on the reactor's thread: the exchange's sink ---------------------------

    def body(self, data: bytes) -> None:
        with self._lock:
            self._chunks.append(data)
            self._buffered += len(data)
            pause = self._buffered > BODY_BUFFER and not self._paused
            if pause:
                self._paused = True
            self._lock.notify_all()
        if pause:
            self.exchange.pause_reading()

    def body_end(self) -> None:
        with self._lock:
            self._body_complete = True
            self._lock.notify_all()

    def gone(self) -> None:
        with self._lock:
            self._gone = True
            self._writable = True
            self._lock.notify_all()

    def writable(self, ready: bool) -> None:
        with self._lock:
            self._writable = ready
            self._lock.notify_all()

    # -- on the app's thread --------------------------------------------------

    def take_body(self) -> bytes | None:
        """
        The next piece of the body, waiting for it; C{None} at its end.
        """
        with self._lock:
            while not self._chunks and not self._body_complete and not self._gone:
                self._lock.wait()
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            resume = self._paused and self._buffered <= BODY_BUFFER
            if resume:
                self._paused = False
        if resume:
            self.glue.reactor.callFromThread(self.exchange.resume_reading)
        return chunk

    def _wait_writable(self) -> bool:
        with self._lock:
            while not self._writable and not self._gone:
                self._lock.wait()
            return not self._gone

    def start_response(self, status: str, headers: Sequence[tuple[str, str]],
                       exc_info: Any = None) -> Callable[[bytes], None]:
        if exc_info is not None and self._started:
            raise exc_info[1].with_traceback(exc_info[2])
        code = int(status.split(" ", 1)[0])
        self._status = (code, [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers])
        return self._legacy_write

    def _legacy_write(self, data: bytes) -> None:
        self._send([data], more=True)

    def _send(self, pieces: list[bytes], more: bool) -> None:
        """
        Hand C{pieces} (and the head, the first time) to the reactor in one
        call; with C{more}, wait until the connection can take more.
        """
        if self._status is None:
            raise RuntimeError("the WSGI app sent its body before start_response()")
        head = None if self._started else self._status
        self._started = True
        self.glue.reactor.callFromThread(self._write, head, pieces, more)
        if more:
            self._wait_writable()

    def _write(self, head: tuple[int, list[tuple[bytes, bytes]]] | None,
               pieces: list[bytes], more: bool) -> None:
        exchange = self.exchange
        if exchange.finished:
            return
        if head is not None:
            exchange.start(*head)
        for piece in pieces:
            exchange.write(piece)
        if not more:
            exchange.end()

    def run(self) -> None:
        environ = environ_of(self.exchange, self.glue.root_path)
        environ["wsgi.input"] = _Input(self)
        result: Iterable[bytes] | None = None
        try:
            result = self.glue.app(environ, self.start_response)
            if isinstance(result, (list, tuple)):
                self._send([bytes(piece) for piece in result], more=False)
            else:
                for piece in result:
                    if self._gone:
                        break
                    if piece:
                        self._send([bytes(piece)], more=True)
                self._send([], more=False)
        except Exception:
            _log.failure("WSGI app raised on {uri}", uri=self.exchange.uri)
            self.glue.reactor.callFromThread(self._fail, self._started)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:
                    _log.failure("WSGI app's close() raised")

    def _fail(self, started: bool) -> None:
        exchange = self.exchange
        if exchange.finished:
            return
        if started:
            exchange.cut()
            return
        body = b"Internal Server Error\n"
        exchange.start(500, [(b"content-type", b"text/plain; charset=utf-8"),
                             (b"content-length", b"%d" % len(body))])
        exchange.write(body)
        exchange.end()

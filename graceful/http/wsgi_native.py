# -*- test-case-name: tests.unit.http.test_wsgi_native -*-
"""
WSGI apps on graceful's native HTTP/1.1 channel (L{graceful.http.native}).

The app runs in a bounded pool of threads of its own (L{WSGI_THREADS}, or
the C{wsgi_threads} setting), not the reactor's: a slow app cannot starve
the reactor's other users of threads (DNS, anyio's), and the pool's size
bounds the requests an app has in hand at once.  The environ is built from
the parsed request; the body is read from C{wsgi.input}, which blocks the
app's thread until bytes come (the connection is not read while more than
L{BODY_BUFFER} bytes wait).  The response goes to the reactor once per
response when the app returns a list, or an iterable whose first piece
fills its C{Content-Length} (Flask's and Django's: one hand-over for a whole
response; hand-overs made while one is pending share its wake of the
reactor), and once per piece of a streamed body, the thread waiting until
that piece is written and the connection's write buffer is under its
high-water mark.  twisted.web's WSGIResource goes to the reactor once per
C{write}, and again to finish.

C{wsgi.file_wrapper} over a regular file, on a plain TCP or UNIX socket,
is sent by sendfile(2) from the reactor's thread (L{FileSender}): the head
leaves with the file's first L{FILE_HEAD_BLOCK} bytes in one send (a small
file in one system call), the rest goes from the page cache to the socket
without passing through Python, as much as the socket takes, then again
when it is writable.  Elsewhere (TLS, a file-like object without a file
descriptor, no C{os.sendfile}) the file is read in blocks of L{FILE_BLOCK}
bytes, one reactor call each, with the same back pressure as any streamed
body.  Either way no more than the response's C{Content-Length} is sent,
and the app's thread waits until the file is sent (or the client gone)
and closes it, as gunicorn does.
"""

from __future__ import annotations

import os
import queue
import stat
import sys
import threading
from collections import deque
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import unquote_to_bytes

from twisted.internet import abstract
from twisted.logger import Logger

from .._ends import local_end
from .._settings import DEFAULT_WSGI_THREADS
from .exchange import Exchange

#: Threads that run a WSGI app at most, unless the C{wsgi_threads} setting
#: says otherwise.
WSGI_THREADS = DEFAULT_WSGI_THREADS
#: Request body bytes that may wait for the app before reading pauses.
BODY_BUFFER = 65536
#: Bytes of a C{wsgi.file_wrapper} file per reactor call, where it is read.
FILE_BLOCK = 65536
#: Bytes of a file sent with the response's head, read by the app's thread:
#: one send(2) for head and body, where a file this small is cheaper copied
#: than sent by a second system call.
FILE_HEAD_BLOCK = 16384
#: Bytes sendfile(2) sends in one pass of the reactor at most, before the
#: reactor's other connections get their turn (a loopback socket takes
#: ~4 MiB at once from an idle reader).
SENDFILE_TURN = 4 * 1024 * 1024
#: Statuses whose responses have no body (RFC 9110 6.4.1).
_NO_BODY = frozenset({204, 304})

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


class WorkerThreads:
    """
    Up to C{max} threads that run what they are given, in order, started
    as the work needs them: twisted's C{ThreadPool} without its context
    and its team's coordination, which cost ~8 us of CPU a call (a raw
    WSGI hello is ~50 us in all).

    @ivar started: between L{start} and L{stop}.
    """

    def __init__(self, maxthreads: int, name: str = "graceful-wsgi",
                 thread: Callable[..., threading.Thread] = threading.Thread) -> None:
        self.max = maxthreads
        self.name = name
        self._thread = thread
        self.started = False
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...],
                                             dict[str, Any]] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = True

    def callInThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        with self._lock:
            spawn = self._idle == 0 and len(self._threads) < self.max
            if spawn:
                thread = self._thread(target=self._work, daemon=True,
                                      name=f"{self.name}-{len(self._threads)}")
                self._threads.append(thread)
            elif self._idle:
                self._idle -= 1  # an idle thread takes it
            # Else every thread is busy: the work waits for the first free one.
        self._queue.put((f, args, kwargs))
        if spawn:
            thread.start()

    def _work(self) -> None:
        get, lock = self._queue.get, self._lock
        while True:
            item = get()
            if item is None:
                return
            f, args, kwargs = item
            try:
                f(*args, **kwargs)
            except BaseException:
                _log.failure("WSGI thread's work raised")
            del item, f, args, kwargs
            with lock:
                self._idle += 1

    def stop(self) -> None:
        """
        Drop the work not begun, and end each thread once its work is done.
        Called as the reactor stops (after the drain): the threads are
        daemons and are not waited for, as one may wait for the reactor
        (twisted.web's WSGI writes with blockingCallFromThread), which
        would then never stop.
        """
        self.started = False
        with self._lock:
            threads, self._threads = self._threads, []
            self._idle = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        for _ in threads:
            self._queue.put(None)


class AppThreads:
    """
    A WSGI app's own bounded pool of threads, on either channel: started
    by the app's first request (a server that never serves it starts no
    thread) and stopped as the reactor shuts down.  It is what
    C{twisted.web.wsgi.WSGIResource} asks of a thread pool, too.

    @ivar pool: the pool, or what the caller gave instead (a test's).
    """

    def __init__(self, reactor: Any, threads: int = WSGI_THREADS, pool: Any = None) -> None:
        self.reactor = reactor
        self.pool = pool or WorkerThreads(threads)
        self._started = pool is not None

    def callInThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if not self._started:
            self._started = True
            self.pool.start()
            self.reactor.addSystemEventTrigger("during", "shutdown", self.pool.stop)
        self.pool.callInThread(f, *args, **kwargs)


class NativeWSGI:
    """
    Serves the native channel's requests under C{root_path} with a WSGI app.
    """

    def __init__(self, reactor: Any, app: Callable[..., Any], root_path: str = "",
                 threads: int = WSGI_THREADS, pool: Any = None,
                 sendfile: Callable[[int, int, int, int], int] | None = getattr(
                     os, "sendfile", None)) -> None:
        self.reactor = reactor
        self.app = app
        self.root_path = root_path.rstrip("/")
        self.threads = AppThreads(reactor, threads, pool)
        #: C{os.sendfile}, or C{None} where the platform has none.
        self.sendfile = sendfile
        self._handed: deque[tuple[Callable[..., None], tuple[Any, ...]]] = deque()
        self._flush_asked = False

    @property
    def pool(self) -> Any:
        return self.threads.pool

    def to_reactor(self, f: Callable[..., None], *args: Any) -> None:
        """
        Run C{f(*args)} on the reactor's thread, in the order handed; from
        the app's threads.  Each C{callFromThread} wakes the reactor with a
        write to its waker pipe (~10% of a raw hello's CPU under wrk -c32):
        what the threads hand over while a flush is pending joins it.
        """
        self._handed.append((f, args))
        if not self._flush_asked:
            # Two threads may both ask: the second flush finds nothing.
            self._flush_asked = True
            self.reactor.callFromThread(self._flush)

    def _flush(self) -> None:
        # Asked again from here on: what is handed after this line is either
        # taken by the loop below or asks for a flush of its own.
        self._flush_asked = False
        handed = self._handed
        while handed:
            f, args = handed.popleft()
            try:
                f(*args)
            except Exception:
                _log.failure("WSGI response hand-over raised")

    def __call__(self, exchange: Exchange) -> None:
        call = WSGICall(self, exchange)
        exchange.attach(call)
        self.threads.callInThread(call.run)


#: What every environ holds, copied rather than built per request.
_CONSTANT: dict[str, Any] = {
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.multithread": True,
    "wsgi.multiprocess": False,
    "wsgi.run_once": False,
    "wsgi.input_terminated": True,
    "wsgi.file_wrapper": FileWrapper,
}
#: A header's environ key by its lowercased name, kept for the names seen
#: first (up to L{_HEADER_KEYS_KEPT}), rather than decoded, upper-cased and
#: rewritten per request.
_HEADER_KEYS: dict[bytes, str] = {
    b"content-type": "CONTENT_TYPE", b"content-length": "CONTENT_LENGTH",
}
_HEADER_KEYS_KEPT = 512


def _header_key(name: bytes) -> str:
    key = _HEADER_KEYS.get(name)
    if key is None:
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(_HEADER_KEYS) < _HEADER_KEYS_KEPT:
            _HEADER_KEYS[name] = key
    return key


def environ_of(exchange: Exchange, root_path: str) -> dict[str, Any]:
    """
    The WSGI environ of C{exchange}'s request, as PEP 3333 and gunicorn
    build it.
    """
    raw_path, _, query = exchange.uri.partition(b"?")
    path = unquote_to_bytes(raw_path).decode("latin-1") if b"%" in raw_path else raw_path.decode(
        "latin-1")
    script = root_path
    if script and (path == script or path.startswith(script + "/")):
        path = path[len(script):]
    environ = _CONSTANT.copy()
    environ["REQUEST_METHOD"] = exchange.method.decode("latin-1")
    environ["SCRIPT_NAME"] = script
    environ["PATH_INFO"] = path
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["SERVER_PROTOCOL"] = exchange.clientproto.decode("latin-1")
    environ["wsgi.errors"] = sys.stderr
    host_header = b""
    for name, value in exchange.headers:
        key = _header_key(name)
        text = value.decode("latin-1")
        if key in environ and key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = environ[key] + "," + text
        else:
            environ[key] = text
        if name == b"host":
            host_header = value
    channel: Any = exchange.channel
    if channel.secure:
        environ["wsgi.url_scheme"] = "https"
    local = local_end(channel.transport)
    if local is not None:
        peer = channel.peer
        environ["SERVER_NAME"], environ["SERVER_PORT"] = str(local[0]), str(local[1])
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


def plain_socket(transport: Any) -> bool:
    """
    Whether C{transport} is a reactor's TCP or UNIX connection, whose
    socket sendfile(2) may write to (not TLS, not a test's transport).
    """
    return isinstance(transport, abstract.FileDescriptor) and hasattr(transport, "socket")


class FileSender:
    """
    Sends C{count} bytes of a file from C{offset} to an exchange's socket
    with sendfile(2), on the reactor's thread, then ends the response.

    The socket is not blocking: what it does not take now is sent when it
    is writable again.  The transport says so, as it does to a producer it
    paused: with its C{producerPaused} set, its next C{doWrite()} (once its
    own buffer, the head's rest, is sent) calls the channel's
    C{resumeProducing()}, which reaches L{WSGICall.writable} and L{pump}.
    """

    def __init__(self, exchange: Exchange, fd: int, offset: int, count: int,
                 sendfile: Callable[[int, int, int, int], int],
                 done: Callable[[], None]) -> None:
        self.exchange = exchange
        self.fd = fd
        self.offset = offset
        self.left = count
        self.sendfile = sendfile
        self._done = done
        self.finished = False

    def pump(self) -> None:
        """
        Send what the socket takes, up to L{SENDFILE_TURN} bytes.
        """
        if self.finished:
            return
        exchange = self.exchange
        channel: Any = exchange.channel
        transport: Any = channel.transport
        if exchange.finished or transport is None or not transport.connected:
            self.stop()
            return
        if transport.disconnecting:
            # Closing: the transport's next write pass must close it rather
            # than hand the turn to its producer again.
            self._end(cut=True)
            transport.startWriting()
            return
        turn = 0
        out = transport.socket.fileno()
        while self.left > 0:
            if transport.dataBuffer or transport._tempDataBuffer or turn >= SENDFILE_TURN:
                self._wait(transport)
                return
            try:
                sent = self.sendfile(out, self.fd, self.offset, min(self.left, SENDFILE_TURN))
            except BlockingIOError:
                self._wait(transport)
                return
            except OSError:
                # The client went away (EPIPE, ECONNRESET), or the file
                # cannot be read: the transport hears of a lost connection
                # as it reads; the response is cut either way.
                self._end(cut=True)
                return
            if not sent:
                self._end(cut=True)  # the file is shorter than the response said
                return
            self.offset += sent
            self.left -= sent
            turn += sent
            exchange.sentLength += sent
        self._end(cut=False)

    def _wait(self, transport: Any) -> None:
        transport.producerPaused = True
        transport.startWriting()

    def _end(self, cut: bool) -> None:
        self.finished = True
        if cut:
            self.exchange.cut()
        else:
            self.exchange.end()
        self._done()

    def stop(self) -> None:
        """
        The client went away: nothing more is sent.
        """
        if not self.finished:
            self.finished = True
            self._done()


class WSGICall:
    """
    One request through a WSGI app: the exchange's sink on the reactor's
    side, the app's call on a thread of the pool.
    """

    def __init__(self, glue: NativeWSGI, exchange: Exchange) -> None:
        self.glue = glue
        self.exchange = exchange
        self._lock = threading.Lock()
        #: Made by the first wait, on C{_lock}: most requests never wait
        #: (a Condition is ~1.5 us to make, per request).
        self._condition: threading.Condition | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._body_complete = False
        self._paused = False
        self._gone = False
        self._writable = True
        self._status: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._started = False
        self._sender: FileSender | None = None
        self._file_sent = False
        #: Pieces of a streamed body handed to the reactor, and written.
        self._handed = 0
        self._written = 0

    def _notify(self) -> None:
        # With _lock held.
        condition = self._condition
        if condition is not None:
            condition.notify_all()

    def _wait(self) -> None:
        # With _lock held, having found what it waits for not there yet.
        condition = self._condition
        if condition is None:
            condition = self._condition = threading.Condition(self._lock)
        condition.wait()

    # -- on the reactor's thread: the exchange's sink ---------------------------

    def body(self, data: bytes) -> None:
        with self._lock:
            self._chunks.append(data)
            self._buffered += len(data)
            pause = self._buffered > BODY_BUFFER and not self._paused
            if pause:
                self._paused = True
            self._notify()
        if pause:
            self.exchange.pause_reading()

    def body_end(self) -> None:
        with self._lock:
            self._body_complete = True
            self._notify()

    def gone(self) -> None:
        sender = self._sender
        if sender is not None:
            sender.stop()
        with self._lock:
            self._gone = True
            self._writable = True
            self._notify()

    def writable(self, ready: bool) -> None:
        sender = self._sender
        if sender is not None:
            if ready:
                sender.pump()
            return
        with self._lock:
            self._writable = ready
            self._notify()

    # -- on the app's thread --------------------------------------------------

    def take_body(self) -> bytes | None:
        """
        The next piece of the body, waiting for it; C{None} at its end.
        """
        with self._lock:
            while not self._chunks and not self._body_complete and not self._gone:
                self._wait()
            if not self._chunks:
                return None
            chunk = self._chunks.popleft()
            self._buffered -= len(chunk)
            resume = self._paused and self._buffered <= BODY_BUFFER
            if resume:
                self._paused = False
        if resume:
            self.glue.to_reactor(self.exchange.resume_reading)
        return chunk

    def _wait_writable(self) -> bool:
        # Until the reactor has written what was handed to it, and only then
        # whether the connection takes more: checked at once, the flag was
        # the one from before that write, and a fast generator handed the
        # reactor its whole body (64 MiB to a slow reader: RSS +62 MiB).
        with self._lock:
            while (self._written < self._handed or not self._writable) and not self._gone:
                self._wait()
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
        if more:
            self._handed += 1
        self.glue.to_reactor(self._write, head, pieces, more)
        if more:
            self._wait_writable()

    def _write(self, head: tuple[int, list[tuple[bytes, bytes]]] | None,
               pieces: list[bytes], more: bool) -> None:
        exchange = self.exchange
        try:
            if exchange.finished:
                return
            if head is not None:
                exchange.start(*head)
            for piece in pieces:
                exchange.write(piece)
            if not more:
                exchange.end()
        finally:
            if more:
                with self._lock:
                    self._written += 1
                    self._notify()

    def _content_length(self) -> int | None:
        assert self._status is not None
        for name, value in self._status[1]:
            if name.lower() == b"content-length":
                try:
                    return max(int(value), 0)
                except ValueError:
                    return None
        return None

    def _stream(self, result: Iterable[bytes]) -> None:
        """
        Send a streamed body piece by piece, no more of it than its
        C{Content-Length} (more would be read as the next response).
        """
        left: int | None = None
        checked = False
        for piece in result:
            if self._gone:
                break
            if not checked and self._status is not None:
                # Read once start_response() was called: a generator calls
                # it as it yields its first piece.
                checked = True
                left = self._content_length()
            if left is not None:
                piece = piece[:left]
                left -= len(piece)
            if left == 0:
                # The body is whole: the piece and the response's end go in
                # one hand-over, with no wait for the write.  Flask's and
                # Django's responses are iterables of one piece with a
                # Content-Length; a hand-over and a wait for the piece, then
                # another hand-over to end, was 2 wakes of the reactor and one
                # of this thread: a Flask JSON route, wrk -c32, went from 205
                # to 98 us of CPU a request (keep-alive), 283 to 159 (close).
                self._send([bytes(piece)] if piece else [], more=False)
                return
            if piece:
                self._send([bytes(piece)], more=True)
        self._send([], more=False)

    def _send_file(self, wrapper: FileWrapper) -> bool:
        """
        Send C{wrapper}'s file by sendfile(2) if it is a regular file and
        the connection a plain socket, waiting until it is sent or the
        client is gone; C{False} where it must be read instead.
        """
        sendfile = self.glue.sendfile
        if sendfile is None or self._status is None or self._started:
            return False
        if not plain_socket(getattr(self.exchange.channel, "transport", None)):
            return False
        filelike = wrapper.filelike
        try:
            fd = filelike.fileno()
            info = os.fstat(fd)
            offset = filelike.tell() if hasattr(filelike, "tell") else 0
        except (AttributeError, OSError, ValueError):
            return False  # io.BytesIO's fileno() raises, a closed file's too
        if not stat.S_ISREG(info.st_mode):
            return False
        code, headers = self._status
        size = max(info.st_size - offset, 0)
        length = self._content_length()
        if length is None:
            headers = headers + [(b"content-length", b"%d" % size)]
            length = size
        count = length
        if code in _NO_BODY or code < 200 or self.exchange.method == b"HEAD":
            count = 0
        first = os.pread(fd, min(count, FILE_HEAD_BLOCK), offset) if count else b""
        self._started = True
        self.glue.to_reactor(
            self._start_file, (code, headers), first, fd, offset + len(first), count - len(first)
        )
        with self._lock:
            while not self._file_sent and not self._gone:
                self._wait()
        return True

    def _start_file(self, head: tuple[int, list[tuple[bytes, bytes]]], first: bytes,
                    fd: int, offset: int, count: int) -> None:
        exchange = self.exchange
        if exchange.finished:
            self._file_done()
            return
        exchange.start(*head)
        exchange.write(first)
        if count <= 0:
            exchange.end()
            self._file_done()
            return
        sendfile = self.glue.sendfile
        assert sendfile is not None
        self._sender = FileSender(exchange, fd, offset, count, sendfile, self._file_done)
        self._sender.pump()

    def _file_done(self) -> None:
        with self._lock:
            self._file_sent = True
            self._notify()

    def run(self) -> None:
        environ = environ_of(self.exchange, self.glue.root_path)
        environ["wsgi.input"] = _Input(self)
        result: Iterable[bytes] | None = None
        try:
            result = self.glue.app(environ, self.start_response)
            if isinstance(result, (list, tuple)):
                self._send([bytes(piece) for piece in result], more=False)
            elif not (isinstance(result, FileWrapper) and self._send_file(result)):
                self._stream(result)
        except Exception:
            _log.failure("WSGI app raised on {uri}", uri=self.exchange.uri)
            self.glue.to_reactor(self._fail, self._started)
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

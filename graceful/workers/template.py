# -*- test-case-name: tests.unit.workers.test_template -*-
"""
Workers forked from a template (C{preload = true}).

The master starts one template per generation, as it starts a worker (the
same command, sockets and pipes) plus one end of a C{SOCK_SEQPACKET} pair
named by C{GRACEFUL_TEMPLATE}.  The template imports Twisted, graceful and
the app, reports C{ready}, freezes the garbage collector's generations (so
that a child's collections do not write to, and so copy, the pages it
shares) and waits, running no reactor, loop or thread: each request
carries a worker's environment and four descriptors (its stderr pipe, its
ready and control pipes, the stderr it takes back), and the template forks.
The child puts them where an exec'd worker finds them, installs a reactor
of its own and goes on with the program as an exec'd worker would, minus
the imports.  The template reaps its children and tells the master how each
ended, since only a parent can.
"""

from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import sys
import threading
from typing import Any, Callable, Mapping, MutableMapping

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessExitedAlready, ProcessTerminated
from twisted.python.failure import Failure

from .._event import Event
from .._sockets import LISTEN_FDS_START, TEMPLATE_VARIABLE, ListeningSocket
from ..lifecycle.core import ProcessCore
from ..handoff.pipes import (
    GENERATION_VARIABLE,
    HANDOFF_VARIABLE,
    NewProcess,
    _FDReader,
    _close_quietly,
)

#: The name of the template's request socket among the passed sockets.
TEMPLATE_SOCKET_NAME = "graceful-template"

#: Descriptors a fork request carries: the child's fd 2 (a pipe to the
#: master), its ready pipe, its control pipe, the stderr it takes back.
REQUEST_FDS = 4

_PACKET = 65536

#: Signals the template ignores (its children take them back): what a
#: signal to the whole group (C{kill -USR2 -PGID}) means is the master's and
#: the workers' business, and by default SIGUSR2 (as TERM, INT and HUP)
#: would end the template.  USR1, TTIN and TTOU arrive blocked here anyway;
#: ignored, they stay harmless should that change.
LEFT_TO_OTHERS = (
    signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
    signal.SIGTTIN, signal.SIGTTOU,
)


def send_packet(sock: socket.socket, payload: Mapping[str, Any], fds: list[int] = []) -> None:
    data = json.dumps(payload, separators=(",", ":")).encode()
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], ancillary)


def receive_packet(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """
    One packet and the descriptors it carries; C{None} at end of file.
    """
    space = socket.CMSG_SPACE(REQUEST_FDS * array.array("i").itemsize)
    data, ancillary, _, _ = sock.recvmsg(_PACKET, space)
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    if not data:
        for fd in fds:
            _close_quietly(fd)
        return None, []
    return json.loads(data), fds


# -- the master's side ------------------------------------------------------


class ForkedTransport:
    """
    What L{NewProcess} needs of a process transport, for a worker that the
    template forked: its pipes are the master's own, and its exit is what
    the template reports (or, should the template be gone, the end of its
    ready pipe).
    """

    def __init__(
        self,
        reactor: Any,
        protocol: NewProcess,
        stderr_fd: int,
        ready_fd: int,
        control_fd: int,
        template_gone: Callable[[], bool] = lambda: False,
    ) -> None:
        self.reactor = reactor
        self.template_gone = template_gone
        self.protocol = protocol
        self.pid: int | None = None
        self._control_fd: int | None = control_fd
        self._readers: list[_FDReader] = []
        self._ended = False
        for fd, child_fd in ((stderr_fd, 2), (ready_fd, protocol.ready_fd)):
            os.set_blocking(fd, False)
            reader = _FDReader(fd, lambda: None, lambda: None)
            reader._readable = self._reading(reader, child_fd)
            reader._lost = self._lost(reader, child_fd)
            self._readers.append(reader)
            reactor.addReader(reader)

    def _reading(self, reader: _FDReader, child_fd: int) -> Callable[[], None]:
        def readable() -> None:
            try:
                data = os.read(reader.fileno(), _PACKET)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                self.protocol.childDataReceived(child_fd, data)
            else:
                self._lost(reader, child_fd)()

        return readable

    def _lost(self, reader: _FDReader, child_fd: int) -> Callable[[], None]:
        def lost() -> None:
            if reader not in self._readers:
                return
            self._readers.remove(reader)
            self.reactor.removeReader(reader)
            _close_quietly(reader.fileno())
            if child_fd == self.protocol.ready_fd and self.template_gone():
                # Nobody is left to tell us how it ended.
                self.ended(None, None)

        return lost

    def started(self, pid: int) -> None:
        self.pid = pid
        self.protocol.makeConnection(self)

    def ended(self, code: int | None, signum: int | None) -> None:
        if self._ended:
            return
        self._ended = True
        self.pid = None
        self.closeChildFD(self.protocol.control_fd)
        if code == 0:
            reason = Failure(ProcessDone(0))
        else:
            reason = Failure(ProcessTerminated(code, signum))
        self.protocol.processExited(reason)

    def signalProcess(self, signum: int | str) -> None:
        if self.pid is None:
            raise ProcessExitedAlready()
        number = getattr(signal, f"SIG{signum}") if isinstance(signum, str) else signum
        os.kill(self.pid, number)

    def writeToChild(self, child_fd: int, data: bytes) -> None:
        if child_fd != self.protocol.control_fd or self._control_fd is None:
            raise KeyError(child_fd)
        os.write(self._control_fd, data)

    def closeChildFD(self, child_fd: int) -> None:
        if child_fd == self.protocol.control_fd and self._control_fd is not None:
            _close_quietly(self._control_fd)
            self._control_fd = None
            self.protocol.childConnectionLost(child_fd)


class Template:
    """
    The master's view of its template: started like a worker; once ready,
    it forks workers on request.

    @ivar process: the template as a started process (its C{ready} fires once
        it has imported everything).
    @ivar sock: the master's end of the request socket.
    """

    def __init__(self, reactor: Any, process: NewProcess, sock: socket.socket) -> None:
        self.reactor = reactor
        self.process = process
        self.sock = sock
        self.gone = False
        self._pending: list[ForkedTransport] = []
        self._children: dict[int, ForkedTransport] = {}
        sock.setblocking(False)
        self._reader = _FDReader(sock.fileno(), self._readable, self._lost)
        reactor.addReader(self._reader)
        process.on_exit = lambda reason: self._lost()

    @classmethod
    def start(
        cls,
        reactor: Any,
        spawn: Callable[..., NewProcess],
        sockets: list[ListeningSocket],
        extra_environ: Mapping[str, str],
        **spawn_arguments: Any,
    ) -> Template:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            environ = dict(extra_environ)
            environ[TEMPLATE_VARIABLE] = str(LISTEN_FDS_START + len(sockets))
            process = spawn(
                sockets=[*sockets, ListeningSocket(theirs.fileno(), TEMPLATE_SOCKET_NAME)],
                extra_environ=environ,
                **spawn_arguments,
            )
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        return cls(reactor, process, mine)

    @property
    def pid(self) -> int:
        return self.process.pid

    def fork(
        self,
        sockets: list[ListeningSocket],
        generation: int,
        extra_environ: Mapping[str, str],
        ready_timeout: float,
        forward_stderr: Callable[[bytes], None],
        stderr_target: int = 2,
        **_: Any,
    ) -> NewProcess:
        """
        Ask the template for a worker; the result is the master's view of
        it, as L{graceful.handoff.pipes.spawn_new_process} would return.
        """
        if self.gone:
            raise OSError("the template is gone")
        n = len(sockets)
        ready_fd = LISTEN_FDS_START + n
        protocol = NewProcess(
            ready_fd=ready_fd,
            control_fd=ready_fd + 1,
            clock=self.reactor,
            ready_timeout=ready_timeout,
            forward_stderr=forward_stderr,
        )
        stderr_r, stderr_w = os.pipe()
        ready_r, ready_w = os.pipe()
        control_r, control_w = os.pipe()
        environ = dict(extra_environ)
        environ.update(
            {
                "LISTEN_FDS": str(n),
                "LISTEN_FDNAMES": ":".join(s.name for s in sockets),
                HANDOFF_VARIABLE: f"ready={ready_fd},control={ready_fd + 1},"
                f"stderr={ready_fd + 2},parent={self.pid}",
                GENERATION_VARIABLE: str(generation),
            }
        )
        try:
            send_packet(self.sock, {"env": environ}, [stderr_w, ready_w, control_r, stderr_target])
        except OSError:
            for fd in (stderr_r, stderr_w, ready_r, ready_w, control_r, control_w):
                _close_quietly(fd)
            raise
        for fd in (stderr_w, ready_w, control_r):
            _close_quietly(fd)
        transport = ForkedTransport(
            self.reactor, protocol, stderr_r, ready_r, control_w, lambda: self.gone
        )
        self._pending.append(transport)
        return protocol

    def _readable(self) -> None:
        while True:
            try:
                packet, fds = receive_packet(self.sock)
            except BlockingIOError:
                return
            except OSError:
                packet, fds = None, []
            if packet is None:
                self._lost()
                return
            self._heard(packet)

    def _heard(self, packet: dict[str, Any]) -> None:
        if "forked" in packet and self._pending:
            transport = self._pending.pop(0)
            pid = int(packet["forked"])
            self._children[pid] = transport
            transport.started(pid)
        elif "exited" in packet:
            child = self._children.pop(int(packet["exited"]), None)
            if child is not None:
                child.ended(packet.get("code"), packet.get("signal"))

    def _lost(self) -> None:
        if self.gone:
            return
        self.gone = True
        self.reactor.removeReader(self._reader)
        self.sock.close()
        for transport in self._pending:
            transport.ended(None, None)
        self._pending.clear()

    def stop(self) -> None:
        """
        No more requests: the template exits once its children have.
        """
        if not self.gone:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass


Spawn = Callable[..., Any]


class TemplateChoice:
    """
    How the master starts a worker: forked from its template with
    C{preload = true} while the template lives, else exec'd; it says in the
    log which, and when it falls back.

    @ivar template: the current template, once started.
    @ivar generation: the generation of the code the template imported: a
        worker of another (a roll of a master that keeps its own code, as
        PID 1 does) comes from a new template, which imports the new code.
    @ivar failed: whether the template failed (exec from then on, for this
        generation).
    """

    def __init__(self, process: ProcessCore) -> None:
        self.process = process
        self.template: Template | None = None
        self.generation: int | None = None
        self.failed = False
        self._said = False
        self._ready = Event()

    def _exec(self, **arguments: Any) -> Any:
        core = self.process
        return core.environment.spawn(core.reactor, core.reactor, **arguments)

    def spawner(self, sockets: list[ListeningSocket], **arguments: Any) -> Deferred[Spawn]:
        """
        Fires with how to start the next worker: C{spawn(**arguments)}.
        """
        core = self.process
        result: Deferred[Spawn] = Deferred()
        generation = arguments.get("generation")
        if generation != self.generation:
            # New code: a new template imports it.
            self.sockets_changed()
            self.generation = generation
            self.failed = False
        if not core.settings.preload or self.failed:
            if not self._said:
                self._said = True
                core.log.info(
                    "{pid}: workers start by exec (preload = false)"
                    if not core.settings.preload
                    else "{pid}: workers start by exec (the template failed)",
                    pid=core.pid,
                )
            result.callback(self._exec)
            return result
        if self.template is None:
            self._start(sockets, arguments)
        template = self.template

        def chosen(_: object) -> None:
            if template is None or template.gone or self.failed:
                self._fall_back("it is gone")
                result.callback(self._exec)
            else:
                result.callback(template.fork)

        self._ready.wait().addCallback(chosen)
        return result

    def _start(self, sockets: list[ListeningSocket], arguments: dict[str, Any]) -> None:
        core = self.process
        arguments = dict(arguments)
        arguments["extra_environ"] = {}
        try:
            template = self.template = Template.start(core.reactor, self._exec, sockets, **arguments)
        except Exception as e:
            self._fall_back(f"cannot start it: {e}")
            self._ready.happen()
            return
        ready = self._ready

        def up(pid: int) -> None:
            core.log.info(
                "{pid}: worker template {template} is ready: workers fork from it (preload = true)",
                pid=core.pid,
                template=pid,
            )
            self._said = True
            ready.happen()

        def down(failure: Failure) -> None:
            self._fall_back(failure.getErrorMessage())
            ready.happen()

        template.process.ready.addCallbacks(up, down)

    def _fall_back(self, why: str) -> None:
        if self.failed:
            return
        self.failed = True
        self.process.log.warn(
            "{pid}: the worker template failed ({why}): workers start by exec",
            pid=self.process.pid,
            why=why,
        )

    def sockets_changed(self) -> None:
        """
        The master holds a socket the template lacks: the next worker comes
        from a new template; the old one leaves once its children have.
        """
        if self.template is not None:
            self.template.stop()
            self.template = None
            self._ready = Event()


# -- the template's side ----------------------------------------------------


def threads_beside_this_one(
    python_threads: Callable[[], list[Any]] = threading.enumerate,
    task_dir: str = "/proc/self/task",
) -> list[str]:
    """
    The threads running beside the calling one: Python's by name, the
    others (an extension's) counted from C{task_dir}.  A forked child has
    none of them, and a lock one of them held stays held in the child.
    """
    current = threading.current_thread()
    names = [t.name for t in python_threads() if t is not current and t.is_alive()]
    try:
        outside = len(os.listdir(task_dir)) - 1 - len(names)
    except OSError:
        outside = 0
    if outside > 0:
        names.append(f"{outside} started outside Python" if outside > 1 else "1 started outside Python")
    return names


def hold_forks(
    environ: MutableMapping[str, str],
    report_ready: Callable[[], None],
    report_error: Callable[[str], None] = lambda reason: None,
    threads: Callable[[], list[str]] = threads_beside_this_one,
) -> bool:
    """
    If this process is a template (C{GRACEFUL_TEMPLATE} names its request
    socket), serve fork requests; return in each child, set up as an
    exec'd worker would be (True), or exit once the master stops asking.
    Returns False at once in any other process.

    A template whose app started threads as it was imported cannot fork
    it safely: it reports why and exits, and the master execs its workers.
    """
    value = environ.pop(TEMPLATE_VARIABLE, None)
    if not value:
        return False
    running = threads()
    if running:
        report_error(
            f"the app started threads as it was imported ({', '.join(running)}), "
            "which a fork would not have"
        )
        os._exit(1)
    sock = socket.socket(fileno=int(value))
    # A signal to the whole group (SIGTERM to -PGID, ^C) is for the master
    # and the workers: the template leaves when the master closes the
    # request socket (at its exit, or its death), once its children have.
    for signum in LEFT_TO_OTHERS:
        signal.signal(signum, signal.SIG_IGN)
    report_ready()
    woken_r, woken_w = os.pipe()
    for fd in (woken_r, woken_w):
        os.set_blocking(fd, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(woken_w)
    # Everything imported now stays put: a child's collections leave the
    # shared pages alone (copy-on-write would copy them otherwise).
    gc.collect()
    gc.freeze()
    children = 0
    asking = True
    while asking or children:
        waiting: list[Any] = [sock, woken_r] if asking else [woken_r]
        readable, _, _ = select.select(waiting, [], [])
        if woken_r in readable:
            while True:
                try:
                    if not os.read(woken_r, 512):
                        break
                except BlockingIOError:
                    break
            children -= _reap(sock)
        if asking and sock in readable:
            try:
                packet, fds = receive_packet(sock)
            except OSError:
                packet, fds = None, []
            if packet is None:
                asking = False
                continue
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                for signum in (signal.SIGCHLD, *LEFT_TO_OTHERS):
                    signal.signal(signum, signal.SIG_DFL)
                for fd in (woken_r, woken_w):
                    _close_quietly(fd)
                sock.close()
                become_worker(environ, packet["env"], fds)
                return True
            for fd in fds:
                _close_quietly(fd)
            children += 1
            _tell(sock, {"forked": pid})
    os._exit(0)


def _reap(sock: socket.socket) -> int:
    reaped = 0
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return reaped
        if pid == 0:
            return reaped
        reaped += 1
        if os.WIFSIGNALED(status):
            _tell(sock, {"exited": pid, "code": None, "signal": os.WTERMSIG(status)})
        else:
            _tell(sock, {"exited": pid, "code": os.waitstatus_to_exitcode(status), "signal": None})


def _tell(sock: socket.socket, payload: Mapping[str, Any]) -> None:
    try:
        send_packet(sock, payload)
    except OSError:
        pass  # the master is gone; our children hear it from their pipes


def become_worker(
    environ: MutableMapping[str, str], worker_environ: Mapping[str, str], fds: list[int]
) -> None:
    """
    In the child: the received descriptors where an exec'd worker has them
    (fd 2, then the pipes after the sockets), its variables, a reactor of
    its own.
    """
    n = int(worker_environ["LISTEN_FDS"])
    ready_fd = LISTEN_FDS_START + n
    targets = [2, ready_fd, ready_fd + 1, ready_fd + 2]
    # Out of the way first: recvmsg gave them the lowest free numbers,
    # which may be the targets of others.
    high = [_dup_above(fd, 64) for fd in fds]
    for fd in fds:
        _close_quietly(fd)
    for source, target in zip(high, targets):
        # fd 2 stays inheritable, as it is for what an app starts.
        os.dup2(source, target, inheritable=target == 2)
        _close_quietly(source)
    # The template's own pipes sat right after its request socket: the
    # dup2s above replaced them (its stderr copy it closed when ready).
    # Nothing else is closed by number: the number may be reused already.
    for name in ("LISTEN_PID", TEMPLATE_VARIABLE):
        environ.pop(name, None)
    environ.update(worker_environ)
    fresh_reactor()


def _dup_above(fd: int, minimum: int) -> int:
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, minimum)


def fresh_reactor() -> None:
    """
    Give the installed reactor, in place, what it shares with the template
    and every sibling: its epoll (or asyncio loop) and its waker.  In place,
    since the app's modules may hold it (C{from twisted.internet import
    reactor}, run as the template imported them).
    """
    reactor: Any = sys.modules.get("twisted.internet.reactor")
    if reactor is None:
        return
    waker = getattr(reactor, "waker", None)
    if waker is not None:
        reactor._internalReaders.discard(waker)
        for name in ("i", "o"):
            fd = getattr(waker, name, None)
            if isinstance(fd, int):
                _close_quietly(fd)
        reactor.waker = None
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:
        import asyncio

        # Closed first (our copies of its descriptors only), so that no
        # descriptor of the new loop can have a number it closes.
        try:
            loop.close()
        except Exception:
            pass
        # The loop the process chose (uvloop's, where installed): the
        # template's reactor waited on one of asyncio's own, never run.
        fresh = getattr(reactor, "loop_factory", asyncio.new_event_loop)()
        asyncio.set_event_loop(fresh)
        reactor._asyncioEventloop = fresh
        reactor._readers.clear()
        reactor._writers.clear()
        # A timer the template scheduled is a handle of the old loop, which
        # never runs: the reactor would wait for it and put off every
        # sooner call (requests answered only on the next 0.5 s report).
        reactor._scheduledAt = None
        reactor._timerHandle = None
    elif isinstance(getattr(reactor, "_poller", None), select.epoll):
        reactor._poller.close()
        reactor._poller = select.epoll(1024)
        reactor._reads.clear()
        reactor._writes.clear()
        reactor._selectables.clear()
    reactor.installWaker()

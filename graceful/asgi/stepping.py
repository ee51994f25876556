# -*- test-case-name: tests.unit.asgi.test_stepping -*-
"""
An app's coroutine for a request, run at once while it does not wait, and
on the loop as a task only once it does.

A task per request costs its creation, a turn of the loop for its first
step and another for its done callback: 1.1 us on uvloop against 0.53 us
stepped (a loop of empty coroutines), and 8% of a raw ASGI hello world's
CPU on a keep-alive connection (wrk, side by side); most such requests
never wait.  Python 3.12's eager tasks start a task this way; 3.11 has
none, so L{Stepper} does it:

  - the coroutine is stepped (C{send(None)}) at once, in a copy of the
    current context, as a task copies it, so each request has its own;
  - while it is stepped, the current task (C{asyncio.current_task()}) is a
    real task of the loop, the I{spare}: C{asyncio.timeout()}, task groups,
    sniffio and anyio's cancel scopes (under Starlette and FastAPI) need
    one, and hold on to it;
  - a request that completes without waiting leaves the spare as it found
    it, for the next request;
  - a request that waits makes the spare its own task: the spare goes on
    with the coroutine on the loop, waiting on the future the coroutine
    waits on, and the next request gets a new spare.  So what held on to
    the current task (a timeout, a cancel scope) holds the task that runs
    the rest of the request.

The outcome reaches C{done} as a task's would: C{None} when the coroutine
returned, a L{asyncio.CancelledError} when it (its task) was cancelled, or
what it raised.  What the coroutine awaits, a cancel of its task, and what
it raises behave as with C{loop.create_task()}; so does a cancel or a done
callback its code gives its task before it returns without waiting (the
spare is then retired: it ends, cancelled or not, and is not lent again).

Where a task already runs (a request dispatched from another's C{send()}),
or the stepping is already under way, or the loop is not running (its
callbacks are where the reactor reads), the coroutine gets a task of its
own as before: no request is stepped inside another's task, a pipeline of
requests cannot recurse, and the app always runs on a running loop.
"""

from __future__ import annotations

import asyncio
import contextvars
from contextvars import copy_context
import types
import weakref
from typing import Any, Callable, Coroutine, Generator

CancelledError = asyncio.CancelledError


_current_task: Callable[[asyncio.AbstractEventLoop], Any] = asyncio.current_task
_current_tasks = getattr(asyncio.tasks, "_current_tasks", None)
if isinstance(_current_tasks, dict):
    # What current_task() reads, without its Python call (0.1 us).
    _current_task = _current_tasks.get

#: asyncio's own, with which its tasks say they run (Python 3.7 and later).
_enter_task: Any = getattr(asyncio.tasks, "_enter_task", None)
_leave_task: Any = getattr(asyncio.tasks, "_leave_task", None)
#: Without them (or the task's fields read below), every coroutine gets a
#: task of its own.
AVAILABLE = (
    _enter_task is not None
    and _leave_task is not None
    and all(hasattr(asyncio.Task, name) for name in ("_must_cancel", "_callbacks", "_log_destroy_pending"))
)


#: Told of a request's end: C{None}, a L{asyncio.CancelledError} or what it raised.
Done = Callable[[BaseException | None], None]


class _Job:
    "A coroutine that waited while it was stepped, and what it waits on."

    __slots__ = ("coro", "context", "waiting")

    def __init__(self, coro: Coroutine[Any, Any, Any], context: contextvars.Context,
                 waiting: Any) -> None:
        self.coro = coro
        self.context = context
        self.waiting = waiting


_RETIRED = object()


class _Spare:
    """
    A task of the loop, lent as the current task to the requests that do
    not wait, and given to the first that does.
    """

    __slots__ = ("loop", "job", "idle", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.job: object = None
        self.idle: asyncio.Future[None] | None = None
        carry = _carried(self)
        # Started here, so that a cancel before the task's first step
        # reaches the request it may be carrying by then.
        carry.send(None)
        self.task: asyncio.Task[Any] = loop.create_task(carry)
        # Idle when the loop ends, it is no request's: no warning for it.
        self.task._log_destroy_pending = False  # type: ignore[attr-defined]

    def take(self, job: _Job) -> None:
        """
        The task is C{job}'s from now on.
        """
        self.job = job
        self.task._log_destroy_pending = True  # type: ignore[attr-defined]
        self._wake()

    def retire(self) -> None:
        """
        The task ends (its callbacks run; cancelled, if it was cancelled).
        """
        self.job = _RETIRED
        self._wake()

    def _wake(self) -> None:
        idle = self.idle
        if idle is not None and not idle.done():
            idle.set_result(None)


async def _carried(spare: _Spare) -> Any:
    # A coroutine, as every Python's tasks take (3.12's no generator).
    return await _carry(spare)


@types.coroutine
def _carry(spare: _Spare) -> Generator[Any, None, Any]:
    """
    The spare's task: idle until a request is given to it, then that
    request's coroutine until it ends.
    """
    thrown: BaseException | None = None
    try:
        yield  # where _Spare starts it
        if spare.job is None:
            spare.idle = spare.loop.create_future()
            yield from spare.idle
    except BaseException as error:  # its task was cancelled (or closed)
        thrown = error
    job = spare.job
    if not isinstance(job, _Job):
        if thrown is not None:
            raise thrown
        return None
    return (yield from _rest(job, thrown))


def _rest(job: _Job, thrown: BaseException | None) -> Generator[Any, None, Any]:
    """
    The rest of C{job}'s coroutine, each step in its context: the task
    waits on what the coroutine waits on, and throws into it what the task
    is thrown (a cancel).
    """
    coro, run, waiting = job.coro, job.context.run, job.waiting
    while True:
        if thrown is not None:
            if isinstance(thrown, asyncio.CancelledError) and isinstance(waiting, asyncio.Future):
                # As a task cancels the future its coroutine waits on.
                waiting.cancel()
            try:
                waiting = run(coro.throw, thrown)
            except StopIteration as stop:
                return stop.value
            thrown = None
        try:
            yield waiting
        except BaseException as error:
            thrown = error
            continue
        try:
            waiting = run(coro.send, None)
        except StopIteration as stop:
            return stop.value


def _reporter(done: Done) -> Callable[[asyncio.Future[Any]], None]:
    def report(task: asyncio.Future[Any]) -> None:
        if task.cancelled():
            done(asyncio.CancelledError())
        else:
            done(task.exception())

    return report


_steppers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Stepper] = (
    weakref.WeakKeyDictionary()
)


def stepper(loop: asyncio.AbstractEventLoop) -> Stepper:
    """
    The one L{Stepper} of C{loop}: one, so that no request is stepped while
    another's end is being told.
    """
    found = _steppers.get(loop)
    if found is None:
        found = _steppers[loop] = Stepper(loop)
    return found


class Stepper:
    """
    Runs the coroutines of one loop's requests (see the module).
    """

    __slots__ = ("loop", "_spare", "_busy")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._spare: _Spare | None = None
        #: Stepping, or telling a stepped coroutine's end (or never).
        self._busy = not AVAILABLE

    def run(self, coro: Coroutine[Any, Any, Any], done: Done) -> None:
        """
        Run C{coro}; C{done} is told how it ended.
        """
        loop = self.loop
        # loop.is_running(), not asyncio._get_running_loop(): that one makes a
        # getpid(2) each call (to notice a fork), a system call a request.
        if self._busy or not loop.is_running() or _current_task(loop) is not None:
            task = loop.create_task(coro)
            task.add_done_callback(_reporter(done))
            return
        spare = self._spare
        if spare is None:
            spare = self._spare = _Spare(loop)
        task = spare.task
        context = copy_context()
        error: BaseException | None = None
        self._busy = True
        _enter_task(loop, task)
        try:
            waiting = context.run(coro.send, None)
        except StopIteration:
            _leave_task(loop, task)
        except BaseException as raised:
            _leave_task(loop, task)
            error = raised
        else:
            _leave_task(loop, task)
            # It waits: the spare carries it on from here.
            self._spare = None
            spare.take(_Job(coro, context, waiting))
            task.add_done_callback(_reporter(done))
            self._busy = False
            return
        try:
            # Read as attributes: a method call here cost 0.1 us a request.
            idle = spare.idle
            cancelled = task._must_cancel or (idle is not None and idle.cancelled())  # type: ignore[attr-defined]
            if cancelled or task._callbacks:
                self._spare = None
                spare.retire()
            if error is None:
                if cancelled:
                    error = CancelledError()
            elif isinstance(error, CancelledError):
                # A task that ends so is cancelled, with no message of its own.
                error = CancelledError()
            done(error)
        finally:
            self._busy = False
        if error is not None and not isinstance(error, (Exception, CancelledError)):
            raise error  # KeyboardInterrupt, SystemExit: as out of a task's step

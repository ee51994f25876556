"""
An app's coroutine stepped at once while it does not wait, and carried on
by a task once it does (L{graceful.asgi.stepping}): each outcome the same
as with C{loop.create_task()}, a real current task throughout, a context
per request; on an asyncio loop driven by hand, the coroutines started from
a callback of the running loop as the reactor reads.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any, Callable, Coroutine

import anyio
from twisted.trial.unittest import SynchronousTestCase

from graceful.asgi.stepping import Stepper

from .test_resource import settle

Outcome = list[BaseException | None]

#: What the apps below record, per request.
request_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_var", default="unset")


def kind(error: BaseException | None) -> Any:
    """
    An outcome as a test compares it: its type and message.
    """
    return None if error is None else (type(error), str(error))


class StepperCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        self.stepper = Stepper(self.loop)

    def start(self, coro: Coroutine[Any, Any, Any]) -> Outcome:
        """
        Run C{coro} with the stepper from a callback of the running loop;
        what it ended with, once it has.
        """
        outcome: Outcome = []
        self.loop.call_soon(self.stepper.run, coro, outcome.append)
        self.loop.run_until_complete(asyncio.sleep(0))
        return outcome

    def with_task(self, coro: Coroutine[Any, Any, Any]) -> Outcome:
        """
        C{coro} run as before: a task of its own.
        """
        outcome: Outcome = []
        task = self.loop.create_task(coro)
        task.add_done_callback(
            lambda t: outcome.append(asyncio.CancelledError() if t.cancelled() else t.exception())
        )
        return outcome

    def both(self, app: Callable[[], Coroutine[Any, Any, Any]],
             poke: Callable[[], None] = lambda: None) -> tuple[Outcome, Outcome]:
        """
        The outcome of C{app()} stepped and as a task, C{poke} called once
        each has started.
        """
        stepped = self.start(app())
        poke()
        settle(self.loop)
        tasked = self.with_task(app())
        settle(self.loop, 2)
        poke()
        settle(self.loop)
        return stepped, tasked


class NoWaitTests(StepperCase):
    def test_done_at_once_without_a_task(self) -> None:
        """
        A coroutine that never waits is done within the call that started
        it, with no task made for it: the spare task is lent again.
        """
        seen: list[Any] = []

        async def app() -> None:
            seen.append(asyncio.current_task())

        self.assertEqual(self.start(app()), [None])
        tasks = asyncio.all_tasks(self.loop)
        self.assertEqual(self.start(app()), [None])
        self.assertIsInstance(seen[0], asyncio.Task)
        self.assertIs(seen[0], seen[1])
        self.assertEqual(asyncio.all_tasks(self.loop), tasks)

    def test_raises(self) -> None:
        """
        What a coroutine raises before it waits is its outcome, as a task's
        exception.
        """
        error = ValueError("no")

        async def app() -> None:
            raise error

        self.assertEqual(self.start(app()), [error])

    def test_raises_cancelled(self) -> None:
        """
        A coroutine that raises CancelledError ends as a cancelled task does.
        """

        async def app() -> None:
            raise asyncio.CancelledError("mine")

        stepped, tasked = self.both(app)
        self.assertEqual([kind(e) for e in stepped], [kind(e) for e in tasked])
        self.assertEqual(kind(stepped[0]), (asyncio.CancelledError, ""))

    def test_cancels_its_task(self) -> None:
        """
        A coroutine that cancels its task and returns before it waits ends
        cancelled, as a task does; the next request gets another task.
        """
        seen: list[Any] = []

        async def app() -> None:
            task = asyncio.current_task()
            seen.append(task)
            assert task is not None
            task.cancel()

        stepped, tasked = self.both(app)
        self.assertEqual([kind(e) for e in stepped], [kind(e) for e in tasked])
        self.assertIsInstance(stepped[0], asyncio.CancelledError)

        async def next_app() -> None:
            seen.append(asyncio.current_task())

        self.assertEqual(self.start(next_app()), [None])
        self.assertIsNot(seen[-1], seen[0])
        settle(self.loop)
        self.assertTrue(seen[0].cancelled())

    def test_done_callback_on_its_task(self) -> None:
        """
        A done callback given to the current task runs once the request
        has ended, as for a task of its own.
        """
        called: list[str] = []

        async def app() -> None:
            task = asyncio.current_task()
            assert task is not None
            task.add_done_callback(lambda t: called.append("done"))

        self.assertEqual(self.start(app()), [None])
        settle(self.loop)
        self.assertEqual(called, ["done"])


class WaitTests(StepperCase):
    def test_waits_then_returns(self) -> None:
        """
        A coroutine that waits goes on, in the task it saw as its own, once
        what it waits on is done; its outcome comes then.
        """
        gate = self.loop.create_future()
        seen: list[Any] = []

        async def app() -> str:
            seen.append(asyncio.current_task())
            seen.append(await gate)
            seen.append(asyncio.current_task())
            return "ignored"

        outcome = self.start(app())
        settle(self.loop)
        self.assertEqual(outcome, [])
        gate.set_result("opened")
        settle(self.loop)
        self.assertEqual(outcome, [None])
        self.assertEqual(seen[1], "opened")
        self.assertIs(seen[0], seen[2])
        self.assertTrue(seen[0].done())

    def test_next_request_gets_another_task(self) -> None:
        """
        While a request waits in the task it was lent, the next request is
        lent another.
        """
        gate = self.loop.create_future()
        seen: list[Any] = []

        async def waits() -> None:
            seen.append(asyncio.current_task())
            await gate

        async def returns() -> None:
            seen.append(asyncio.current_task())

        self.start(waits())
        self.assertEqual(self.start(returns()), [None])
        self.assertIsNot(seen[0], seen[1])
        gate.set_result(None)
        settle(self.loop)

    def test_raises_after_waiting(self) -> None:
        """
        What a coroutine raises after it waited is its outcome.
        """
        error = KeyError("late")

        async def app() -> None:
            await asyncio.sleep(0)
            raise error

        outcome = self.start(app())
        settle(self.loop)
        self.assertEqual(outcome, [error])

    def test_cancelled_while_waiting(self) -> None:
        """
        Cancelling the task of a coroutine that waits throws CancelledError
        into it where it waits, and cancels what it waits on, as for a
        task; not catching it, it ends cancelled.
        """
        gates: list[asyncio.Future[None]] = []
        tasks: list[Any] = []
        caught: list[str] = []

        async def app() -> None:
            tasks.append(asyncio.current_task())
            gate = self.loop.create_future()
            gates.append(gate)
            try:
                await gate
            except asyncio.CancelledError:
                caught.append("cancelled")
                raise

        stepped, tasked = self.both(app, lambda: tasks[-1].cancel())
        self.assertEqual(caught, ["cancelled", "cancelled"])
        self.assertEqual([kind(e) for e in stepped], [kind(e) for e in tasked])
        self.assertIsInstance(stepped[0], asyncio.CancelledError)
        self.assertEqual([g.cancelled() for g in gates], [True, True])

    def test_cancelled_before_its_task_ran(self) -> None:
        """
        A coroutine whose task is cancelled in the same turn of the loop as
        it first waits (before the task ran a step) gets the CancelledError
        where it waits.
        """
        caught: list[str] = []

        async def app() -> None:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            try:
                await self.loop.create_future()
            except asyncio.CancelledError:
                caught.append("cancelled")
            return None

        stepped, tasked = self.both(app)
        self.assertEqual(caught, ["cancelled", "cancelled"])
        self.assertEqual([kind(e) for e in stepped], [kind(e) for e in tasked])

    def test_task_group(self) -> None:
        """
        asyncio's TaskGroup, which needs a current task, works across a
        wait.
        """
        results: list[int] = []

        async def child(n: int) -> None:
            await asyncio.sleep(0)
            results.append(n)

        async def app() -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(child(1))
                group.create_task(child(2))

        outcome = self.start(app())
        settle(self.loop)
        self.assertEqual((outcome, sorted(results)), ([None], [1, 2]))

    def test_anyio_cancel_scope_across_a_wait(self) -> None:
        """
        anyio's cancel scope (Starlette, FastAPI) entered before a wait and
        cancelled during it stops the wait and is left cleanly: its host
        task is the task that runs the rest of the request.
        """
        scopes: list[anyio.CancelScope] = []
        after: list[str] = []

        async def app() -> None:
            with anyio.CancelScope() as scope:
                scopes.append(scope)
                await self.loop.create_future()
            after.append("left the scope")

        outcome = self.start(app())
        settle(self.loop)
        self.loop.call_soon(scopes[0].cancel)
        settle(self.loop)
        self.assertEqual((outcome, after), ([None], ["left the scope"]))


class ContextTests(StepperCase):
    def test_each_request_its_own_context(self) -> None:
        """
        Each request runs in a copy of the context it was started from: its
        own changes stay its own, before and after a wait, and the caller's
        context is untouched.
        """
        gate = self.loop.create_future()
        seen: list[str] = []

        async def first() -> None:
            seen.append(request_var.get())
            request_var.set("first")
            await gate
            seen.append(request_var.get())

        async def second() -> None:
            seen.append(request_var.get())
            request_var.set("second")

        self.start(first())
        self.start(second())
        gate.set_result(None)
        settle(self.loop)
        self.assertEqual(seen, ["unset", "unset", "first"])
        self.assertEqual(request_var.get(), "unset")


class FallbackTests(StepperCase):
    def test_inside_a_task(self) -> None:
        """
        A coroutine started from inside a task (a request dispatched by
        another's send) gets a task of its own: it runs on a later turn,
        not inside the other.
        """
        seen: list[Any] = []
        outcome: Outcome = []

        async def app() -> None:
            seen.append(asyncio.current_task())

        async def starter() -> None:
            self.stepper.run(app(), outcome.append)
            seen.append(list(outcome))

        self.loop.run_until_complete(starter())
        settle(self.loop)
        self.assertEqual(seen[0], [])
        self.assertEqual(outcome, [None])

    def test_loop_not_running(self) -> None:
        """
        Started where the loop does not run, a coroutine waits for the loop
        in a task of its own.
        """
        outcome: Outcome = []

        async def app() -> None:
            asyncio.get_running_loop()

        self.stepper.run(app(), outcome.append)
        self.assertEqual(outcome, [])
        settle(self.loop)
        self.assertEqual(outcome, [None])

    def test_started_from_done(self) -> None:
        """
        A request started while another's end is being told (a pipelined
        request after an app failed) waits for a turn of the loop: a
        pipeline cannot recurse.
        """
        order: list[str] = []

        async def app() -> None:
            pass

        def first_done(error: BaseException | None) -> None:
            order.append("first done")
            self.stepper.run(app(), lambda error: order.append("second done"))
            order.append("second started")

        self.loop.call_soon(self.stepper.run, app(), first_done)
        settle(self.loop)
        self.assertEqual(order, ["first done", "second started", "second done"])

"""The worker threads' cancellation rule (``trio_aio/_workers.py``), on trio and asyncio.

Threads are held by ``threading.Event``s the test sets: nothing here sleeps.
"""

from __future__ import annotations

import threading

import anyio
import pytest

import trio_aio
from trio_aio import _workers

pytestmark = pytest.mark.anyio


def held(release: threading.Event, started: threading.Event, value: int) -> int:
    started.set()
    release.wait(10)
    return value


async def wait_for(event: threading.Event) -> None:
    """Until a worker thread sets ``event`` (polled with checkpoints, not sleeps)."""
    while not event.is_set():
        await anyio.lowlevel.checkpoint()


async def test_a_call_waiting_for_a_thread_is_dropped_by_a_cancellation() -> None:
    trio_aio.lowlevel.configure_threads(1)
    workers = _workers.current()
    release, started = threading.Event(), threading.Event()
    ran: list[str] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(workers.run, held, release, started, 1)
        await wait_for(started)
        with anyio.CancelScope() as scope:

            async def second() -> None:
                await workers.run(ran.append, "second")

            async with anyio.create_task_group() as inner:
                inner.start_soon(second)
                await anyio.wait_all_tasks_blocked()
                assert workers.statistics().queued == 1
                scope.cancel()
        release.set()
    assert scope.cancelled_caught
    assert ran == []  # it never ran
    stats = workers.statistics()
    assert (stats.dropped, stats.queued, stats.in_flight) == (1, 0, 0)


async def test_a_running_call_is_waited_for_and_its_result_returned() -> None:
    workers = _workers.current()
    release, started = threading.Event(), threading.Event()
    got: list[int] = []
    with anyio.CancelScope() as scope:

        async def call() -> None:
            got.append(await workers.run(held, release, started, 7))
            await anyio.lowlevel.checkpoint()  # the cancellation arrives here
            got.append(-1)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call)
            await wait_for(started)
            scope.cancel()
            release.set()
    assert scope.cancelled_caught
    assert got == [7]
    assert workers.statistics().cancelled == 1


async def test_the_rest_of_a_batch_dropped_returns_none_and_defers_the_cancellation() -> None:
    trio_aio.lowlevel.configure_threads(1)
    workers = _workers.current()
    release, started = threading.Event(), threading.Event()
    outcome: list[object] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(workers.run, held, release, started, 1)
        await wait_for(started)
        with anyio.CancelScope() as scope:

            async def rest() -> None:
                outcome.append(await workers.run_rest(outcome.append, "ran"))
                await anyio.lowlevel.checkpoint()  # the cancellation arrives here
                outcome.append("not reached")

            async with anyio.create_task_group() as inner:
                inner.start_soon(rest)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
        release.set()
    assert scope.cancelled_caught
    assert outcome == [None]


async def test_a_closing_file_drops_a_call_waiting_for_a_thread() -> None:
    trio_aio.lowlevel.configure_threads(1)
    workers = _workers.current()
    release, started = threading.Event(), threading.Event()
    waiting: set[object] = set()
    outcome: list[str] = []

    async def second() -> None:
        try:
            await workers.run(outcome.append, "ran", waiting=waiting)  # type: ignore[arg-type]
        except anyio.ClosedResourceError:
            outcome.append("closed")

    async with anyio.create_task_group() as tg:
        tg.start_soon(workers.run, held, release, started, 1)
        await wait_for(started)
        tg.start_soon(second)
        await anyio.wait_all_tasks_blocked()
        assert len(waiting) == 1
        for drop in list(waiting):
            drop()  # type: ignore[operator]
        release.set()
    assert outcome == ["closed"]
    assert waiting == set()


async def test_calls_take_free_threads_in_the_order_they_came() -> None:
    trio_aio.lowlevel.configure_threads(1)
    workers = _workers.current()
    release, started = threading.Event(), threading.Event()
    order: list[int] = []
    async with anyio.create_task_group() as tg:
        tg.start_soon(workers.run, held, release, started, 1)
        await wait_for(started)
        for i in range(5):
            tg.start_soon(workers.run, order.append, i)
            await anyio.wait_all_tasks_blocked()
        assert workers.statistics().queued == 5
        release.set()
    assert order == [0, 1, 2, 3, 4]
    assert workers.statistics().max_threads == 1


async def test_an_exception_in_the_thread_is_raised_in_the_task() -> None:
    def fail() -> None:
        raise OSError(5, "boom")

    with pytest.raises(OSError, match="boom"):
        await _workers.run(fail)
    assert _workers.current().statistics().completed == 1

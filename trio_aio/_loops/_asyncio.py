"""asyncio's side of :class:`trio_aio._loops.Loop`: the primitives, nothing built on them.

Imported only when an asyncio loop runs the calling task; it never imports
trio.  One :class:`AsyncioRun` per event loop, kept in a
``WeakKeyDictionary``.

Some facts about asyncio that this relies on
--------------------------------------------

* ``Task.cancel()`` cancels the future the task is waiting on, and the task
  sees ``CancelledError`` there.  So a waiter never keeps a result in the
  future it awaits: each wait uses a fresh future that only says "look
  again", and whoever wakes it keeps the result.
* anyio on asyncio re-cancels a task in a cancelled scope on every loop
  iteration: a wait that goes on after a cancellation does so inside a
  shielded anyio scope, else each re-cancellation would wake it for nothing.
* A cancellation the waiter could not take is delivered at the task's next
  ``await``: under an anyio cancel scope anyio does it by itself (its scopes
  recognise a cancelled scope by ``current_effective_deadline() == -inf``);
  otherwise (``Task.cancel()``, ``asyncio.timeout``) the task is cancelled
  again with the same message, after ``uncancel()``, so that
  ``Task.cancelling()`` counts the request once.
* When a cancelled task's coroutine returns a value, ``Task`` discards it and
  ends cancelled: a result is returned only when the cancellation is
  deferred to a later ``await``.
* ``asyncio.run``, ``asyncio.Runner`` and anyio call
  ``loop.shutdown_asyncgens()`` after the last task, whether the run
  returned or raised: the one hook a library gets at the end of a loop.  A
  sentinel async generator started on the loop is closed there, and ends
  the run's :class:`AsyncioRun`.  A loop that never gets there ends it when
  it is garbage-collected.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from . import Run

T = TypeVar("T")

# The executor's own limit on threads: never reached (see AsyncioRun.start_thread).
_EXECUTOR_THREADS = 1 << 12
# The shutdown sentinel's keeper timer wakes the loop this often (seconds).
_KEEP_INTERVAL = 3600.0

ClosedResourceError = anyio.ClosedResourceError


def _rearm(exc: asyncio.CancelledError) -> None:
    """Deliver a cancellation caught while finishing some work at the next ``await``."""
    if anyio.current_effective_deadline() == -math.inf:
        return  # an anyio scope is cancelled: anyio delivers it again itself
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - we are always in a task here
        return
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        uncancel()
    task.cancel(exc.args[0] if exc.args else None)


class _Waiter:
    """A task parked on fresh futures (the protocol is in ``_loops/__init__.py``)."""

    __slots__ = ("_caught", "_fut", "_woken")

    def __init__(self) -> None:
        self._fut: asyncio.Future[None] | None = None
        self._woken = False
        self._caught: asyncio.CancelledError | None = None

    def wake(self) -> None:
        self._woken = True
        fut = self._fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def park(self, abort: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        while not self._woken:
            fut = self._fut = loop.create_future()
            try:
                if self._caught is None:
                    await fut
                else:
                    with anyio.CancelScope(shield=True):
                        await fut
            except asyncio.CancelledError as exc:
                if self._caught is None:
                    if not self._woken and abort():
                        raise
                    # (a cycle: the exception's traceback holds this frame,
                    # which holds self; finish() breaks it)
                    self._caught = exc
        self._fut = None

    def finish(self, cancelled: bool) -> None:
        caught = self._caught
        if caught is None:
            return
        self._caught = None
        try:
            if cancelled:
                raise caught
            _rearm(caught)
        finally:
            del caught

    @property
    def interrupted(self) -> bool:
        return self._caught is not None


class _Ticker:
    __slots__ = ("_fn", "_scheduled")

    def __init__(self, fn: Callable[[], object]) -> None:
        # (no reference to the loop: the run that holds this is the value of
        # a WeakKeyDictionary keyed by the loop, and must not keep it alive)
        self._fn = fn
        self._scheduled = False

    def request(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self._scheduled = False
        self._fn()


class _Watch:
    __slots__ = ("_fd", "_loop_ref")

    def __init__(self, loop: asyncio.AbstractEventLoop, fd: int, fn: Callable[[], object]) -> None:
        loop.add_reader(fd, fn)
        self._fd = fd
        self._loop_ref = weakref.ref(loop)  # (held by the run, held by the loop's finalizer)

    def ensure(self) -> None:
        pass

    def close(self) -> None:
        loop = self._loop_ref()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self._fd)


class AsyncioRun(Run):
    """One asyncio event loop: its values, its end, and the primitives bound to it."""

    __slots__ = ("__weakref__", "_busy", "_executor", "_loop_ref", "readers", "writers")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop_ref = weakref.ref(loop)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._busy = 0  # jobs started and not yet delivered
        self.readers: dict[int, asyncio.Future[None]] = {}
        self.writers: dict[int, asyncio.Future[None]] = {}
        self.at_end(self._shutdown_threads)

    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_ref()
        if loop is None:  # pragma: no cover - the run ends before its loop goes
            raise RuntimeError("trio_aio: this event loop is gone")
        return loop

    def ticker(self, fn: Callable[[], object]) -> _Ticker:
        return _Ticker(fn)

    def watch(self, fd: int, fn: Callable[[], object], busy: Callable[[], bool]) -> _Watch:
        return _Watch(self._loop(), fd, fn)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        self._loop().call_soon(fn, *args)

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        self._loop().call_later(delay, fn)

    def start_thread(
        self, fn: Callable[[], T], done: Callable[[T | None, BaseException | None], object]
    ) -> None:
        # The limit is the callers' (``_workers.py``): the executor's own is
        # far above it, so a job never waits in the executor's queue, where
        # it could not be told from one that runs.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                _EXECUTOR_THREADS, thread_name_prefix="trio_aio"
            )
        loop = self._loop()
        self._busy += 1

        def finished(result: T | None, exc: BaseException | None) -> None:
            self._busy -= 1
            done(result, exc)

        def deliver(job: concurrent.futures.Future[T]) -> None:
            exc = job.exception()
            result = None if exc is not None else job.result()
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(finished, result, exc)
            del exc  # (no cycle through this frame)

        self._executor.submit(fn).add_done_callback(deliver)

    def _shutdown_threads(self) -> None:
        """Shut the executor down; join its threads unless one is still busy.

        At the loop's end no task waits for a job any more (every operation
        waits for its thread), so normally the threads are idle and joining
        them takes a moment.  A job still running is not waited for: its
        thread exits when it is done.  Something that uses threads after
        this (another async generator's cleanup) gets a new executor, shut
        down when the loop is collected.
        """
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=not self._busy, cancel_futures=True)


_RUNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncioRun] = (
    weakref.WeakKeyDictionary()
)


def _collected(run: AsyncioRun) -> None:
    """The loop was collected without a shutdown: end its run now."""
    run.end()
    executor, run._executor = run._executor, None
    if executor is not None:
        executor.shutdown(wait=False)


async def _at_shutdown(run: AsyncioRun) -> AsyncGenerator[None]:
    """End ``run`` when the loop shuts its async generators down (see the module docstring)."""
    try:
        yield
    finally:
        run.end()


def _keep(sentinel: object) -> None:
    """A timer that keeps the shutdown sentinel alive, re-armed until the loop closes."""
    asyncio.get_running_loop().call_later(_KEEP_INTERVAL, _keep, sentinel)


def _run() -> AsyncioRun:
    loop = asyncio.get_running_loop()
    run = _RUNS.get(loop)
    if run is None:
        run = _RUNS[loop] = AsyncioRun(loop)
        weakref.finalize(loop, _collected, run)
        # Started here, the sentinel generator is registered by the loop's
        # first-iteration hook, so shutdown_asyncgens() will aclose() it.  Only
        # the loop may keep it alive (here, as the argument of a timer it
        # holds): the generator holds the loop (through its finalizer hook),
        # so held from the run it would keep the loop from being collected.
        # loop.close() drops the timer.
        sentinel = _at_shutdown(run)
        with contextlib.suppress(StopIteration):
            sentinel.asend(None).send(None)
        loop.call_later(_KEEP_INTERVAL, _keep, sentinel)
    return run


# -- readiness -------------------------------------------------------------------------


async def _wait_ready(fd: int, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    run = _run()
    waiting = run.writers if writing else run.readers
    if fd in waiting:
        raise anyio.BusyResourceError(
            "waiting for this fd" + (" to be writable" if writing else "")
        )
    fut: asyncio.Future[None] = loop.create_future()
    waiting[fd] = fut
    add, remove = (
        (loop.add_writer, loop.remove_writer) if writing else (loop.add_reader, loop.remove_reader)
    )

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    add(fd, ready)
    try:
        await fut
    finally:
        if waiting.get(fd) is fut:
            del waiting[fd]
            remove(fd)


async def _wait_readable(fd: int) -> None:
    await _wait_ready(fd, writing=False)


async def _wait_writable(fd: int) -> None:
    await _wait_ready(fd, writing=True)


def _notify_closing(fd: int) -> None:
    loop = asyncio.get_running_loop()
    run = _run()
    for waiting, remove in (
        (run.readers, loop.remove_reader),
        (run.writers, loop.remove_writer),
    ):
        fut = waiting.pop(fd, None)
        if fut is not None:
            remove(fd)
            if not fut.done():
                fut.set_exception(ClosedResourceError("file was closed during the operation"))


# -- the Loop interface ------------------------------------------------------------------


async def _checkpoint() -> None:
    await asyncio.sleep(0)


async def _cancel_shielded_checkpoint() -> None:
    """Yield once; a cancellation that arrives meanwhile is delivered at the next ``await``."""
    try:
        await asyncio.sleep(0)
    except asyncio.CancelledError as exc:
        _rearm(exc)


class AsyncioLoop:
    """asyncio's side of :class:`trio_aio._loops.Loop`."""

    name = "asyncio"
    ClosedResourceError = ClosedResourceError
    Cancelled = asyncio.CancelledError
    checkpoint = staticmethod(_checkpoint)
    checkpoint_if_cancelled = staticmethod(anyio.lowlevel.checkpoint_if_cancelled)
    cancel_shielded_checkpoint = staticmethod(_cancel_shielded_checkpoint)
    waiter = _Waiter
    run = staticmethod(_run)
    wait_readable = staticmethod(_wait_readable)
    wait_writable = staticmethod(_wait_writable)
    notify_closing = staticmethod(_notify_closing)


LOOP = AsyncioLoop()

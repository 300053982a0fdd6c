"""asyncio glue: the io_uring engine and worker threads on an asyncio event loop.

Imported only when an asyncio loop runs the calling task; it never imports
trio.  One :class:`_LoopState` per event loop (kept in a
``WeakKeyDictionary``) holds the ring driver and the worker threads, both
created on first use.

* The ring's fd is watched with ``loop.add_reader``; the callback reaps
  completions and wakes the waiting tasks.
* Submissions are batched per loop iteration: the first operation started
  in an iteration schedules one ``call_soon`` flush, which hands everything
  queued by then to the kernel in one ``io_uring_enter``.
* When the loop shuts down (``asyncio.run``, ``asyncio.Runner`` and anyio
  call ``loop.shutdown_asyncgens()`` however the run ended), one per-loop
  hook closes the ring and shuts the worker threads down (see
  :func:`_at_shutdown`).  Otherwise both go when the loop is
  garbage-collected.
* After the kernel refused a submission (``EAGAIN``, ``EBUSY``, a partial
  submit), a timer flushes again: nothing else would wake the loop for
  operations the kernel never took.

Some facts about asyncio cancellation that this relies on
---------------------------------------------------------

* ``Task.cancel()`` cancels the future the task is waiting on, and the task
  sees ``CancelledError`` there.  So no operation's result is ever kept in a
  future the task awaits: each wait uses a fresh future that only says "look
  again", and the result stays in the operation.
* A cancelled operation that the kernel (or a worker thread) already holds
  is asked to stop (``IORING_OP_ASYNC_CANCEL``, or ``Future.cancel()`` on a
  job still queued for a thread) and waited for, catching further
  cancellations meanwhile.  If it was stopped, the first ``CancelledError``
  is raised.  If it completed anyway, its result is returned and the
  cancellation is delivered at the task's next ``await``:

  - under an anyio cancel scope, anyio delivers it again by itself (it
    re-cancels a task in a cancelled scope on every loop iteration);
  - otherwise (``Task.cancel()`` from plain asyncio code, ``asyncio.timeout``)
    the task is cancelled again with the same message, after ``uncancel()``,
    so ``Task.cancelling()`` counts the request once.
* anyio's scopes recognise a cancelled scope through
  ``anyio.current_effective_deadline() == -inf``; that is how the two cases
  above are told apart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import math
import os
import weakref
from collections.abc import AsyncGenerator, Callable
from typing import Any, TypeVar

import anyio
import anyio.lowlevel

from .._ring._engine import DONE, Engine, EngineClosedError, Op
from .._statistics import Statistics
from . import Batch, RingConfig, ThreadCounters, ThreadsConfig

T = TypeVar("T")

_CANCELLED_RESULTS = (-errno.ECANCELED, -errno.EINTR)

# After the kernel refused a submission, flush again this much later (seconds).
RETRY_INTERVAL = 0.001
# The shutdown sentinel's keeper timer wakes the loop this often (seconds).
_KEEP_INTERVAL = 3600.0

ClosedResourceError = anyio.ClosedResourceError


class _Waiter:
    """Wakes one task, any number of times: each wait has a fresh future."""

    __slots__ = ("fut",)

    def __init__(self) -> None:
        self.fut: asyncio.Future[None] | None = None

    def wake(self, *_: object) -> None:
        fut = self.fut
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def wait(
        self, done: Callable[[], bool], on_cancel: Callable[[], bool]
    ) -> asyncio.CancelledError | None:
        """Wait until ``done()``, across cancellations; returns the first one caught.

        On the first cancellation ``on_cancel()`` is called; if it returns
        True (nothing more will happen), the cancellation is raised at once.
        After it, the wait goes on in a shielded anyio scope: anyio re-cancels
        a task in a cancelled scope on every loop iteration, and each time
        would wake us for nothing.
        """
        caught: asyncio.CancelledError | None = None
        loop = asyncio.get_running_loop()
        while not done():
            fut = self.fut = loop.create_future()
            try:
                if caught is None:
                    await fut
                else:
                    with anyio.CancelScope(shield=True):
                        await fut
            except asyncio.CancelledError as exc:
                if caught is None:
                    caught = exc
                    if not done() and on_cancel():
                        del caught  # (see _finish)
                        raise
        self.fut = None
        return caught


def _rearm(exc: asyncio.CancelledError) -> None:
    """Deliver a cancellation caught while finishing an operation at the next ``await``."""
    if anyio.current_effective_deadline() == -math.inf:
        return  # an anyio scope is cancelled: anyio delivers it again itself
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - we are always in a task here
        return
    uncancel = getattr(task, "uncancel", None)  # Python 3.11+
    if uncancel is not None:
        uncancel()
    task.cancel(exc.args[0] if exc.args else None)


def _finish(caught: asyncio.CancelledError | None, was_cancelled: bool) -> None:
    """After an operation that a cancellation reached: raise it, or re-arm it.

    Callers ``del`` their own reference to ``caught`` once this returns or
    raises, and so does this function: a caught exception kept in a local of
    a frame its traceback holds is a reference cycle, which keeps every
    frame of the traceback (and whatever they hold) alive until the garbage
    collector runs.
    """
    if caught is None:
        return
    try:
        if was_cancelled:
            raise caught
        _rearm(caught)
    finally:
        del caught


# -- the ring ---------------------------------------------------------------------------


def _deliver(op: Op) -> None:
    waiter = op.waiter
    if type(waiter) is Batch:
        waiter.one_done()
    else:
        waiter.wake()


class AsyncioDriver:
    """One event loop's ring: its engine, its reader callback and its flush."""

    def __init__(self, loop: asyncio.AbstractEventLoop, config: RingConfig) -> None:
        self.engine = Engine(config.entries, config.cq_entries, config.max_in_flight)
        self.config = config
        self.pid = os.getpid()
        self._flush_scheduled = False
        self._retry_scheduled = False  # (a flag, not the handle: a handle holds the loop)
        try:
            loop.add_reader(self.engine.fd, self._dispatch)
        except BaseException:
            self.engine.close()
            raise

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        engine = self.engine
        if engine.needs_flush and not engine.closed:
            for op in engine.flush():
                _deliver(op)
            if engine.needs_retry and not self._retry_scheduled:
                # The kernel refused (EAGAIN, EBUSY, partial): nothing it does
                # will wake us for what it never took.  Try again soon.
                self._retry_scheduled = True
                asyncio.get_running_loop().call_later(RETRY_INTERVAL, self._retry)

    def _retry(self) -> None:
        self._retry_scheduled = False
        self._schedule_flush()

    def close(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Close the ring if nothing is queued or in flight (else leave it to the finalizer)."""
        engine = self.engine
        if engine.idle and not engine.closed and self.pid == os.getpid():
            if loop is not None and not loop.is_closed():
                loop.remove_reader(engine.fd)
            engine.close()

    def _dispatch(self) -> None:
        engine = self.engine
        for op in engine.reap():
            _deliver(op)
        if engine.needs_flush:  # operations waiting for room in the kernel
            self._schedule_flush()

    def _start(self, op: Op, waiter: object) -> None:
        if self.engine.closed and self.pid != os.getpid():
            # (a forked child's copy is closed: see _after_fork_in_child)
            raise RuntimeError(
                "trio_aio: this event loop was inherited across fork(); "
                "start a new one in the child process"
            )
        self.engine.start(op)
        op.waiter = waiter
        self._schedule_flush()

    def _cancel(self, op: Op) -> bool:
        """Cancel ``op``; True if it was dropped before the kernel saw it."""
        if self.engine.cancel(op):
            return True
        self._schedule_flush()
        return False

    async def run(self, op: Op) -> int:
        """Start ``op`` and wait for its result (see the module docstring on cancellation)."""
        waiter = _Waiter()
        self._start(op, waiter)
        caught = await waiter.wait(lambda: op.state == DONE, lambda: self._cancel(op))
        res = op.result
        try:
            _finish(caught, res in _CANCELLED_RESULTS)
        finally:
            del caught
        return res

    async def run_many(self, ops: list[Op]) -> list[int]:
        """Start every op of a batch and wait, woken once, until all are done.

        Cancelled: operations still queued are dropped (``-ECANCELED``) and
        the kernel is asked for the others; if none of them ran, the
        cancellation is raised, otherwise the results are returned.
        """
        if not ops:
            await asyncio.sleep(0)
            return []
        waiter = _Waiter()
        batch = Batch(waiter.wake, len(ops))
        for op in ops:
            self._start(op, batch)

        def cancel_all() -> bool:
            for op in ops:
                if op.state != DONE and self._cancel(op):
                    op.result = -errno.ECANCELED
                    batch.remaining -= 1
            return False

        caught = await waiter.wait(lambda: batch.remaining == 0, cancel_all)
        results = [op.result for op in ops]
        try:
            _finish(caught, all(res in _CANCELLED_RESULTS for res in results))
        finally:
            del caught
        return results

    async def run_shielded(self, op: Op) -> int:
        """Start ``op`` and wait for its result, even if cancelled meanwhile."""
        waiter = _Waiter()
        self._start(op, waiter)
        caught = await waiter.wait(lambda: op.state == DONE, lambda: False)
        try:
            _finish(caught, False)
        finally:
            del caught
        return op.result

    def cancel(self, op: Op) -> None:
        """Cancel ``op`` for someone other than its waiter (a closing file)."""
        if self._cancel(op):
            op.result = -errno.ECANCELED
            op.state = DONE
            _deliver(op)


# -- worker threads -------------------------------------------------------------------


class AsyncioThreads:
    """One event loop's worker threads: a ``ThreadPoolExecutor`` of our own.

    A job still in the executor's queue is dropped by ``Future.cancel()``; one
    a thread has started is waited for.
    """

    def __init__(self, config: ThreadsConfig) -> None:
        self.counters = ThreadCounters()
        self.max_threads = config.max_threads
        self._executor = concurrent.futures.ThreadPoolExecutor(
            config.max_threads, thread_name_prefix="trio_aio"
        )
        self._jobs: set[concurrent.futures.Future[Any]] = set()  # counted ones
        self._unfinished: set[concurrent.futures.Future[Any]] = set()  # every one

    def shutdown(self) -> None:
        """Shut the executor down; wait for its threads to exit if none is busy.

        At the loop's shutdown no task waits for a job any more (every
        operation waits for its thread), so normally the threads are idle,
        and joining them takes a moment.  A job still running is not waited
        for: its thread exits when it is done.
        """
        busy = any(not job.done() for job in self._unfinished)
        self._executor.shutdown(wait=not busy, cancel_futures=True)

    async def _run(
        self, counted: bool, waiting: set[Callable[[], object]], fn: Any, *args: Any
    ) -> Any:
        """Run a job; ``counted`` ones count in the statistics and may be dropped."""
        counters = self.counters if counted else ThreadCounters()
        loop = asyncio.get_running_loop()
        waiter = _Waiter()
        job = self._executor.submit(fn, *args)
        jobs = self._jobs if counted else set()
        jobs.add(job)
        unfinished = self._unfinished
        unfinished.add(job)
        counters.submitted += 1
        counters.threaded += 1

        def woken(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(waiter.wake)

        job.add_done_callback(woken)
        waiting.add(job.cancel)
        try:
            caught = await waiter.wait(job.done, job.cancel if counted else lambda: False)
        except asyncio.CancelledError:
            counters.submitted -= 1
            counters.threaded -= 1
            counters.dropped += 1
            raise
        finally:
            waiting.discard(job.cancel)
            jobs.discard(job)
            unfinished.discard(job)
        try:
            if job.cancelled():  # by a closing file, before a thread took it
                counters.submitted -= 1
                counters.threaded -= 1
                counters.dropped += 1
                _finish(caught, False)
                raise ClosedResourceError("file was closed during the operation")
            counters.completed += 1
            if caught is not None:
                counters.cancelled += 1
            _finish(caught, False)
        finally:
            del caught
        try:
            return job.result()
        finally:
            del job  # a job's exception is raised with this frame in its traceback

    async def run(self, waiting: set[Callable[[], object]], fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a thread (see :class:`~trio_aio._loops.ThreadRunner`)."""
        result: T = await self._run(True, waiting, fn, *args)
        return result

    async def run_shielded(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a thread; cancellation waits for it."""
        result: T = await self._run(False, set(), fn, *args)
        return result

    def statistics(self) -> Statistics:
        """The counters as :class:`trio_aio.Statistics`."""
        running = sum(1 for job in self._jobs if job.running())
        waiting = sum(1 for job in self._jobs if not job.done()) - running
        return self.counters.statistics(running, waiting, self.max_threads)


# -- per-loop state ---------------------------------------------------------------------


class _LoopState:
    __slots__ = (
        "readers",
        "ring",
        "ring_config",
        "threads",
        "threads_config",
        "writers",
    )

    def __init__(self) -> None:
        self.ring_config = RingConfig()
        self.threads_config = ThreadsConfig()
        self.ring: AsyncioDriver | None = None
        self.threads: AsyncioThreads | None = None
        self.readers: dict[int, asyncio.Future[None]] = {}
        self.writers: dict[int, asyncio.Future[None]] = {}


_STATES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
    weakref.WeakKeyDictionary()
)


def _close(state: _LoopState) -> None:
    """The loop was collected: close what its shutdown hook did not."""
    if state.ring is not None and not state.ring.engine.closed:
        if state.ring.pid == os.getpid():
            state.ring.engine.close()
        else:
            state.ring.engine.forget()
    if state.threads is not None:
        state.threads._executor.shutdown(wait=False)


async def _at_shutdown(
    loop_ref: weakref.ref[asyncio.AbstractEventLoop], state: _LoopState
) -> AsyncGenerator[None]:
    """Close the loop's ring and shut its worker threads down when the loop shuts down.

    ``asyncio.run`` (and ``asyncio.Runner``, which anyio uses) calls
    ``loop.shutdown_asyncgens()`` after the last task has finished and
    before the loop closes, whether the run returned or raised: the one hook
    a library gets at the end of a loop.  An operation cannot be in flight
    then (its task would still be waiting); if one is anyway, the ring is
    left to the finalizer that runs when the loop is collected.  Something
    that uses threads after this (another async generator's cleanup, say)
    gets a new executor, which that finalizer shuts down.
    """
    try:
        yield
    finally:
        if state.ring is not None:
            state.ring.close(loop_ref())
        threads, state.threads = state.threads, None
        if threads is not None:
            threads.shutdown()


def _keep(sentinel: object) -> None:
    """A timer that keeps the shutdown sentinel alive, re-armed until the loop closes."""
    asyncio.get_running_loop().call_later(_KEEP_INTERVAL, _keep, sentinel)


def _state() -> _LoopState:
    loop = asyncio.get_running_loop()
    state = _STATES.get(loop)
    if state is None:
        state = _STATES[loop] = _LoopState()
        weakref.finalize(loop, _close, state)
        # Started here, the sentinel generator is registered by the loop's
        # first-iteration hook, so shutdown_asyncgens() will aclose() it.  Only
        # the loop may keep it alive (here, as the argument of a timer it
        # holds): the generator holds the loop (through its finalizer hook),
        # so held from the state it would keep the loop from being collected.
        # loop.close() drops the timer.
        sentinel = _at_shutdown(weakref.ref(loop), state)
        with contextlib.suppress(StopIteration):
            sentinel.asend(None).send(None)
        loop.call_later(_KEEP_INTERVAL, _keep, sentinel)
    return state


def _after_fork_in_child() -> None:
    for state in list(_STATES.values()):
        if state.ring is not None:
            state.ring.engine.forget()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- readiness -------------------------------------------------------------------------


async def _wait_ready(fd: int, writing: bool) -> None:
    loop = asyncio.get_running_loop()
    state = _state()
    waiting = state.writers if writing else state.readers
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
    state = _state()
    for waiting, remove in (
        (state.readers, loop.remove_reader),
        (state.writers, loop.remove_writer),
    ):
        fut = waiting.pop(fd, None)
        if fut is not None:
            remove(fd)
            if not fut.done():
                fut.set_exception(ClosedResourceError("file was closed during the operation"))


# -- the Loop interface ------------------------------------------------------------------


class _Event:
    """A one-shot flag (the :class:`~trio_aio._loops.Event` of this glue)."""

    __slots__ = ("_set", "_waiter")

    def __init__(self) -> None:
        self._set = False
        self._waiter = _Waiter()

    def set(self) -> None:
        self._set = True
        self._waiter.wake()

    def is_set(self) -> bool:
        return self._set

    async def wait_shielded(self) -> None:
        caught = await self._waiter.wait(self.is_set, lambda: False)
        try:
            _finish(caught, False)
        finally:
            del caught


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
    event = _Event
    wait_readable = staticmethod(_wait_readable)
    wait_writable = staticmethod(_wait_writable)
    notify_closing = staticmethod(_notify_closing)

    @staticmethod
    def ring() -> AsyncioDriver:
        """The current loop's driver, created on first use."""
        state = _state()
        driver = state.ring
        if driver is None:
            driver = state.ring = AsyncioDriver(asyncio.get_running_loop(), state.ring_config)
        elif driver.engine.closed:
            raise EngineClosedError("trio_aio: this loop's io_uring ring is already closed")
        return driver

    @staticmethod
    def ring_or_none() -> AsyncioDriver | None:
        """The current loop's driver, if it has one."""
        return _state().ring

    @staticmethod
    def configure_ring(config: RingConfig) -> None:
        """Set the current loop's ring configuration, before its first operation."""
        state = _state()
        if state.ring is not None:
            raise RuntimeError(
                "trio_aio: configure_ring() must be called before the first operation"
            )
        state.ring_config = config

    @staticmethod
    def threads() -> AsyncioThreads:
        """The current loop's worker threads, created on first use."""
        state = _state()
        if state.threads is None:
            state.threads = AsyncioThreads(state.threads_config)
        return state.threads

    @staticmethod
    def threads_or_none() -> AsyncioThreads | None:
        """The current loop's worker threads, if it has used any."""
        return _state().threads

    @staticmethod
    def threads_config() -> ThreadsConfig:
        """The current loop's thread configuration."""
        return _state().threads_config

    @staticmethod
    def configure_threads(config: ThreadsConfig) -> None:
        """Set the current loop's thread configuration, before its first thread."""
        state = _state()
        if state.threads is not None:
            raise RuntimeError(
                "trio_aio: configure_threads() must be called before the loop's first "
                "operation on the thread backend"
            )
        state.threads_config = config


LOOP = AsyncioLoop()

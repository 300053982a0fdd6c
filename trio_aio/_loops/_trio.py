"""trio glue for the io_uring engine: one ring per ``trio.run``.

The engine (``trio_aio/_ring/_engine.py``) knows nothing of trio; this module
is the thin layer between the two:

* A :class:`~trio.lowlevel.RunVar` holds one :class:`TrioDriver` per run,
  created on first use.
* The driver is a :class:`trio.abc.Instrument`: its ``before_io_wait`` hook
  runs once per scheduler pass, just before trio waits for I/O, and submits
  everything queued during that pass in one ``io_uring_enter``.  32 tasks that
  each start a read in the same pass cost one system call.
* A system task waits for the ring's fd with
  :func:`trio.lowlevel.wait_readable`, reaps completions and reschedules the
  waiting tasks.  When the run ends it waits (shielded) until the kernel has
  finished every operation; the ring is closed by the instrument's
  ``after_run`` hook, once no task of the run is left.

Some facts about trio that this relies on
-----------------------------------------

* ``before_io_wait`` gets a timeout trio has already computed: a task
  rescheduled from inside the hook would not stop trio from sleeping.  So the
  hook only submits; completions always arrive through the ring's fd.  (The
  one exception, an ``io_uring_enter`` that fails for good, is delivered with
  ``run_sync_soon``, which wakes the loop.)
* For the same reason, after the kernel refused a submission (``EAGAIN``,
  ``EBUSY``, a partial submit) the hook cannot shorten the wait trio is about
  to do (possibly forever: nothing the kernel does will wake us for what it
  never took).  It spawns a system task that sleeps a millisecond; trio's
  wait then ends by then, and that scheduler pass's hook flushes again.
* In guest mode the hook runs on the host's thread and the I/O wait on a
  worker thread: submissions therefore still come from one thread, the one
  that runs trio's scheduler.
* ``wait_task_rescheduled``'s abort function is called at most once.
  ``Abort.SUCCEEDED`` is returned only for an operation still in our queue
  (nothing will ever complete it); for one the kernel holds we send
  ``IORING_OP_ASYNC_CANCEL``, return ``Abort.FAILED`` and wait for the
  operation's own completion, then call the saved ``raise_cancel`` if the
  kernel did cancel it.
"""

from __future__ import annotations

import errno
import math
import os
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import outcome
import trio
from trio.lowlevel import (
    Abort,
    RunVar,
    current_task,
    reschedule,
    wait_task_rescheduled,
)

from .._ring._engine import DONE, Engine, EngineClosedError, Op
from .._statistics import Statistics
from . import Batch, RingConfig, ThreadCounters, ThreadsConfig

T = TypeVar("T")

_CANCELLED_RESULTS = (-errno.ECANCELED, -errno.EINTR)

# After the kernel refused a submission, flush again this much later (seconds).
RETRY_INTERVAL = 0.001


class ClosedResourceError(trio.ClosedResourceError, anyio.ClosedResourceError):
    """The file was closed (both trio's and anyio's ``ClosedResourceError``)."""

    __module__ = "trio_aio"


_CONFIG: RunVar[RingConfig] = RunVar("trio_aio.ring_config", default=RingConfig())
_DRIVER: RunVar[TrioDriver | None] = RunVar("trio_aio.driver", default=None)

# Every live driver in this process, so that a forked child can drop its
# copies of them (see _after_fork_in_child).
_LIVE: weakref.WeakSet[TrioDriver] = weakref.WeakSet()


def _deliver(op: Op) -> None:
    """Wake whoever waits for ``op``: its task, or its batch."""
    waiter = op.waiter
    if type(waiter) is Batch:
        waiter.one_done()
    else:
        reschedule(waiter, outcome.Value(op.result))


class TrioDriver(trio.abc.Instrument):
    """One run's ring: its engine, the reaper task and the flush hook."""

    def __init__(self, config: RingConfig) -> None:
        self.engine = Engine(config.entries, config.cq_entries, config.max_in_flight)
        self.config = config
        self.pid = os.getpid()
        self._token = trio.lowlevel.current_trio_token()
        self._reaping = False
        self._retry_armed = False
        _LIVE.add(self)

    # -- trio.abc.Instrument -------------------------------------------------

    def before_io_wait(self, timeout: float) -> None:
        """Submit everything queued during this scheduler pass."""
        engine = self.engine
        if engine.needs_flush and not engine.closed and not self._retry_armed:
            failed = engine.flush()
            if failed:
                self._token.run_sync_soon(self._wake, failed)
            if engine.needs_retry:
                # Flush again in RETRY_INTERVAL, not before: the hooks of the
                # passes until then leave the queue alone (a retry on every
                # pass would spin for as long as the kernel refuses).
                self._retry_armed = True
                self._token.run_sync_soon(self._arm_retry)

    def _arm_retry(self) -> None:
        """Start the timer of a retry (see :meth:`before_io_wait`).

        A system task that sleeps ``RETRY_INTERVAL`` is the timer: trio's
        wait then ends by then, and the hook of the pass after it flushes.
        Spawned here, through ``run_sync_soon``: a task spawned from inside
        the hook would not shorten the wait trio has already decided on.
        """
        trio.lowlevel.spawn_system_task(self._retry_soon, name="trio_aio.retry")

    async def _retry_soon(self) -> None:
        try:
            await trio.sleep(RETRY_INTERVAL)
        finally:
            self._retry_armed = False

    # -- waiting -------------------------------------------------------------

    @staticmethod
    def _wake(ops: list[Op]) -> None:
        for op in ops:
            _deliver(op)

    async def run(self, op: Op) -> int:
        """Start ``op`` and wait for its result (``res`` of its CQE).

        A checkpoint.  Raises :class:`trio.Cancelled` if cancelled before the
        kernel took the operation, or if the kernel cancelled it; returns the
        result if the kernel completed it anyway (the cancellation is then
        delivered at the next checkpoint).
        """
        engine = self.engine
        if not self._reaping:
            self._ensure_reaper()
        engine.start(op)
        op.waiter = current_task()

        def abort(raise_cancel: Any) -> Abort:
            if engine.cancel(op):
                return Abort.SUCCEEDED
            op.raise_cancel = raise_cancel
            return Abort.FAILED

        res: int = await wait_task_rescheduled(abort)
        if op.raise_cancel is not None and res in _CANCELLED_RESULTS:
            op.raise_cancel()
        return res

    async def run_many(self, ops: list[Op]) -> list[int]:
        """Start every op of a batch and wait, woken once, until all are done.

        A checkpoint.  Cancelled: operations still queued are dropped
        (result ``-ECANCELED``) and the kernel is asked for the others; if
        none of them ran, :class:`trio.Cancelled` is raised.  Otherwise the
        results are returned (``-ECANCELED`` for those that did not run) and
        the cancellation arrives at the next checkpoint: a batch part of
        which happened is never reported as simply cancelled.
        """
        if not ops:
            await trio.lowlevel.checkpoint()
            return []
        engine = self.engine
        if not self._reaping:
            self._ensure_reaper()
        task = current_task()
        batch = Batch(lambda: reschedule(task, outcome.Value(None)), len(ops))
        for op in ops:
            engine.start(op)
            op.waiter = batch
        saved: list[Any] = []

        def abort(raise_cancel: Any) -> Abort:
            ran = False
            for op in ops:
                if op.state == DONE:
                    ran = ran or op.result not in _CANCELLED_RESULTS
                elif engine.cancel(op):  # dropped: no completion will come
                    op.result = -errno.ECANCELED
                    batch.remaining -= 1
                else:
                    ran = True  # the kernel has it: its completion will come
            if not ran and batch.remaining == 0:
                return Abort.SUCCEEDED
            saved.append(raise_cancel)
            if batch.remaining == 0:  # the rest were done already: wake up soon
                batch.remaining = 1
                self._token.run_sync_soon(batch.one_done)
            return Abort.FAILED

        await wait_task_rescheduled(abort)
        results = [op.result for op in ops]
        if saved and all(res in _CANCELLED_RESULTS for res in results):
            saved[0]()
        return results

    async def run_shielded(self, op: Op) -> int:
        """Start ``op`` and wait for its result, even if cancelled meanwhile."""
        with trio.CancelScope(shield=True):
            res = await self.run(op)
        return res

    def cancel(self, op: Op) -> None:
        """Cancel ``op`` on behalf of someone other than its waiter (a closing file).

        Its waiter wakes with ``-ECANCELED`` if the kernel never had it or gave
        it up, or with its real result.
        """
        if self.engine.cancel(op):
            op.result = -errno.ECANCELED
            _deliver(op)

    # -- the reaper ----------------------------------------------------------

    def _dispatch(self) -> None:
        for op in self.engine.reap():
            _deliver(op)

    def _ensure_reaper(self) -> None:
        trio.lowlevel.spawn_system_task(self._reaper, name="trio_aio.reaper")
        self._reaping = True

    async def _reaper(self) -> None:
        """Wake tasks as their operations complete.

        When the run ends, trio cancels this task together with every other
        system task.  It then keeps reaping (shielded) until nothing is in
        flight, and exits; a task that starts an operation later in the
        teardown (a shielded cleanup, say) spawns a new reaper.  The ring
        itself is closed in :meth:`after_run`, when no task is left.
        """
        engine = self.engine
        try:
            while True:
                await trio.lowlevel.wait_readable(engine.fd)
                self._dispatch()
        finally:
            with trio.CancelScope(shield=True):
                self._dispatch()
                while not engine.idle:
                    await trio.lowlevel.wait_readable(engine.fd)
                    self._dispatch()
            self._reaping = False

    def after_run(self) -> None:
        """Close the ring: every task of the run is gone, and so is every operation."""
        self.engine.close()
        _LIVE.discard(self)


def current_driver() -> TrioDriver:
    """The current run's driver, created (with its ring) on first use."""
    driver = _DRIVER.get()
    if driver is None:
        driver = TrioDriver(_CONFIG.get())
        _DRIVER.set(driver)
        trio.lowlevel.add_instrument(driver)
    elif driver.engine.closed:
        # (a forked child's copy is closed too: see _after_fork_in_child)
        if driver.pid != os.getpid():
            raise RuntimeError(
                "trio_aio: this trio run was inherited across fork(); "
                "start a new trio.run in the child process"
            )
        raise EngineClosedError("trio_aio: this run's io_uring ring is already closed")
    return driver


def current_driver_or_none() -> TrioDriver | None:
    """The current run's driver if one exists, without creating it."""
    return _DRIVER.get()


def configure(config: RingConfig) -> None:
    """Set the ring configuration of the current run, before its first operation."""
    if _DRIVER.get() is not None:
        raise RuntimeError("trio_aio: configure_ring() must be called before the first operation")
    _CONFIG.set(config)


# -- worker threads ------------------------------------------------------------------


class TrioThreads:
    """One run's worker threads: ``trio.to_thread`` under a limiter of our own.

    Tokens are taken from ``limiter`` by hand, so that a closing file can
    cancel a wait for one; ``to_thread.run_sync`` itself gets a limiter that
    never waits.  ``abandon_on_cancel=False``: a thread that has started is
    waited for.
    """

    def __init__(self, config: ThreadsConfig) -> None:
        self.counters = ThreadCounters()
        self.limiter = trio.CapacityLimiter(config.max_threads)
        self._unlimited = trio.CapacityLimiter(math.inf)

    async def run(self, waiting: set[Callable[[], object]], fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a thread (see :class:`~trio_aio._loops.ThreadRunner`)."""
        counters = self.counters
        with trio.CancelScope() as scope:
            waiting.add(scope.cancel)
            try:
                await self.limiter.acquire()
            except trio.Cancelled:
                counters.dropped += 1
                raise
            finally:
                waiting.discard(scope.cancel)
        if scope.cancelled_caught:  # by a closing file, before a thread took it (counted)
            raise ClosedResourceError("file was closed during the operation")
        counters.submitted += 1
        counters.threaded += 1
        try:
            result = await trio.to_thread.run_sync(fn, *args, limiter=self._unlimited)
        except trio.Cancelled:
            # Raised only before the thread started (abandon_on_cancel=False).
            counters.submitted -= 1
            counters.threaded -= 1
            counters.dropped += 1
            raise
        except BaseException:
            counters.completed += 1
            raise
        finally:
            self.limiter.release()
        counters.completed += 1
        if trio.current_effective_deadline() == -math.inf:
            counters.cancelled += 1  # a cancellation reached it in the thread: result kept
        return result

    async def run_shielded(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a thread at once (no limiter); cancellation waits for it."""
        with trio.CancelScope(shield=True):
            result = await trio.to_thread.run_sync(fn, *args, limiter=self._unlimited)
        return result

    def statistics(self) -> Statistics:
        """The counters as :class:`trio_aio.Statistics`."""
        limiter = self.limiter
        return self.counters.statistics(
            int(limiter.borrowed_tokens),
            limiter.statistics().tasks_waiting,
            int(limiter.total_tokens),
        )


_THREADS_CONFIG: RunVar[ThreadsConfig] = RunVar("trio_aio.threads_config", default=ThreadsConfig())
_THREADS: RunVar[TrioThreads | None] = RunVar("trio_aio.threads", default=None)


# -- the Loop interface ----------------------------------------------------------------


class _Event:
    """A ``trio.Event`` that can be waited for through a cancellation."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait_shielded(self) -> None:
        with trio.CancelScope(shield=True):
            await self._event.wait()


async def _wait_readable(fd: int) -> None:
    try:
        await trio.lowlevel.wait_readable(fd)
    except trio.ClosedResourceError:
        raise ClosedResourceError("file was closed during the operation") from None


async def _wait_writable(fd: int) -> None:
    try:
        await trio.lowlevel.wait_writable(fd)
    except trio.ClosedResourceError:
        raise ClosedResourceError("file was closed during the operation") from None


class TrioLoop:
    """trio's side of :class:`trio_aio._loops.Loop`."""

    name = "trio"
    ClosedResourceError = ClosedResourceError
    Cancelled = trio.Cancelled
    checkpoint = staticmethod(trio.lowlevel.checkpoint)
    checkpoint_if_cancelled = staticmethod(trio.lowlevel.checkpoint_if_cancelled)
    cancel_shielded_checkpoint = staticmethod(trio.lowlevel.cancel_shielded_checkpoint)
    event = _Event
    wait_readable = staticmethod(_wait_readable)
    wait_writable = staticmethod(_wait_writable)
    notify_closing = staticmethod(trio.lowlevel.notify_closing)

    @staticmethod
    def ring() -> TrioDriver:
        """The current run's driver, created on first use."""
        return current_driver()

    @staticmethod
    def ring_or_none() -> TrioDriver | None:
        """The current run's driver, if it has one."""
        return current_driver_or_none()

    @staticmethod
    def configure_ring(config: RingConfig) -> None:
        """Set the current run's ring configuration."""
        configure(config)

    @staticmethod
    def threads() -> TrioThreads:
        """The current run's worker threads, created on first use."""
        threads = _THREADS.get()
        if threads is None:
            threads = TrioThreads(_THREADS_CONFIG.get())
            _THREADS.set(threads)
        return threads

    @staticmethod
    def threads_or_none() -> TrioThreads | None:
        """The current run's worker threads, if it has used any."""
        return _THREADS.get()

    @staticmethod
    def threads_config() -> ThreadsConfig:
        """The current run's thread configuration."""
        return _THREADS_CONFIG.get()

    @staticmethod
    def configure_threads(config: ThreadsConfig) -> None:
        """Set the current run's thread configuration, before its first thread."""
        if _THREADS.get() is not None:
            raise RuntimeError(
                "trio_aio: configure_threads() must be called before the run's first "
                "operation on the thread backend"
            )
        _THREADS_CONFIG.set(config)


LOOP = TrioLoop()


def _after_fork_in_child() -> None:
    # The child has copies of the parent's mappings and ring fd.  Dropping the
    # copies cannot disturb the parent; using them would.
    for driver in list(_LIVE):
        driver.engine.forget()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

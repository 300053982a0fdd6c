"""Worker threads: blocking calls off the event loop, and their cancellation rule, written once.

The thread backend does its transfers here; every backend does the rare
blocking call here (``lseek(SEEK_END)`` on a network file system, the
``open`` of a user's ``opener``).  One :class:`Workers` per run, on the
primitives of ``trio_aio/_loops/`` (a thread started at once, a waiter), so
the rule below holds the same on trio and asyncio.

How a cancelled thread call ends
--------------------------------

* Waiting for a free thread (more than ``max_threads`` calls at once): it
  leaves the queue and the cancellation is raised; nothing ran.  A waiter
  whose turn came just as it was cancelled passes the turn on.
* Running in a thread: a thread cannot be interrupted.  The task waits for
  it; its result (or its exception) is returned and the cancellation
  arrives at the next checkpoint.  Nothing it did is lost.
* A closing file drops its calls still waiting for a thread (each call may
  give a set into which it puts the function that drops it); they raise
  ``ClosedResourceError``.
* The rest of a batch part of which has run (:meth:`Workers.run_rest`):
  dropped while it waits for a thread, it returns None instead of raising,
  and the cancellation arrives at the next checkpoint: a batch part of which
  happened is never reported as simply cancelled (the batch rule of
  ``_ring/_driver.py``).

The limit is our own FIFO queue, not the thread pool's: a call queued inside
a pool could not be told from one that runs, and could not be dropped.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from . import _loops
from ._loops import ThreadsConfig
from ._statistics import Counters, ThreadsStatistics

T = TypeVar("T")

_CONFIG = "threads_config"
_WORKERS = "workers"


class _Turn:
    """A call waiting for a free thread."""

    __slots__ = ("closed", "dropped", "waiter")

    def __init__(self, waiter: _loops.Waiter) -> None:
        self.waiter = waiter
        self.closed = False  # dropped by a closing file
        self.dropped = False  # dropped by a cancellation, which is deferred (run_rest)


class Workers:
    """One run's worker threads: at most ``max_threads`` calls at once, in order."""

    def __init__(self, run: _loops.Run, config: ThreadsConfig) -> None:
        self._run = run
        self._loop = _loops.current()  # (the workers serve the run, and the loop, that made them)
        self.max_threads = config.max_threads
        self.running = 0  # counted calls holding a thread
        self._queue: deque[_Turn] = deque()
        self.counters = Counters()

    def statistics(self) -> ThreadsStatistics:
        """The counters, as the thread backend reports them."""
        counters = self.counters
        return ThreadsStatistics(
            in_flight=self.running,
            queued=len(self._queue),
            submitted=counters.submitted,
            completed=counters.completed,
            cancelled=counters.cancelled,
            dropped=counters.dropped,
            inline=counters.inline,
            max_threads=self.max_threads,
        )

    async def run(
        self,
        fn: Callable[..., T],
        *args: Any,
        waiting: set[Callable[[], object]] | None = None,
    ) -> T:
        """Run ``fn(*args)`` in a worker thread, counted and under the limit.

        A checkpoint.  Cancelled: see the module docstring.  While the call
        waits for a thread, it keeps in ``waiting`` the function that drops
        it (a closing file calls it; the call raises ``ClosedResourceError``).
        """
        await self._acquire(waiting, defer=False)
        try:
            result: T = await self._call(functools.partial(fn, *args), counted=True)
        finally:
            self._release()
        return result

    async def run_rest(
        self,
        fn: Callable[..., T],
        *args: Any,
        waiting: set[Callable[[], object]] | None = None,
    ) -> T | None:
        """:meth:`run` for the rest of a batch part of which has run.

        Cancelled while it waits for a thread: None, and the cancellation is
        delivered at the next checkpoint (see the module docstring).
        """
        if not await self._acquire(waiting, defer=True):
            return None
        try:
            result: T = await self._call(functools.partial(fn, *args), counted=True)
        finally:
            self._release()
        return result

    async def run_shielded(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a thread at once (no limit, not counted); cancellation waits."""
        result: T = await self._call(functools.partial(fn, *args), counted=False)
        return result

    async def _call(self, fn: Callable[[], T], counted: bool) -> T:
        waiter = self._loop.waiter()
        outcome: list[Any] = []

        def done(result: T | None, exc: BaseException | None) -> None:
            outcome.extend((result, exc))
            waiter.wake()

        self._run.start_thread(fn, done)
        counters = self.counters
        if counted:
            counters.submitted += 1
        await waiter.park(_loops.keep_waiting)
        if counted:
            counters.completed += 1
            counters.cancelled += waiter.interrupted
        waiter.finish(False)
        result, exc = outcome
        outcome.clear()
        if exc is not None:
            try:
                raise exc
            finally:
                del exc  # (no cycle: this frame -> the exception -> its traceback)
        return result  # type: ignore[no-any-return]

    async def _acquire(self, waiting: set[Callable[[], object]] | None, defer: bool) -> bool:
        """Take a thread, waiting in line for one if every thread is busy.

        False if a cancellation dropped the call and ``defer`` said to
        deliver it later; otherwise it is raised.
        """
        loop = self._loop
        if self.running < self.max_threads and not self._queue:
            if not defer:  # (deferred: the thread starts, and the call is waited for)
                try:
                    await loop.checkpoint_if_cancelled()
                except loop.Cancelled:
                    self.counters.dropped += 1
                    raise
            self.running += 1
            return True
        turn = _Turn(loop.waiter())
        self._queue.append(turn)
        drop = functools.partial(self._drop, turn)
        if waiting is not None:
            waiting.add(drop)
        try:
            await turn.waiter.park(functools.partial(self._leave, turn, defer))
        except loop.Cancelled:
            self.counters.dropped += 1
            raise
        finally:
            if waiting is not None:
                waiting.discard(drop)
        if turn.closed:
            self.counters.dropped += 1
            turn.waiter.finish(False)
            raise loop.ClosedResourceError("file was closed during the operation")
        if turn.dropped:
            self.counters.dropped += 1
            turn.waiter.finish(False)  # at the next checkpoint
            return False
        if turn.waiter.interrupted:  # cancelled just as its turn came: pass it on
            self.counters.dropped += 1
            self._release()
            turn.waiter.finish(not defer)
            return False
        return True

    def _leave(self, turn: _Turn, defer: bool) -> bool:
        """A waiting call was cancelled: it leaves the line.

        True (nothing will wake it: the cancellation is raised), or, when the
        cancellation is to be ``defer``-red, it is woken as dropped.
        """
        self._queue.remove(turn)
        if not defer:
            return True
        turn.dropped = True
        turn.waiter.wake()
        return False

    def _drop(self, turn: _Turn) -> None:
        """A closing file drops a call still waiting for a thread."""
        if turn in self._queue:
            self._queue.remove(turn)
            turn.closed = True
            turn.waiter.wake()

    def _release(self) -> None:
        """A call let go of its thread: hand it to the next in line."""
        if self._queue:
            self._queue.popleft().waiter.wake()  # (the thread stays taken: now by that call)
        else:
            self.running -= 1


def current(loop: _loops.Loop | None = None) -> Workers:
    """The current run's worker threads, created on first use (``loop``: if known already)."""
    run = (loop or _loops.current()).run()
    workers: Workers | None = run.values.get(_WORKERS)
    if workers is None:
        workers = run.values[_WORKERS] = Workers(run, run.values.get(_CONFIG) or ThreadsConfig())
    return workers


def current_or_none() -> Workers | None:
    """The current run's worker threads, if it has used any."""
    workers: Workers | None = _loops.current().run().values.get(_WORKERS)
    return workers


def current_config() -> ThreadsConfig:
    """The current run's thread configuration."""
    config: ThreadsConfig = _loops.current().run().values.get(_CONFIG) or ThreadsConfig()
    return config


def configure(config: ThreadsConfig) -> None:
    """Set the current run's thread configuration, before its first thread."""
    values = _loops.current().run().values
    if _WORKERS in values:
        raise RuntimeError(
            "trio_aio: configure_threads() must be called before the run's first "
            "operation on the thread backend"
        )
    values[_CONFIG] = config


async def run(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args)`` in one of the current run's worker threads (see :meth:`Workers.run`)."""
    return await current().run(fn, *args)

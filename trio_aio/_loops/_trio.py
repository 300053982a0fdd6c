"""trio's side of :class:`trio_aio._loops.Loop`: the primitives, nothing built on them.

Some facts about trio that this relies on
-----------------------------------------

* ``wait_task_rescheduled``'s abort function is called at most once, and
  may itself call ``reschedule`` for the task before returning
  ``Abort.FAILED``: trio clears the task's abort function only after it
  returns, and a rescheduled task simply runs on the next pass.  That is
  how a batch whose every operation had finished wakes up at once.
* After ``Abort.FAILED`` the cancel scope stays cancelled: the next
  checkpoint raises the cancellation again.  So a cancellation that could
  not stop the work is "deferred" by doing nothing, and "raised now" by
  calling the ``raise_cancel`` trio handed to the abort function (kept in
  the waiter, which lives for one wait).
* An instrument's ``before_io_wait`` runs once per scheduler pass, just
  before trio waits for I/O, with a timeout trio has already computed: a
  task rescheduled from inside the hook would not stop trio from sleeping,
  possibly forever.  So what a ticker's function finishes is woken through
  ``run_sync_soon`` (:meth:`TrioRun.call_soon`), which wakes the loop; and a
  timer started from the hook is a system task spawned through
  ``run_sync_soon`` too.
* In guest mode the hook runs on the host's thread and the I/O wait on a
  worker thread: submissions therefore still come from one thread, the one
  that runs trio's scheduler.
* When the run ends, trio cancels its system tasks, and runs the
  instruments' ``after_run`` once no task is left.  A watch's system task
  therefore goes on, shielded, while its ``busy()`` says work is in the
  kernel; a task that starts work later in the teardown restarts it.
* ``trio.lowlevel.start_thread_soon`` runs a function in trio's thread
  cache without a limiter, and calls back in the worker thread; the result
  comes back to the loop's thread with ``run_sync_soon``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import trio
from trio.lowlevel import Abort, RunVar, current_task, reschedule, wait_task_rescheduled

from . import Run

T = TypeVar("T")


class ClosedResourceError(trio.ClosedResourceError, anyio.ClosedResourceError):
    """The file was closed (both trio's and anyio's ``ClosedResourceError``)."""

    __module__ = "trio_aio"


class _Waiter:
    """A task parked with ``wait_task_rescheduled`` (the protocol is in ``_loops/__init__.py``)."""

    __slots__ = ("_raise_cancel", "_task")

    def __init__(self) -> None:
        self._task = current_task()
        self._raise_cancel: Callable[[], Any] | None = None

    def wake(self) -> None:
        reschedule(self._task)

    async def park(self, abort: Callable[[], bool]) -> None:
        def trio_abort(raise_cancel: Callable[[], Any]) -> Abort:
            if abort():
                return Abort.SUCCEEDED
            self._raise_cancel = raise_cancel
            return Abort.FAILED

        await wait_task_rescheduled(trio_abort)

    def finish(self, cancelled: bool) -> None:
        raise_cancel = self._raise_cancel
        if raise_cancel is not None:
            self._raise_cancel = None
            if cancelled:
                raise_cancel()

    @property
    def interrupted(self) -> bool:
        return self._raise_cancel is not None


class _Ticker(trio.abc.Instrument):
    __slots__ = ("_fn", "_requested")

    def __init__(self, fn: Callable[[], object]) -> None:
        self._fn = fn
        self._requested = False

    def request(self) -> None:
        self._requested = True

    def before_io_wait(self, timeout: float) -> None:
        if self._requested:
            self._requested = False
            self._fn()


class _Watch:
    __slots__ = ("_busy", "_closed", "_fd", "_fn", "_running")

    def __init__(self, fd: int, fn: Callable[[], object], busy: Callable[[], bool]) -> None:
        self._fd = fd
        self._fn = fn
        self._busy = busy
        self._running = False
        self._closed = False

    def ensure(self) -> None:
        if not self._running and not self._closed:
            trio.lowlevel.spawn_system_task(self._watch, name="trio_aio.watch")
            self._running = True

    def close(self) -> None:
        self._closed = True

    async def _watch(self) -> None:
        fd, fn = self._fd, self._fn
        try:
            while True:
                await trio.lowlevel.wait_readable(fd)
                fn()
        finally:
            # The run is ending (trio cancels its system tasks first): keep
            # going, shielded, until nothing is left in the kernel.
            with trio.CancelScope(shield=True):
                fn()
                while self._busy():
                    await trio.lowlevel.wait_readable(fd)
                    fn()
            self._running = False


class _RunEnd(trio.abc.Instrument):
    __slots__ = ("_run",)

    def __init__(self, run: TrioRun) -> None:
        self._run = run

    def after_run(self) -> None:
        self._run.end()


class TrioRun(Run):
    """One ``trio.run``: its values, its end, and the primitives bound to it."""

    __slots__ = ("_token",)

    def __init__(self) -> None:
        super().__init__()
        self._token = trio.lowlevel.current_trio_token()
        trio.lowlevel.add_instrument(_RunEnd(self))

    def ticker(self, fn: Callable[[], object]) -> _Ticker:
        ticker = _Ticker(fn)
        trio.lowlevel.add_instrument(ticker)
        return ticker

    def watch(self, fd: int, fn: Callable[[], object], busy: Callable[[], bool]) -> _Watch:
        return _Watch(fd, fn, busy)

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        self._token.run_sync_soon(fn, *args)

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        async def timer() -> None:
            await trio.sleep(delay)
            fn()

        # (spawned through run_sync_soon: a task spawned from a hook would
        # not shorten the wait trio has already decided on)
        self._token.run_sync_soon(trio.lowlevel.spawn_system_task, timer)

    def start_thread(
        self, fn: Callable[[], T], done: Callable[[T | None, BaseException | None], object]
    ) -> None:
        token = self._token
        context = contextvars.copy_context()

        def in_thread() -> tuple[T | None, BaseException | None]:
            try:
                return context.run(fn), None
            except BaseException as exc:
                return None, exc

        def deliver(result: Any) -> None:
            token.run_sync_soon(done, *result.unwrap())

        trio.lowlevel.start_thread_soon(in_thread, deliver, name="trio_aio worker")


_RUN: RunVar[TrioRun | None] = RunVar("trio_aio.run", default=None)


def _run() -> TrioRun:
    run = _RUN.get()
    if run is None:
        run = TrioRun()
        _RUN.set(run)
    return run


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
    waiter = _Waiter
    run = staticmethod(_run)
    wait_readable = staticmethod(_wait_readable)
    wait_writable = staticmethod(_wait_writable)
    notify_closing = staticmethod(trio.lowlevel.notify_closing)


LOOP = TrioLoop()

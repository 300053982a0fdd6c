"""Event-loop glue: which loop is running, and the little trio_aio needs from it.

Everything above this package (the backends, the file layer, the streams) is
written against the :class:`Loop` interface and never imports trio or
asyncio.  One module per loop implements it:

* ``_trio.py``: trio's own machinery (``wait_task_rescheduled`` and its abort
  protocol, an instrument's ``before_io_wait`` hook, ``to_thread``).
* ``_asyncio.py``: ``loop.add_reader`` for the ring's fd, ``call_soon`` to
  submit once per loop iteration, a ``ThreadPoolExecutor`` for threads.

:func:`current` finds the running loop without importing either library: it
looks only at modules that are already imported, so on trio the asyncio glue
is never imported, and on asyncio trio is never imported.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs

from .._statistics import Statistics

if TYPE_CHECKING:
    from .._ring._engine import Engine, Op

T = TypeVar("T")

DEFAULT_MAX_THREADS = 64


@attrs.frozen
class RingConfig:
    """How the ring of a run is set up (see :func:`trio_aio.lowlevel.configure_ring`)."""

    entries: int = 256
    cq_entries: int = 0
    max_in_flight: int = 0
    inline_cached: bool = True


@attrs.frozen
class ThreadsConfig:
    """How a run's thread backend is set up (see :func:`trio_aio.lowlevel.configure_threads`)."""

    max_threads: int = DEFAULT_MAX_THREADS


@attrs.define(eq=False)
class ThreadCounters:
    """The thread backend's counters for one run (see :class:`trio_aio.Statistics`)."""

    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    dropped: int = 0
    inline: int = 0
    threaded: int = 0

    def statistics(self, in_flight: int, queued: int, max_threads: int) -> Statistics:
        """The counters, with the runner's own figures, as :class:`trio_aio.Statistics`."""
        return Statistics(
            backend="threads",
            in_flight=in_flight,
            queued=queued,
            submitted=self.submitted,
            completed=self.completed,
            cancelled=self.cancelled,
            dropped=self.dropped,
            inline=self.inline,
            threaded=self.threaded,
            max_threads=max_threads,
        )


class Batch:
    """The waiter of a batch's operations: calls ``wake`` once, after the last one."""

    __slots__ = ("remaining", "wake")

    def __init__(self, wake: Callable[[], object], remaining: int) -> None:
        self.wake = wake
        self.remaining = remaining

    def one_done(self) -> None:
        """One operation of the batch is done."""
        self.remaining -= 1
        if self.remaining == 0:
            self.wake()


class Event(Protocol):
    """A one-shot flag a task can wait for."""

    def set(self) -> None:
        """Wake every waiter, now and later."""
        ...

    async def wait_shielded(self) -> None:
        """Wait until set, even if cancelled meanwhile (the cancellation is delivered later)."""
        ...


class RingDriver(Protocol):
    """One run's io_uring engine, driven by the loop."""

    @property
    def engine(self) -> Engine:
        """The sans-I/O engine."""
        ...

    @property
    def config(self) -> RingConfig:
        """How the ring was set up."""
        ...

    async def run(self, op: Op) -> int:
        """Start ``op`` and wait for its result; the cancellation contract of the backends."""
        ...

    async def run_many(self, ops: list[Op]) -> list[int]:
        """Start a batch and wait, woken once, until every op is done."""
        ...

    async def run_shielded(self, op: Op) -> int:
        """Start ``op`` and wait for its result even if cancelled meanwhile."""
        ...

    def cancel(self, op: Op) -> None:
        """Cancel ``op`` for someone other than its waiter (a closing file)."""
        ...


class ThreadRunner(Protocol):
    """One run's worker threads for the thread backend (and for the rare blocking call)."""

    @property
    def counters(self) -> ThreadCounters:
        """The run's counters, which the thread backend also updates."""
        ...

    async def run(self, waiting: set[Callable[[], object]], fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread and wait for it, however long it takes.

        Cancelled while waiting for a thread: dropped, and the cancellation
        raised.  Cancelled while running: its result (or exception) is
        returned and the cancellation arrives at the next checkpoint.  While
        the call waits for a thread, a function in ``waiting`` drops it; the
        caller then gets ``ClosedResourceError``.
        """
        ...

    async def run_shielded(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread; cancellation waits for it."""
        ...

    def statistics(self) -> Statistics:
        """The counters as :class:`trio_aio.Statistics`."""
        ...


class Loop(Protocol):
    """What trio_aio needs from an event loop."""

    @property
    def name(self) -> str:
        """``"trio"`` or ``"asyncio"``."""
        ...

    @property
    def ClosedResourceError(self) -> type[Exception]:
        """What an operation on a closed file raises on this loop."""
        ...

    @property
    def Cancelled(self) -> type[BaseException]:
        """The loop's cancellation exception."""
        ...

    def checkpoint(self) -> Awaitable[None]:
        """Yield to the loop; raise the cancellation if there is one."""
        ...

    def checkpoint_if_cancelled(self) -> Awaitable[None]:
        """Raise the cancellation if there is one; does not always yield."""
        ...

    def cancel_shielded_checkpoint(self) -> Awaitable[None]:
        """Yield to the loop without taking a cancellation."""
        ...

    def ring(self) -> RingDriver:
        """The current run's ring driver, created with its ring on first use."""
        ...

    def ring_or_none(self) -> RingDriver | None:
        """The current run's ring driver, if it has one."""
        ...

    def configure_ring(self, config: RingConfig) -> None:
        """Set the current run's ring configuration, before its first operation."""
        ...

    def threads(self) -> ThreadRunner:
        """The current run's worker threads, created on first use."""
        ...

    def threads_or_none(self) -> ThreadRunner | None:
        """The current run's worker threads, if it has used any."""
        ...

    def threads_config(self) -> ThreadsConfig:
        """The current run's thread configuration."""
        ...

    def configure_threads(self, config: ThreadsConfig) -> None:
        """Set the current run's thread configuration, before its first thread."""
        ...

    def event(self) -> Event:
        """A new :class:`Event`."""
        ...

    async def wait_readable(self, fd: int) -> None:
        """Wait until ``fd`` is readable; ``ClosedResourceError`` if ``notify_closing``."""
        ...

    async def wait_writable(self, fd: int) -> None:
        """Wait until ``fd`` is writable; ``ClosedResourceError`` if ``notify_closing``."""
        ...

    def notify_closing(self, fd: int) -> None:
        """Wake the tasks waiting for ``fd`` with ``ClosedResourceError``."""
        ...


_trio_loop: Loop | None = None
_asyncio_loop: Loop | None = None


def current() -> Loop:
    """The glue for the loop running the calling task.

    Raises:
      RuntimeError: neither trio nor asyncio runs this task.

    """
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_task():
        return _trio_loop or _load_trio()
    asyncio = sys.modules.get("asyncio")
    # (In trio's guest mode on an asyncio host, trio's instruments run in host
    # callbacks, outside any asyncio task: those belong to trio.)
    if (
        asyncio is not None
        and asyncio._get_running_loop() is not None
        and (trio is None or asyncio.current_task() is not None or not trio.lowlevel.in_trio_run())
    ):
        return _asyncio_loop or _load_asyncio()
    if trio is not None and trio.lowlevel.in_trio_run():  # an instrument, a system context
        return _trio_loop or _load_trio()
    raise RuntimeError("trio_aio must be used from a trio or asyncio task")


def _load_trio() -> Loop:
    global _trio_loop
    from ._trio import LOOP

    _trio_loop = LOOP
    return LOOP


def _load_asyncio() -> Loop:
    global _asyncio_loop
    from ._asyncio import LOOP

    _asyncio_loop = LOOP
    return LOOP


def closed_resource_error() -> type[Exception]:
    """What an operation on a closed file raises, even outside a running loop.

    On trio a class that is both :class:`trio.ClosedResourceError` and
    :class:`anyio.ClosedResourceError`; on asyncio anyio's.
    """
    try:
        return current().ClosedResourceError
    except RuntimeError:
        if "trio" in sys.modules:
            from ._trio import ClosedResourceError

            return ClosedResourceError
        import anyio

        return anyio.ClosedResourceError

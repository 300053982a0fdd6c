"""The event loop, as trio_aio sees it: a handful of primitives, one module per loop.

Everything trio_aio builds on an event loop (the ring driver in
``_ring/_driver.py``, the worker threads in ``_workers.py``, the backends,
the file layer) is written once, against :class:`Loop`.  Only the two modules
here implement it, and only they import trio or asyncio; the FreeBSD package
(``_freebsd/``) is the one declared exception: it waits on trio's kqueue and
serves trio runs only.

* ``_trio.py``: ``wait_task_rescheduled`` and its abort protocol, an
  instrument's ``before_io_wait`` hook, a ``RunVar``, ``start_thread_soon``.
* ``_asyncio.py``: a fresh future per wait, ``call_soon``, ``add_reader``, a
  per-loop record closed at ``shutdown_asyncgens``, a ``ThreadPoolExecutor``.

:func:`current` asks sniffio which library runs the calling task, as anyio
does, and imports only that library's module: on trio the asyncio glue is
never imported, and on asyncio trio is never imported.

The waiter: how a task parks, written once
------------------------------------------

Every wait for something the loop does not know about (a ring completion, a
worker thread, a turn in a queue) is a :class:`Waiter`::

    waiter = loop.waiter()
    ... hand ``waiter`` to whoever will call ``waiter.wake()`` ...
    await waiter.park(abort)
    waiter.finish(cancelled=...)

* ``park`` returns once ``wake()`` has been called, and is a checkpoint.
* If a cancellation arrives first, ``abort()`` is called, once.  It returns
  True when nothing will ever call ``wake()`` (the work was dropped before
  anyone took it): ``park`` then raises the cancellation at once.  It returns
  False when the work has started and will end (the kernel or a thread holds
  it; it has been asked to stop): the task keeps waiting, deaf to further
  cancellations, until ``wake()``.  ``abort`` may call ``wake()`` itself
  (everything had finished already).  This is trio's abort protocol
  (``Abort.SUCCEEDED`` for True, ``Abort.FAILED`` for False).
* ``finish(cancelled)`` settles a cancellation that ``abort`` could not take:
  raised now if ``cancelled`` (the work was stopped: there is no result to
  return), otherwise delivered at the task's next checkpoint (the work
  completed anyway: its result is returned first).  It does nothing when no
  cancellation arrived.  Call it after every ``park`` that returned.
* ``wake()`` is called on the loop's thread, at most once per park.  From a
  per-tick hook (:meth:`Loop.ticker`) it may not wake trio's loop: work
  finished there is woken through :meth:`Loop.call_soon`.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import attrs
import sniffio

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
    """How a run's worker threads are set up (see :func:`trio_aio.lowlevel.configure_threads`)."""

    max_threads: int = DEFAULT_MAX_THREADS


class Waiter(Protocol):
    """One task parked until someone calls :meth:`wake` (see the module docstring)."""

    def wake(self) -> None:
        """Resume the parked task."""
        ...

    def park(self, abort: Callable[[], bool]) -> Awaitable[None]:
        """Wait until :meth:`wake`; on a cancellation call ``abort()`` once."""
        ...

    def finish(self, cancelled: bool) -> None:
        """Raise a cancellation ``abort`` could not take (``cancelled``), or defer it."""
        ...

    @property
    def interrupted(self) -> bool:
        """Whether a cancellation arrived that :meth:`finish` has not settled yet."""
        ...


class Ticker(Protocol):
    """A function the loop calls once, before it next waits for I/O, when asked."""

    def request(self) -> None:
        """Have the function called before the loop next sleeps (once, however often asked)."""
        ...


class Watch(Protocol):
    """A function the loop calls whenever an fd is readable."""

    def ensure(self) -> None:
        """Make sure the watch runs (trio's stops when the run ends: this restarts it)."""
        ...

    def close(self) -> None:
        """Stop watching."""
        ...


class Run:
    """What trio_aio keeps and does for one trio run or one asyncio event loop.

    ``values`` holds each user's record under its own key (the ring driver,
    the worker threads, configurations).  The functions given to
    :meth:`at_end` run once, in order, when the run ends: on trio when its
    last task has exited, on asyncio at ``loop.shutdown_asyncgens()`` or, if
    the loop never gets there, when it is garbage-collected.

    Each loop's module adds the primitives bound to its run: :meth:`ticker`,
    :meth:`watch`, :meth:`call_soon`, :meth:`call_later` and
    :meth:`start_thread`.  They may be used from the loop's hooks, where no
    task runs and the running loop cannot always be looked up.
    """

    __slots__ = ("_ended", "_hooks", "values")

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self._hooks: list[Callable[[], object]] = []
        self._ended = False

    def at_end(self, fn: Callable[[], object]) -> None:
        """Call ``fn()`` when the run ends."""
        self._hooks.append(fn)

    @property
    def ended(self) -> bool:
        """Whether the run has ended."""
        return self._ended

    def end(self) -> None:
        """The run has ended: call the hooks (once)."""
        if self._ended:
            return
        self._ended = True
        hooks, self._hooks = self._hooks, []
        for fn in hooks:
            fn()

    def ticker(self, fn: Callable[[], object]) -> Ticker:
        """A :class:`Ticker` of ``fn``."""
        raise NotImplementedError

    def watch(self, fd: int, fn: Callable[[], object], busy: Callable[[], bool]) -> Watch:
        """Call ``fn()`` whenever ``fd`` is readable, for the rest of the run.

        When the run ends the watch goes on for as long as ``busy()`` is true
        (trio cancels its system tasks first; work still in the kernel must
        be reaped).
        """
        raise NotImplementedError

    def call_soon(self, fn: Callable[..., object], *args: Any) -> None:
        """Call ``fn(*args)`` on the loop's thread soon, waking the loop if it sleeps."""
        raise NotImplementedError

    def call_later(self, delay: float, fn: Callable[[], object]) -> None:
        """Call ``fn()`` on the loop's thread in ``delay`` seconds."""
        raise NotImplementedError

    def start_thread(
        self, fn: Callable[[], T], done: Callable[[T | None, BaseException | None], object]
    ) -> None:
        """Run ``fn()`` in a worker thread now, then ``done(result, error)`` on the loop."""
        raise NotImplementedError


class Loop(Protocol):
    """The primitives trio_aio needs from an event loop."""

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

    def waiter(self) -> Waiter:
        """A new :class:`Waiter` for the calling task."""
        ...

    def run(self) -> Run:
        """The current run's :class:`Run`, created on first use."""
        ...

    def wait_readable(self, fd: int) -> Awaitable[None]:
        """Wait until ``fd`` is readable; ``ClosedResourceError`` if ``notify_closing``."""
        ...

    def wait_writable(self, fd: int) -> Awaitable[None]:
        """Wait until ``fd`` is writable; ``ClosedResourceError`` if ``notify_closing``."""
        ...

    def notify_closing(self, fd: int) -> None:
        """Wake the tasks waiting for ``fd`` with ``ClosedResourceError``."""
        ...


_trio_loop: Loop | None = None
_asyncio_loop: Loop | None = None


def current() -> Loop:
    """The primitives of the loop running the calling task.

    Raises:
      RuntimeError: neither trio nor asyncio runs this task.

    """
    try:
        name = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        raise RuntimeError("trio_aio must be used from a trio or asyncio task") from None
    if name == "trio":
        return _trio_loop or _load_trio()
    if name == "asyncio":
        return _asyncio_loop or _load_asyncio()
    raise RuntimeError(f"trio_aio runs on trio and asyncio, not on {name}")


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


class Event:
    """A one-shot flag that tasks wait for through cancellations (a close waiting for the kernel).

    Written once on :class:`Waiter`, for both loops.
    """

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[Waiter] = []

    def set(self) -> None:
        """Wake every waiter, now and later."""
        self._set = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.wake()

    def is_set(self) -> bool:
        """Whether :meth:`set` has been called."""
        return self._set

    async def wait_shielded(self) -> None:
        """Wait until set; a cancellation meanwhile is delivered at the next checkpoint."""
        loop = current()
        if self._set:
            await loop.cancel_shielded_checkpoint()
            return
        waiter = loop.waiter()
        self._waiters.append(waiter)
        await waiter.park(keep_waiting)
        waiter.finish(False)


def keep_waiting() -> bool:
    """An ``abort`` for waits that cannot be given up: the work always ends, and is waited for."""
    return False

"""POSIX AIO control blocks on trio's kqueue: :class:`Aio`, in the style of tokio's.

The kernel (FreeBSD) completes ``aio_read``/``aio_write``/``aio_fsync`` and
``lio_listio`` jobs itself and posts a kevent to the kqueue named in the
control block's ``sigevent``.  :class:`Aio` wraps an :class:`AioSource` (a
control block, or a list of them, that knows how to point its ``sigevent`` at
a kqueue) and waits for those events on the running trio loop's own kqueue,
with no thread.  The kqueue calls themselves live in ``_kqueue.py``,
whose docstring has the facts about trio's kqueue this relies on.

State machine, per :class:`Aio`:

* created (``for_aio``/``for_lio``): the source has been registered (its
  ``sigevent`` names the kqueue) and, for a list, trio has a registration
  for the list's events.  Nothing is ready.
* :meth:`Aio.wait_ready` returns an :class:`AioEvent` once the kernel has
  posted one; the :class:`Aio` stays ready (later calls return the same event
  at once) until :meth:`Aio.clear_ready` is given that event.
* :meth:`Aio.into_inner` deregisters and hands the source back.
"""

from __future__ import annotations

import contextlib
from typing import Any, Generic, Protocol, TypeVar

import attrs

from . import _kqueue
from ._kqueue import EV_ONESHOT, EVFILT_AIO, EVFILT_LIO, EventQueue, Kqueue

__all__ = ["EVFILT_AIO", "EVFILT_LIO", "EV_ONESHOT", "Aio", "AioEvent", "AioSource"]


class AioSource(Protocol):
    """A control block (or a list of them) that :class:`Aio` can wait for.

    Implement it for your own ``struct aiocb`` (FreeBSD's ``<aio.h>``):

    * :attr:`ident` is what the kernel will use as the kevent's ident: the
      control block's address for a single job (``EVFILT_AIO``), the address
      of the array passed to ``lio_listio`` for a list (``EVFILT_LIO``).
    * :meth:`register` fills in the ``sigevent``: ``sigev_notify =
      SIGEV_KEVENT``, ``sigev_notify_kqueue = kqueue_fd``, ``sigev_value =
      udata``, and, for a single job, ``sigev_notify_kevent_flags =
      EV_ONESHOT`` (required: see ``_kqueue.py``).  For a list, the
      ``sigevent`` is the one given to ``lio_listio``.
    * :meth:`deregister` forgets the kqueue (nothing to undo in the kernel:
      the kernel deletes its knote when the jobs are collected).
    * Optionally, ``cancel()``: ask the kernel to stop (``aio_cancel``).
      :meth:`Aio.wait_ready` calls it when the waiting task is cancelled.
    """

    @property
    def ident(self) -> int:
        """The kevent ident the kernel will post."""
        ...

    def register(self, kqueue_fd: int, udata: int) -> None:
        """Point the ``sigevent`` at ``kqueue_fd``, with ``udata`` as its value."""
        ...

    def deregister(self) -> None:
        """Forget the kqueue."""
        ...


@attrs.frozen
class AioEvent:
    """A readiness notification from the kernel (the fields of the kevent)."""

    ident: int
    filter: int
    flags: int = 0
    data: int = 0
    udata: int = 0

    @classmethod
    def from_kevent(cls, kevent: Any) -> AioEvent:
        """From a ``select.kevent`` (or anything with the same fields)."""
        return cls(
            int(kevent.ident),
            int(kevent.filter),
            int(kevent.flags),
            int(kevent.data),
            int(kevent.udata),
        )


S = TypeVar("S", bound=AioSource)


class Aio(Generic[S]):
    """Waits on the running trio loop's kqueue for an :class:`AioSource`'s events.

    What the caller must guarantee (as for trio's ``wait_kevent``, whose
    rules this follows; breaking them crashes trio's event loop with a
    ``KeyError`` or ``BusyResourceError``):

    * Submit the job (``aio_read``, ``lio_listio``, ...) *after* creating the
      :class:`Aio` and *before* the first :meth:`wait_ready`, from the same
      trio task, with no ``await`` in between.
    * For a single job: once submitted, await :meth:`wait_ready` until it
      returns. Its event is the last the kernel will post for this
      submission. A cancelled task keeps waiting (after ``cancel()`` on the
      source, if it has one), because the kernel posts the event of a
      cancelled job too; it then returns the event, and the cancellation is
      raised at the task's next checkpoint, so the job's result is never lost.
    * For a list: the kernel may post the list's event more than once, and
      before every job is done. Check each job (``aio_error``), call
      :meth:`clear_ready` and wait again while some are still running.
      :meth:`wait_ready` can be cancelled at any time here.
    * Call :meth:`into_inner` only when the kernel will post nothing more:
      every job collected with ``aio_return``.
    * One task at a time waits on one :class:`Aio`.
    """

    def __init__(self, source: S, filter: int, kqueue: Kqueue) -> None:
        self._source = source
        self._filter = filter
        self._kqueue = kqueue
        self._ready: AioEvent | None = None
        self._waiting = False
        self._monitor: contextlib.ExitStack | None = None
        self._queue: EventQueue | None = None
        self._closed = False
        source.register(kqueue.fileno(), source.ident)
        if filter == EVFILT_LIO:
            stack = contextlib.ExitStack()
            self._queue = stack.enter_context(kqueue.monitor(source.ident, filter))
            self._monitor = stack

    @classmethod
    def for_aio(cls, source: S, *, kqueue: Kqueue | None = None) -> Aio[S]:
        """Wrap a single job's control block (``aio_read``, ``aio_write``, ``aio_fsync``)."""
        return cls(source, EVFILT_AIO, kqueue or _kqueue.current())

    @classmethod
    def for_lio(cls, source: S, *, kqueue: Kqueue | None = None) -> Aio[S]:
        """Wrap a list for ``lio_listio(LIO_NOWAIT, ...)``."""
        return cls(source, EVFILT_LIO, kqueue or _kqueue.current())

    @property
    def source(self) -> S:
        """The wrapped source (for ``aio_error``/``aio_return`` on its control blocks)."""
        return self._source

    async def wait_ready(self) -> AioEvent:
        """Wait until the kernel has posted an event; returns it (see the class docs)."""
        if self._closed:
            raise RuntimeError("this Aio was given back with into_inner()")
        if self._waiting:
            raise RuntimeError("another task is already waiting on this Aio")
        if self._ready is not None:
            import trio

            await trio.lowlevel.checkpoint()
            return self._ready
        self._waiting = True
        try:
            if self._queue is not None:
                events = await self._queue.get_batch()
                event = AioEvent.from_kevent(events[-1])
            else:
                event = AioEvent.from_kevent(
                    await self._kqueue.wait_oneshot(self._source.ident, self._filter, self._abort)
                )
        finally:
            self._waiting = False
        self._ready = event
        return event

    def _abort(self, raise_cancel: Any) -> Any:
        import trio

        cancel = getattr(self._source, "cancel", None)
        if cancel is not None:
            cancel()
        # The kernel posts the job's event however the job ends: keep waiting.
        return trio.lowlevel.Abort.FAILED

    def clear_ready(self, event: AioEvent) -> None:
        """Forget ``event``: the next :meth:`wait_ready` waits for a new one.

        An event that is not the current one (already cleared) is ignored.
        """
        if self._ready is event:
            self._ready = None

    def into_inner(self) -> S:
        """Deregister and return the source (see the class docs for when)."""
        if self._waiting:
            raise RuntimeError("a task is waiting on this Aio")
        if not self._closed:
            self._closed = True
            if self._monitor is not None:
                self._monitor.close()
            self._source.deregister()
        return self._source

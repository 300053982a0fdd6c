"""trio's kqueue: the one module of trio_aio that calls trio's kqueue API.

Read against and tested with trio 0.35 (``trio/_core/_io_kqueue.py``).  trio
calls this API "more of a sketch than anything real" (trio issue 26) and open
work may change ``wait_kevent``; if it does, this module is the only one to
change.  Everything above it talks to the small :class:`Kqueue` interface, so
that the state machine built on it (``_aio.py``) is tested on any
system against a fake kqueue with trio's own bookkeeping
(``tests/fake_kqueue.py``).

Some facts about trio's kqueue
------------------------------

* trio looks every event up by ``(ident, filter)`` in a dict of
  registrations.  An event that arrives with no registration raises
  ``KeyError`` inside trio's event loop, which kills the run.  So a
  registration must exist from the moment the kernel may post an event until
  the last event it will ever post for that key has been delivered.
* trio deletes a registration on delivery only when the event carries
  ``EV_ONESHOT``.  An event without it leaves the registration in place:
  a task waiting with ``wait_kevent`` would be rescheduled a second time by
  the next such event (a crash), and a second ``wait_kevent`` on the same key
  raises ``BusyResourceError``.  Hence ``EV_ONESHOT`` events are waited for
  with :meth:`Kqueue.wait_oneshot`, and events that may repeat (FreeBSD's
  ``EVFILT_LIO`` knote is level-triggered until the list's jobs are
  collected) with :meth:`Kqueue.monitor`, whose queue takes every repeat and
  whose registration ends only when the caller says so.
* ``wait_kevent``'s abort function decides what trio does with the
  registration: ``Abort.SUCCEEDED`` deletes it (and the task gets
  ``Cancelled``), ``Abort.FAILED`` keeps it, and the task stays asleep until
  the event arrives.  For an AIO job the event always arrives, even when
  ``aio_cancel`` wins (the job completes with ``ECANCELED``), so the abort
  must return ``FAILED``: ``SUCCEEDED`` would leave the coming event with no
  registration.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import Any, Protocol

# FreeBSD's <sys/event.h>.  Python's select module has KQ_FILTER_AIO on the
# BSDs but no name for EVFILT_LIO.
EVFILT_AIO = -3
EVFILT_LIO = -10
EV_ONESHOT = 0x0010
EV_CLEAR = 0x0020


class EventQueue(Protocol):
    """Events for one ``(ident, filter)``, as :meth:`Kqueue.monitor` collects them."""

    async def get_batch(self) -> list[Any]:
        """Wait for at least one event; return every event queued so far."""
        ...


class Kqueue(Protocol):
    """The part of a kqueue event loop that AIO needs."""

    def fileno(self) -> int:
        """The kqueue's fd, for ``sigev_notify_kqueue``."""
        ...

    async def wait_oneshot(
        self, ident: int, filter: int, abort: Callable[[Callable[[], Any]], Any]
    ) -> Any:
        """Wait for one ``EV_ONESHOT`` event (trio's ``wait_kevent``); returns it."""
        ...

    def monitor(self, ident: int, filter: int) -> contextlib.AbstractContextManager[EventQueue]:
        """Register for every event of ``(ident, filter)`` until the context exits."""
        ...


if sys.platform != "linux" and sys.platform != "win32":

    class TrioKqueue:
        """The current trio run's kqueue (FreeBSD, macOS, the other BSDs).

        trio is imported by the calls, not by this module: ``import trio_aio``
        imports it (through :mod:`trio_aio.lowlevel`), and an asyncio program
        must not import trio.
        """

        def fileno(self) -> int:
            import trio

            return int(trio.lowlevel.current_kqueue().fileno())

        async def wait_oneshot(
            self, ident: int, filter: int, abort: Callable[[Callable[[], Any]], Any]
        ) -> Any:
            import trio

            return await trio.lowlevel.wait_kevent(ident, filter, abort)

        @contextlib.contextmanager
        def monitor(self, ident: int, filter: int) -> Iterator[EventQueue]:
            import trio

            with trio.lowlevel.monitor_kevent(ident, filter) as queue:
                yield queue

    def current() -> Kqueue:
        """The running trio run's kqueue (asyncio's selector has no AIO filter)."""
        return TrioKqueue()

else:

    def current() -> Kqueue:
        """No kqueue here."""
        raise RuntimeError("trio_aio: kqueue AIO needs FreeBSD")

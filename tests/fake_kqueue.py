"""A kqueue for tests on any OS, with trio 0.35's own bookkeeping and failure modes.

``post(ident, filter, flags)`` plays the kernel: it delivers an event the way
trio's ``KqueueIOManager.process_events`` does, including its crashes: an
event with no registration raises ``KeyError``, a second waiter on a key
raises ``BusyResourceError``, and a task rescheduled twice is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import trio


class Queue:
    """trio's UnboundedQueue, as far as monitor_kevent's users see it."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.event = trio.Event()

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)
        self.event.set()

    async def get_batch(self) -> list[Any]:
        if self.items:
            await trio.lowlevel.checkpoint()
        else:
            await self.event.wait()
        items, self.items = self.items, []
        self.event = trio.Event()
        return items


class FakeKqueue:
    """One trio run's kqueue (create it inside the run)."""

    def __init__(self, fd: int = 99) -> None:
        self.registered: dict[tuple[int, int], Any] = {}
        self.aborts = 0
        self.fd = fd
        self.token = trio.lowlevel.current_trio_token() if trio.lowlevel.in_trio_run() else None

    def fileno(self) -> int:
        return self.fd

    async def wait_oneshot(
        self, ident: int, filter: int, abort: Callable[[Callable[[], Any]], Any]
    ) -> Any:
        key = (ident, filter)
        if key in self.registered:
            raise trio.BusyResourceError("attempt to register multiple listeners")
        self.registered[key] = trio.lowlevel.current_task()

        def on_abort(raise_cancel: Callable[[], Any]) -> Any:
            self.aborts += 1
            r = abort(raise_cancel)
            if r is trio.lowlevel.Abort.SUCCEEDED:
                del self.registered[key]
            return r

        return await trio.lowlevel.wait_task_rescheduled(on_abort)

    @contextlib.contextmanager
    def monitor(self, ident: int, filter: int) -> Iterator[Queue]:
        key = (ident, filter)
        if key in self.registered:
            raise trio.BusyResourceError("attempt to register multiple listeners")
        queue = Queue()
        self.registered[key] = queue
        try:
            yield queue
        finally:
            del self.registered[key]

    def post(self, ident: int, filter: int, flags: int = 0, data: int = 0) -> None:
        """What trio does with one event from kevent(): KeyError if nobody registered."""
        key = (ident, filter)
        receiver = self.registered[key]
        if flags & 0x0010:  # EV_ONESHOT
            del self.registered[key]
        event = SimpleNamespace(ident=ident, filter=filter, flags=flags, data=data, udata=ident)
        if isinstance(receiver, trio.lowlevel.Task):
            trio.lowlevel.reschedule(receiver, trio_outcome(event))
        else:
            receiver.put_nowait(event)


def trio_outcome(value: Any) -> Any:
    import outcome

    return outcome.Value(value)


class FakeSource:
    """An AioSource with the bookkeeping a real control block would have."""

    def __init__(self, ident: int = 0x1000) -> None:
        self._ident = ident
        self.kqueue_fd: int | None = None
        self.udata: int | None = None
        self.cancels = 0
        self.on_cancel: Callable[[], None] | None = None

    @property
    def ident(self) -> int:
        return self._ident

    def register(self, kqueue_fd: int, udata: int) -> None:
        self.kqueue_fd = kqueue_fd
        self.udata = udata

    def deregister(self) -> None:
        self.kqueue_fd = None

    def cancel(self) -> None:
        self.cancels += 1
        if self.on_cancel is not None:
            self.on_cancel()

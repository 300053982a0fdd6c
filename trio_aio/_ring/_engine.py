"""The io_uring engine: operations, their queue, submission and completion.

Sans-I/O in h11's sense: it knows nothing of trio or asyncio, and reaches the
kernel only through a :class:`RingPort` it is given (the real one is
:class:`~trio_aio._ring._ring.Ring`; tests give fakes that refuse, take part
of a batch, or fail).  Rule 1: every state an :class:`Op` goes through is
set here, and nowhere else.

* :meth:`Engine.start` queues an operation (``QUEUED``);
* :meth:`Engine.flush` hands what is queued to the kernel (``SUBMITTED``),
  takes back what the kernel refused, and fails what it refused for good
  (``DONE``);
* :meth:`Engine.reap` collects completions (``DONE``) and returns the
  operations whose waiters must be woken;
* :meth:`Engine.cancel` drops a queued operation (``DROPPED``, result
  ``-ECANCELED``) or asks the kernel for a submitted one.

The driver (``_driver.py``) calls these from the event loop and wakes the
waiters; the cancellation contract is written there, once.

Some facts about cancelling io_uring operations
-----------------------------------------------

* An operation still in our queue has not reached the kernel: dropping it is a
  complete cancellation, and no completion will ever arrive for it.
* Once an SQE has been consumed by ``io_uring_enter`` the operation belongs to
  the kernel.  ``IORING_OP_ASYNC_CANCEL`` asks for it back; the answer (0,
  ``-ENOENT`` or ``-EALREADY``) comes in the cancel's own completion, and the
  target still posts exactly one completion of its own: ``-ECANCELED`` (or
  ``-EINTR`` for work an io-wq worker had started) if the cancel won, its real
  result if it did not.  Disk I/O that has started cannot be stopped.
* Until that completion is reaped the kernel may still write into the
  operation's buffer and still uses its fd, so both are kept alive by the
  :class:`Op` object, which the engine holds until then.
* We never leave an SQE in the submission ring between flushes: whatever
  ``io_uring_enter`` did not consume is taken back (:meth:`Ring.retract`) and
  queued again.  So an operation is either in our queue (``QUEUED``) or the
  kernel's (``SUBMITTED``), never in between.  After such a refusal
  (``EAGAIN``, ``EBUSY``, a partial submission) :attr:`Engine.needs_retry`
  is true, and the loop glue must arm a retry of its own (a short timer): the
  kernel will not wake us for operations it never took, and with nothing in
  flight nothing else would.

Buffer exports and the garbage collector
----------------------------------------

An ``ffi.from_buffer`` export pins the object it was made from (a
``memoryview``'s export count goes up) until the export is released.  If an
export outlives its operation in a frame that a traceback keeps alive in a
reference cycle, the garbage collector of Python 3.10-3.12 may clear the
``memoryview`` first ("BufferError: memoryview has 1 exported buffer" in
``tp_clear``) and then crash the interpreter.  So every export an operation
uses is given to the :class:`Op` (``exports``) and released with
``ffi.release`` exactly when the kernel is done with it: when the operation
is ``DONE`` or ``DROPPED``, never earlier (a coroutine closed with
``GeneratorExit`` while the kernel holds its operation must not release it:
the kernel may still write into it).  Memory from ``ffi.new`` (a read's
buffer, a statx struct) is read after completion, so it lives in ``keep`` and
is freed by reference counting only.

``-EINTR``
----------

The kernel answers ``-EINTR`` to operations nobody cancelled: FUSE does on
reads, and io-wq workers do when a signal reaches them.  As Python has done
since PEP 475, such an operation is retried: :meth:`Engine.reap` queues it
again (same buffers, same SQE).  Only when a cancellation was requested is
``-EINTR`` the cancellation's answer, and then it is the result.  The one
exception is ``CLOSE``: Linux has released the fd even when ``close``
returns ``EINTR``, so retrying could close someone else's; its ``-EINTR`` is
the result (the io_uring backend reads it as success, as ``os.close`` does).
"""

from __future__ import annotations

import errno
from collections import deque
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

from .._statistics import Counters, IoUringStatistics
from . import _constants as C
from ._ring import ffi

# Operations whose ring was closed while the kernel still held them: never freed.
_ABANDONED: list[Op] = []

QUEUED = 0
SUBMITTED = 1
DONE = 2
DROPPED = 3


class Op:
    """One io_uring operation: its SQE fields, what it keeps alive, and its result."""

    __slots__ = (
        "addr",
        "cancel_requested",
        "exports",
        "fd",
        "keep",
        "length",
        "off",
        "op_flags",
        "opcode",
        "result",
        "sqe_flags",
        "state",
        "user_data",
        "waiter",
    )

    def __init__(
        self,
        opcode: int,
        fd: int = -1,
        addr: int = 0,
        length: int = 0,
        off: int = 0,
        op_flags: int = 0,
        keep: object = None,
        *,
        exports: Sequence[Any] = (),
        sqe_flags: int = 0,
    ) -> None:
        self.opcode = opcode
        self.fd = fd
        self.addr = addr
        self.length = length
        self.off = off
        self.op_flags = op_flags
        # Buffers, paths, statx structs: whatever the kernel may touch until
        # this operation's completion has been reaped.
        self.keep = keep
        # ``ffi.from_buffer`` exports the kernel may touch: released (not just
        # dropped) when the kernel is done, see "Buffer exports" above.
        self.exports = exports
        self.sqe_flags = sqe_flags  # IOSQE_* bits, e.g. IOSQE_ASYNC
        self.state = QUEUED
        self.user_data = 0
        self.result = 0
        self.cancel_requested = False
        self.waiter: Any = None  # the driver's: whatever ``wake()`` it calls when this is done

    def finish(self, result: int) -> None:
        """Record the final result; the kernel is done with whatever ``keep`` held."""
        self.result = result
        self.state = DONE
        self._let_go()

    def drop(self) -> None:
        """The kernel never had it and never will: ``DROPPED``, result ``-ECANCELED``."""
        self.result = -errno.ECANCELED
        self.state = DROPPED
        self._let_go()

    def abandon(self) -> None:
        """Drop an operation that never reached :meth:`Engine.start` (its caller failed first).

        Does nothing to one that did: only the engine knows when the kernel is
        done with that.
        """
        if self.state == QUEUED and self.user_data == 0:
            self.drop()

    def _let_go(self) -> None:
        self.keep = None
        exports, self.exports = self.exports, ()
        for cdata in exports:
            ffi.release(cdata)


class EngineClosedError(RuntimeError):
    """The engine was used after it was closed."""


class RingPort(Protocol):
    """The engine's one way to the kernel (:class:`~trio_aio._ring._ring.Ring`, or a fake)."""

    @property
    def fd(self) -> int:
        """The ring's fd (the driver watches it for completions)."""
        ...

    @property
    def sq_entries(self) -> int:
        """The submission ring's size."""
        ...

    @property
    def cq_entries(self) -> int:
        """The completion ring's size."""
        ...

    def sq_space(self) -> int:
        """Free slots in the submission ring."""
        ...

    def prep(
        self,
        opcode: int,
        fd: int,
        addr: int,
        length: int,
        off: int,
        op_flags: int,
        user_data: int,
        sqe_flags: int,
    ) -> bool:
        """Write one SQE (``OverflowError``/``TypeError`` for a field that does not fit)."""
        ...

    def submit(self) -> int:
        """Enter the kernel with every SQE written: how many it consumed, or ``-errno``."""
        ...

    def retract(self) -> int:
        """Take back the SQEs the kernel did not consume."""
        ...

    def reap(self) -> list[tuple[int, int]]:
        """Every completion in the CQ ring, as ``(user_data, res)``."""
        ...

    def cq_overflowed(self) -> bool:
        """Whether the kernel holds completions that did not fit in the CQ ring."""
        ...

    def flush_overflow(self) -> None:
        """Ask the kernel to move the completions it kept aside into the CQ ring."""
        ...

    def close(self) -> None:
        """Let go of the ring."""
        ...

    def forget(self) -> None:
        """In a forked child: let go of our copy without touching the parent's."""
        ...


R = TypeVar("R", bound=RingPort, covariant=True)


class Engine(Generic[R]):
    """Operations queued, in flight and completed on one ring."""

    def __init__(self, ring: R, max_in_flight: int = 0) -> None:
        self.ring = ring
        # More in flight than CQ slots is fine (FEAT_NODROP keeps the excess),
        # but unbounded growth is not: past this many, operations wait in our
        # queue, where cancelling them is free.
        self.max_in_flight = max_in_flight or 4 * ring.cq_entries
        self._queue: deque[Op] = deque()  # may hold DROPPED ops, skipped by flush
        self._queued = 0  # ops in the queue still QUEUED
        self._cancels: deque[Op] = deque()  # ASYNC_CANCEL requests not yet submitted
        self._in_flight: dict[int, Op] = {}  # our operations and our cancel requests
        self._requests = 0  # cancel requests among them
        self._next_id = 1
        # (inline and dropped are also counted by the backend, for operations
        # that never reach the engine: see trio_aio/_backends/_inline.py)
        self.counters = Counters()
        self._enters = 0
        self._overflows = 0
        self._interrupted = 0  # -EINTR results retried
        self._refused = False  # the last flush was refused and requeued operations
        self.closed = False

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return not self._queued and not self._in_flight and not self._cancels

    def statistics(self) -> IoUringStatistics:
        """A snapshot of the counters."""
        counters = self.counters
        return IoUringStatistics(
            in_flight=len(self._in_flight) - self._requests,
            queued=self._queued,
            submitted=counters.submitted,
            completed=counters.completed,
            cancelled=counters.cancelled,
            dropped=counters.dropped,
            inline=counters.inline,
            enter_calls=self._enters,
            cq_overflows=self._overflows,
            interrupted=self._interrupted,
            sq_entries=self.ring.sq_entries,
            cq_entries=self.ring.cq_entries,
        )

    # -- the verbs the driver uses --------------------------------------------

    def start(self, op: Op) -> None:
        """Queue ``op``; it reaches the kernel at the next :meth:`flush`."""
        if self.closed:
            raise EngineClosedError("trio_aio: this run's io_uring ring is already closed")
        op.user_data = self._next_id
        self._next_id += 1
        self._queue.append(op)
        self._queued += 1

    @property
    def needs_flush(self) -> bool:
        """Whether :meth:`flush` has anything it can submit now."""
        return bool(self._cancels) or (
            self._queued > 0 and len(self._in_flight) < self.max_in_flight
        )

    @property
    def needs_retry(self) -> bool:
        """The kernel refused the last flush and something is still queued.

        Nothing the kernel does will wake the loop for operations it never
        took: the driver arms a short timer and flushes again.
        """
        return self._refused and (self._queued > 0 or bool(self._cancels))

    def flush(self) -> list[Op]:
        """Hand queued operations to the kernel, as few ``io_uring_enter`` calls as fit.

        Cancel requests go first and are exempt from ``max_in_flight``: they
        are how in-flight operations make room.  Returns operations that
        failed before reaching the kernel (an ``io_uring_enter`` error other
        than a full queue, a field that does not fit an SQE); their
        ``result`` holds ``-errno`` and they are done.  Usually empty.
        """
        if self.closed:
            return []
        ring = self.ring
        in_flight = self._in_flight
        failed: list[Op] = []
        self._refused = False
        while True:
            written = self._fill(failed)
            if not written:
                return failed
            rc = ring.submit()
            self._enters += 1
            taken = max(rc, 0)
            self._count_submitted(written[:taken])
            if taken == len(written):
                continue
            # Take back what the kernel did not consume and requeue it in
            # order, or fail it if the kernel refused for good.
            ring.retract()
            rest = written[taken:]
            for op in rest:
                del in_flight[op.user_data]
                if op.opcode == C.IORING_OP_ASYNC_CANCEL:
                    self._requests -= 1
            if rc >= 0 or -rc in (errno.EBUSY, errno.EAGAIN):
                for op in reversed(rest):
                    op.state = QUEUED
                    if op.opcode == C.IORING_OP_ASYNC_CANCEL:
                        self._cancels.appendleft(op)
                    else:
                        self._queue.appendleft(op)
                        self._queued += 1
                self._refused = True
                return failed
            for op in rest:
                op.finish(rc)
            failed.extend(op for op in rest if op.waiter is not None)

    def _count_submitted(self, ops: list[Op]) -> None:
        n = len(ops)
        if self._requests:
            n -= sum(1 for op in ops if op.opcode == C.IORING_OP_ASYNC_CANCEL)
        self.counters.submitted += n

    def _fill(self, failed: list[Op]) -> list[Op]:
        """Write SQEs for pending cancels, then queued operations, while there is room.

        An operation whose fields do not fit an SQE (the file layer checks
        ranges first, so this is a last line of defence) fails with EINVAL
        into ``failed`` instead of raising out of the loop's hook.
        """
        ring = self.ring
        in_flight = self._in_flight
        room = ring.sq_space()
        written: list[Op] = []
        for source, capped in ((self._cancels, False), (self._queue, True)):
            while source and room and not (capped and len(in_flight) >= self.max_in_flight):
                op = source.popleft()
                if op.state != QUEUED:  # dropped while it waited
                    continue
                if capped:
                    self._queued -= 1
                try:
                    ring.prep(
                        op.opcode,
                        op.fd,
                        op.addr,
                        op.length,
                        op.off,
                        op.op_flags,
                        op.user_data,
                        op.sqe_flags,
                    )
                except (OverflowError, TypeError):
                    op.finish(-errno.EINVAL)
                    if op.waiter is not None:
                        failed.append(op)
                    continue
                op.state = SUBMITTED
                in_flight[op.user_data] = op
                if not capped:
                    self._requests += 1
                written.append(op)
                room -= 1
        return written

    def reap(self) -> list[Op]:
        """Collect every completion; returns the finished operations that have a waiter.

        Completions of our own cancel requests are dropped here.  An
        operation interrupted (``-EINTR``) that nobody cancelled is queued
        again instead (see the module docstring): the driver's usual "flush
        if :attr:`needs_flush`" after a reap submits it.
        """
        if self.closed:
            return []
        ring = self.ring
        in_flight = self._in_flight
        counters = self.counters
        done: list[Op] = []
        while True:
            for user_data, res in ring.reap():
                op = in_flight.pop(user_data, None)
                if op is None:  # pragma: no cover - would be a kernel or engine bug
                    continue
                if op.opcode == C.IORING_OP_ASYNC_CANCEL:
                    self._requests -= 1
                    op.finish(res)
                    continue
                if res == -errno.EINTR and self._retries_eintr(op):
                    op.state = QUEUED
                    self._queue.append(op)
                    self._queued += 1
                    self._interrupted += 1
                    continue
                counters.completed += 1
                op.finish(res)
                if op.waiter is not None:
                    done.append(op)
            if not ring.cq_overflowed():
                return done
            # The kernel holds completions that did not fit: ask for them.
            self._overflows += 1
            ring.flush_overflow()
            self._enters += 1

    @staticmethod
    def _retries_eintr(op: Op) -> bool:
        return not op.cancel_requested and op.opcode != C.IORING_OP_CLOSE

    def cancel(self, op: Op) -> bool:
        """Cancel ``op``.

        Returns True when it never reached the kernel: it is dropped (result
        ``-ECANCELED``) and no completion will ever come.  Returns False when
        the kernel has it: an ``IORING_OP_ASYNC_CANCEL`` is queued (once) and
        the operation's own completion will still arrive, cancelled or not.
        """
        if op.state == QUEUED:
            op.drop()
            self._queued -= 1
            self.counters.dropped += 1
            return True
        if op.state == SUBMITTED and not op.cancel_requested:
            op.cancel_requested = True
            self.counters.cancelled += 1
            request = Op(C.IORING_OP_ASYNC_CANCEL, addr=op.user_data)
            request.user_data = self._next_id
            self._next_id += 1
            self._cancels.append(request)
        return False

    def close(self) -> None:
        """Close the ring.

        Normally nothing is in flight by now.  If something is (a bug
        elsewhere), its buffers are kept alive for the life of the process
        rather than freed under the kernel's feet.
        """
        if self.closed:
            return
        if self._in_flight:  # pragma: no cover - defensive
            _ABANDONED.extend(self._in_flight.values())
        self.closed = True
        self.ring.close()

    def forget(self) -> None:
        """In a forked child: drop our copy of the parent's ring, leaving the parent's alone."""
        self.closed = True
        self._queue.clear()
        self._cancels.clear()
        self._queued = 0
        self._in_flight.clear()
        self.ring.forget()

"""The ring driver: one run's engine on its event loop, and the cancellation contract.

Written once, for trio and asyncio alike, on the primitives of
``trio_aio/_loops/`` (a waiter, a per-tick hook, a watch on the ring's fd,
per-run storage).  The engine (``_engine.py``) decides every state of an
operation; this module decides when the engine runs and who is woken.

* :func:`current` gives the run's driver, created with its ring on first
  use and closed when the run ends.
* :meth:`RingDriver.run` starts an operation and parks its task; the per-tick
  hook submits everything started during that pass of the loop in one
  ``io_uring_enter`` (32 tasks starting a read in the same pass cost one
  system call), and the watch on the ring's fd reaps completions and wakes
  their tasks.

How a cancelled ring operation ends (the contract of every backend)
-------------------------------------------------------------------

This is the one place it is decided for io_uring:

* Still in our queue: dropped.  No completion will ever come, and the
  cancellation is raised at once (the waiter's ``abort`` returns True).
* Held by the kernel: an ``IORING_OP_ASYNC_CANCEL`` is sent and the task
  waits for the operation's own completion.  ``-ECANCELED`` (or ``-EINTR``
  for work an io-wq worker had started) means the kernel gave it up: the
  cancellation is raised.  Any other result means it ran: the result is
  returned and the cancellation arrives at the next checkpoint.  A result
  the kernel produced is never thrown away.
* A batch is woken once, after its last operation.  Cancelled, its queued
  operations are dropped (``-ECANCELED``) and the kernel is asked for the
  others; if none of them ran the cancellation is raised, otherwise the
  results are returned (``-ECANCELED`` where an operation did not run) and
  the cancellation arrives at the next checkpoint: a batch part of which
  happened is never reported as simply cancelled.
* A closing file cancels its operations with :meth:`RingDriver.cancel`: the
  same, except that the waiter is woken with ``-ECANCELED`` and the backend
  raises ``ClosedResourceError``.

Some facts about driving a ring from an event loop
--------------------------------------------------

* Submission happens in the per-tick hook, never inline in ``run``: that is
  what batches a pass's operations into one system call.  On trio the hook
  runs where waking a task would not wake the loop, so operations the
  kernel refused for good are woken through ``call_soon``.
* After the kernel refused a submission (``EAGAIN``, ``EBUSY``, a partial
  submit: :attr:`Engine.needs_retry`) nothing the kernel does will wake us
  for what it never took, and with nothing in flight nothing else would:
  a timer flushes again after ``RETRY_INTERVAL``.  Until then the hook
  leaves the queue alone (retrying on every pass would spin for as long as
  the kernel refuses).
* The ring is closed when the run ends (trio: its last task has exited;
  asyncio: ``shutdown_asyncgens`` or the loop's collection).  If the kernel
  still holds an operation then (a bug elsewhere), the engine keeps its
  buffers alive for the life of the process.
* A forked child inherits copies of the parent's rings: it drops them
  without touching the parent's, and a run inherited across ``fork()``
  refuses to be used.
"""

from __future__ import annotations

import errno
import os
import weakref

from .. import _loops
from .._loops import RingConfig
from . import _constants as C
from ._engine import DONE, Engine, EngineClosedError, Op
from ._ring import Ring, check_opcodes

# What the kernel completes an operation with when it gave it up.
CANCELLED_RESULTS = (-errno.ECANCELED, -errno.EINTR)

# After the kernel refused a submission, flush again this much later (seconds).
RETRY_INTERVAL = 0.001

_CONFIG = "ring_config"
_DRIVER = "ring_driver"

# Every live driver in this process, so that a forked child can drop its
# copies of them (see _after_fork_in_child).
_LIVE: weakref.WeakSet[RingDriver] = weakref.WeakSet()


class _Batch:
    """The waiter of a batch's operations: wakes the task once, after the last one."""

    __slots__ = ("remaining", "waiter")

    def __init__(self, waiter: _loops.Waiter, remaining: int) -> None:
        self.waiter = waiter
        self.remaining = remaining

    def wake(self) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.waiter.wake()


class RingDriver:
    """One run's ring: its engine, driven by the run's loop."""

    def __init__(
        self, run: _loops.Run, engine: Engine[Ring], config: RingConfig, supported: frozenset[int]
    ) -> None:
        self.engine = engine
        self.config = config
        self.supported = supported  # the opcodes the kernel has
        self._loop = _loops.current()  # (a driver serves the run, and the loop, that made it)
        self.pid = os.getpid()
        self._run = run
        self._tick = run.ticker(self._flush)
        self._watch = run.watch(engine.ring.fd, self._reap, self._busy)
        self._retry_armed = False
        run.at_end(self.close)
        _LIVE.add(self)

    # -- the loop's side -------------------------------------------------------

    def _busy(self) -> bool:
        return not self.engine.idle

    def _flush(self) -> None:
        """The per-tick hook: submit what this pass started."""
        if self._retry_armed:
            return  # (the timer flushes)
        engine = self.engine
        failed = engine.flush()
        if failed:
            self._run.call_soon(self._wake_all, failed)
        if engine.needs_retry:
            self._retry_armed = True
            self._run.call_later(RETRY_INTERVAL, self._retry)

    def _retry(self) -> None:
        self._retry_armed = False
        self._tick.request()

    @staticmethod
    def _wake_all(ops: list[Op]) -> None:
        for op in ops:
            op.waiter.wake()

    def _reap(self) -> None:
        """The ring's fd is readable: wake whoever waits for what completed."""
        engine = self.engine
        for op in engine.reap():
            op.waiter.wake()
        if engine.needs_flush:  # operations waiting for room in the kernel
            self._tick.request()

    def close(self) -> None:
        """Close the ring (the run has ended)."""
        self._watch.close()
        if not self.engine.closed and self.pid == os.getpid():
            self.engine.close()
        _LIVE.discard(self)

    # -- the tasks' side -------------------------------------------------------

    def _start(self, op: Op, waiter: object) -> None:
        engine = self.engine
        if engine.closed:
            if self.pid != os.getpid():
                raise RuntimeError(
                    "trio_aio: this run was inherited across fork(); "
                    "start a new one in the child process"
                )
            raise EngineClosedError("trio_aio: this run's io_uring ring is already closed")
        engine.start(op)
        op.waiter = waiter
        self._tick.request()
        self._watch.ensure()

    def _abort(self, op: Op) -> bool:
        """Cancel ``op`` for its waiter: True if nothing will ever complete it."""
        if self.engine.cancel(op):
            return True
        self._tick.request()  # (the cancel request goes out with the next flush)
        return False

    async def run(self, op: Op) -> int:
        """Start ``op`` and wait for its result (``res`` of its CQE).

        A checkpoint.  Cancelled: see the module docstring.
        """
        waiter = self._loop.waiter()
        self._start(op, waiter)
        await waiter.park(lambda: self._abort(op))
        res = op.result
        waiter.finish(res in CANCELLED_RESULTS)
        return res

    async def run_shielded(self, op: Op) -> int:
        """Start ``op`` and wait for its result even if cancelled meanwhile."""
        waiter = self._loop.waiter()
        self._start(op, waiter)
        await waiter.park(_loops.keep_waiting)
        waiter.finish(False)
        return op.result

    async def run_many(self, ops: list[Op]) -> list[int]:
        """Start every op of a batch and wait, woken once, until all are done.

        A checkpoint.  Cancelled: see the module docstring.
        """
        loop = self._loop
        if not ops:
            await loop.checkpoint()
            return []
        waiter = loop.waiter()
        batch = _Batch(waiter, len(ops))
        for op in ops:
            self._start(op, batch)

        def abort() -> bool:
            ran = False
            for op in ops:
                if op.state == DONE:
                    ran = ran or op.result not in CANCELLED_RESULTS
                elif self.engine.cancel(op):  # dropped: no completion will come
                    batch.remaining -= 1
                else:
                    ran = True  # the kernel has it: its completion will come
            self._tick.request()
            if batch.remaining == 0:
                if not ran:
                    return True
                waiter.wake()  # the rest were done already
            return False

        await waiter.park(abort)
        results = [op.result for op in ops]
        waiter.finish(all(res in CANCELLED_RESULTS for res in results))
        return results

    def cancel(self, op: Op) -> None:
        """Cancel ``op`` for someone other than its waiter (a closing file).

        Its waiter wakes with ``-ECANCELED`` if the kernel never had it, or
        with what the kernel answers.
        """
        if self.engine.cancel(op):
            op.waiter.wake()
        else:
            self._tick.request()


def current(loop: _loops.Loop | None = None) -> RingDriver:
    """The current run's driver, created with its ring on first use (``loop``: if known)."""
    run = (loop or _loops.current()).run()
    driver: RingDriver | None = run.values.get(_DRIVER)
    if driver is None:
        if run.ended:
            raise EngineClosedError("trio_aio: this run's io_uring ring is already closed")
        config: RingConfig = run.values.get(_CONFIG) or RingConfig()
        ring = open_ring(config)
        driver = RingDriver(run, Engine(ring, config.max_in_flight), config, ring.supported)
        run.values[_DRIVER] = driver
    return driver


def open_ring(config: RingConfig) -> Ring:
    """A new ring as ``config`` says, refused unless the kernel has every opcode we need."""
    ring = Ring(config.entries, config.cq_entries)
    try:
        check_opcodes(ring.supported, C.REQUIRED_OPCODES)
    except BaseException:
        ring.close()
        raise
    return ring


def current_or_none() -> RingDriver | None:
    """The current run's driver if it has one, without creating it."""
    driver: RingDriver | None = _loops.current().run().values.get(_DRIVER)
    return driver


def configure(config: RingConfig) -> None:
    """Set the ring configuration of the current run, before its first operation."""
    values = _loops.current().run().values
    if _DRIVER in values:
        raise RuntimeError("trio_aio: configure_ring() must be called before the first operation")
    values[_CONFIG] = config


def _after_fork_in_child() -> None:
    # The child has copies of the parent's mappings and ring fd.  Dropping the
    # copies cannot disturb the parent; using them would.
    for driver in list(_LIVE):
        driver.engine.forget()
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

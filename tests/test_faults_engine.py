"""The engine's refusal, requeue, ``-EINTR`` and export paths, against fake and flaky rings.

An in-memory :class:`FakeRing` (h11-style: the engine is sans-I/O) drives the
paths a real kernel rarely takes; :class:`FlakyRing`, a real ring that
refuses submissions on a plan, shows that trio and asyncio retry them.
"""

from __future__ import annotations

import errno
import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from fake_ring import FakeRing

import trio_aio
from trio_aio._backends import current_backend_impl
from trio_aio._ring import _constants as C
from trio_aio._ring import _driver
from trio_aio._ring._engine import DONE, DROPPED, QUEUED, SUBMITTED, Engine, Op
from trio_aio._ring._ring import Ring, ffi, lib

pytestmark = pytest.mark.backends("io_uring")


def started(engine: Engine[FakeRing], *ops: Op) -> list[Op]:
    for op in ops:
        engine.start(op)
        op.waiter = object()  # as the loop glue does
    return list(ops)


def nop(n: int = 0) -> Op:
    return Op(C.IORING_OP_NOP, off=n)


def test_a_refused_flush_requeues_in_order_and_asks_for_a_retry() -> None:
    ring = FakeRing()
    engine = Engine(ring)
    ops = started(engine, nop(1), nop(2), nop(3))
    ring.answers = [-errno.EAGAIN]
    assert engine.flush() == []
    assert [op.state for op in ops] == [QUEUED] * 3
    assert engine.needs_flush and engine.needs_retry
    assert ring.written == [] and ring.consumed == []  # taken back
    assert engine.flush() == []
    assert [op.state for op in ops] == [SUBMITTED] * 3
    assert [sqe[4] for sqe in ring.consumed] == [1, 2, 3]  # the order kept
    assert not engine.needs_retry


@pytest.mark.parametrize("answer", [1, -errno.EBUSY])
def test_a_partial_or_busy_submit_requeues_the_rest(answer: int) -> None:
    ring = FakeRing()
    engine = Engine(ring)
    ops = started(engine, nop(1), nop(2), nop(3))
    ring.answers = [answer]
    engine.flush()
    taken = max(answer, 0)
    assert [op.state for op in ops] == [SUBMITTED] * taken + [QUEUED] * (3 - taken)
    assert engine.needs_retry
    engine.cancel(ops[-1])  # dropped while it waited
    assert engine.needs_retry
    engine.cancel(ops[1])
    assert engine.needs_retry == (taken == 0)  # nothing left to retry once both are gone
    engine.flush()
    assert not engine.needs_retry


def test_a_hard_refusal_fails_the_operations() -> None:
    ring = FakeRing()
    engine = Engine(ring)
    ops = started(engine, nop(1), nop(2))
    ring.answers = [-errno.EINVAL]
    assert engine.flush() == ops
    assert [(op.state, op.result) for op in ops] == [(DONE, -errno.EINVAL)] * 2
    assert not engine.needs_retry and engine.idle


def test_sqe_flags_reach_the_ring() -> None:
    ring = FakeRing()
    engine = Engine(ring)
    started(engine, Op(C.IORING_OP_NOP, sqe_flags=C.IOSQE_ASYNC), nop())
    engine.flush()
    assert [sqe[7] for sqe in ring.consumed] == [C.IOSQE_ASYNC, 0]


def test_eintr_nobody_asked_for_is_retried_and_a_cancelled_ones_is_the_result() -> None:
    ring = FakeRing()
    engine = Engine(ring)
    plain, cancelled = started(engine, nop(1), nop(2))
    engine.flush()
    assert not engine.cancel(cancelled)  # the kernel has it: an ASYNC_CANCEL is queued
    ring.complete(plain, -errno.EINTR)
    ring.complete(cancelled, -errno.EINTR)
    assert engine.reap() == [cancelled]
    assert (cancelled.state, cancelled.result) == (DONE, -errno.EINTR)
    assert plain.state == QUEUED and engine.needs_flush
    engine.flush()
    assert plain.state == SUBMITTED
    assert [sqe[4] for sqe in ring.consumed if sqe[0] == C.IORING_OP_NOP] == [1, 2, 1]
    ring.complete(plain, 0)
    assert engine.reap() == [plain]
    assert plain.result == 0


def test_eintr_from_close_is_the_result() -> None:
    # Linux has released the fd: retrying could close someone else's.
    ring = FakeRing()
    engine = Engine(ring)
    (close,) = started(engine, Op(C.IORING_OP_CLOSE, 1234))
    engine.flush()
    ring.complete(close, -errno.EINTR)
    assert engine.reap() == [close]
    assert close.result == -errno.EINTR


def exported() -> tuple[bytearray, Any]:
    data = bytearray(16)
    return data, ffi.from_buffer(data)


def pinned(data: bytearray) -> bool:
    """Whether an export pins ``data`` (a pinned bytearray cannot be resized)."""
    try:
        data.append(0)
    except BufferError:
        return True
    del data[-1]
    return False


def test_exports_are_released_when_the_kernel_is_done_and_not_before() -> None:
    ring = FakeRing()
    engine = Engine(ring)
    data, cbuf = exported()
    (op,) = started(engine, Op(C.IORING_OP_WRITE, 3, exports=(cbuf,)))
    engine.flush()
    assert pinned(data)  # in flight: the kernel may still use it
    engine.cancel(op)
    assert pinned(data)  # a cancel requested is not a cancel done
    ring.complete(op, -errno.EINTR)  # cancelled while it ran
    engine.reap()
    assert op.state == DONE and not pinned(data)


def test_exports_of_a_dropped_or_failed_or_never_started_operation_are_released() -> None:
    ring = FakeRing()
    engine = Engine(ring)
    data, cbuf = exported()
    (op,) = started(engine, Op(C.IORING_OP_WRITE, 3, exports=(cbuf,)))
    assert engine.cancel(op) and op.state == DROPPED and not pinned(data)

    data, cbuf = exported()
    (op,) = started(engine, Op(C.IORING_OP_WRITE, 3, exports=(cbuf,)))
    ring.answers = [-errno.EBADF]
    engine.flush()
    assert op.state == DONE and not pinned(data)

    data, cbuf = exported()
    op = Op(C.IORING_OP_WRITE, 3, exports=(cbuf,))
    op.abandon()  # its caller failed before starting it
    assert op.state == DROPPED and not pinned(data)

    data, cbuf = exported()
    (op,) = started(engine, Op(C.IORING_OP_WRITE, 3, exports=(cbuf,)))
    op.abandon()  # started: only the engine may let go
    assert op.state == QUEUED and pinned(data)


def test_a_read_buffer_from_ffi_new_is_not_released() -> None:
    ring = FakeRing()
    engine = Engine(ring)
    buf = ffi.new("char[]", b"kept")
    (op,) = started(engine, Op(C.IORING_OP_READ, 3, keep=buf))
    engine.flush()
    ring.complete(op, 4)
    engine.reap()
    assert ffi.unpack(buf, 4) == b"kept"  # still readable after completion


def test_iosqe_async_matches_the_header() -> None:
    assert C.IOSQE_ASYNC == lib.IOSQE_ASYNC


# -- real loops, flaky rings ---------------------------------------------------------


class FlakyRing(Ring):
    """A real ring whose ``submit`` follows a plan first: ``"eagain"`` or ``"partial"``."""

    plan: ClassVar[list[str]] = []

    def submit(self, min_complete: int = 0, flags: int = 0) -> int:
        if self.plan and not min_complete and not flags:
            step = self.plan.pop(0)
            if step == "eagain":
                return -errno.EAGAIN
            # the kernel consumes only the first SQE
            return int(lib.tai_submit_some(self._ring, 1, 0, 0))
        return super().submit(min_complete, flags)


@pytest.fixture
def flaky(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Rings made in this test follow the plan returned (appended to by the test)."""
    plan: list[str] = []
    monkeypatch.setattr(FlakyRing, "plan", plan)
    monkeypatch.setattr(_driver, "Ring", FlakyRing)
    yield plan


@pytest.mark.timeout(30)  # before the fix it hung (the file's close too)
@pytest.mark.anyio
@pytest.mark.usefixtures("ring_only")
async def test_an_operation_the_kernel_refused_is_submitted_again(
    flaky: list[str], data_path: Path
) -> None:
    # Before the fix nothing woke the loop: the read waited for the safety timeout.
    async with await trio_aio.open_file(data_path, "rb") as f:
        flaky.extend(["eagain", "eagain"])
        with anyio.fail_after(5):
            assert await f.read_at(4096, 4096) == data_path.read_bytes()[4096:8192]
    assert flaky == []


@pytest.mark.timeout(30)
@pytest.mark.anyio
@pytest.mark.usefixtures("ring_only")
async def test_a_refused_submission_is_retried_after_a_pause_not_in_a_spin(
    flaky: list[str], data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the kernel refuses, attempts are a retry interval apart (not one per pass)."""
    from trio_aio._ring._driver import RETRY_INTERVAL

    attempts: list[float] = []
    submit = FlakyRing.submit

    def timed(self: FlakyRing, min_complete: int = 0, flags: int = 0) -> int:
        if not min_complete and not flags:
            attempts.append(time.monotonic())
        return submit(self, min_complete, flags)

    monkeypatch.setattr(FlakyRing, "submit", timed)
    async with await trio_aio.open_file(data_path, "rb") as f:
        flaky.extend(["eagain"] * 4)
        attempts.clear()  # (the open's own)
        with anyio.fail_after(5):
            assert await f.read_at(4096, 4096) == data_path.read_bytes()[4096:8192]
    assert flaky == []
    interval = RETRY_INTERVAL
    refused = attempts[:5]  # four refusals, then the attempt that went through
    gaps = [b - a for a, b in itertools.pairwise(refused)]
    assert len(gaps) == 4 and min(gaps) >= interval * 0.9, gaps


@pytest.mark.timeout(30)  # before the fix it hung (the file's close too)
@pytest.mark.anyio
async def test_the_rest_of_a_partial_submission_is_submitted_again(
    flaky: list[str], pipe: tuple[int, int], data_path: Path
) -> None:
    # The kernel takes the pipe read, which will not complete until the test
    # writes, and leaves the file read: nothing in flight will wake us for it.
    r, w = pipe
    handle = current_backend_impl().wrap(r)
    results: dict[str, bytes] = {}
    file_read = anyio.Event()  # (no polling: a timer would wake the loop and flush)
    async with await trio_aio.open_file(data_path, "rb") as f:

        async def read_pipe() -> None:
            results["pipe"] = await handle.pread(1, -1)

        async def read_file() -> None:
            results["file"] = await f.read_at(100, 0)
            file_read.set()

        flaky.append("partial")
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                # Both start in one scheduler pass and are flushed together.
                tg.start_soon(read_pipe)
                tg.start_soon(read_file)
                await file_read.wait()
                os.write(w, b"!")
    assert results == {"file": data_path.read_bytes()[:100], "pipe": b"!"}
    assert flaky == []
    await handle.close(close_fd=False)


class InterruptingRing(Ring):
    """A real ring that reports ``-EINTR`` for the first completion of each read."""

    interrupted: ClassVar[list[int]] = []

    def reap(self) -> list[tuple[int, int]]:
        out = []
        for user_data, res in super().reap():
            if user_data not in self.interrupted and res >= 0 and self._is_read(user_data):
                self.interrupted.append(user_data)
                res = -errno.EINTR
            out.append((user_data, res))
        return out

    def _is_read(self, user_data: int) -> bool:
        engine = _driver.current().engine
        op = engine._in_flight.get(user_data)
        return op is not None and op.opcode == C.IORING_OP_READ


@pytest.mark.anyio
@pytest.mark.usefixtures("ring_only")
async def test_eintr_nobody_asked_for_is_retried_not_raised(
    monkeypatch: pytest.MonkeyPatch, data_path: Path
) -> None:
    # Before the fix: InterruptedError.
    monkeypatch.setattr(InterruptingRing, "interrupted", [])
    monkeypatch.setattr(_driver, "Ring", InterruptingRing)
    expected = data_path.read_bytes()
    async with await trio_aio.open_file(data_path, "rb") as f:
        with anyio.fail_after(5):
            assert await f.read_at(4096, 8192) == expected[8192 : 8192 + 4096]
            assert await f.read_many([(0, 10), (10, 10)]) == [expected[:10], expected[10:20]]
    assert len(InterruptingRing.interrupted) == 3
    assert trio_aio.statistics().submitted >= 6  # each read went to the kernel twice

"""The cancellation contract, proven without timing luck.

A read from a pipe nobody writes to stays in flight for as long as the test
wants; an instrument that runs right after trio_aio's submission hook lets a
test cancel at exactly the point it means to.

The io_uring backend cancels in the kernel; the thread backend cannot stop a
thread that has started, so its tests show the task waiting and the result
kept, and then release the thread by writing to the pipe.
"""

from __future__ import annotations

import array
import os
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from fake_freebsd import FakeKernel
from helpers import (
    THREADS_ONLY,
    URING_ONLY,
    cancel_when_in_flight,
    pipes_use_threads,
    read_one_noting_closed,
    simulated_kernel,
    wait_blocked_in_kernel,
)

import trio_aio
from trio_aio._ring._driver import current_or_none as current_driver_or_none

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


@URING_ONLY
async def test_cancel_an_in_flight_pipe_read(pipe: tuple[int, int]) -> None:
    r, w = pipe
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        with trio.CancelScope() as cs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_in_flight, cs)
                await f.read(10)
                pytest.fail("the read should have been cancelled")
        assert cs.cancelled_caught
        stats = trio_aio.statistics()
        assert stats.in_flight == 0
        assert stats.cancelled == 1
        # The kernel gave the read up: the data written now is all still there.
        os.write(w, b"hello")
        assert await f.read(5) == b"hello"


@THREADS_ONLY
async def test_a_cancelled_read_in_a_thread_is_waited_for(pipe: tuple[int, int]) -> None:
    """A thread cannot be stopped: the task waits, gets the data, then is cancelled."""
    r, w = pipe
    got: list[object] = []
    cs = trio.CancelScope()
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:

        async def reader() -> None:
            with cs:
                got.append(await f.read(10))
                await trio.lowlevel.checkpoint()  # the cancellation arrives here
                got.append("not reached")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await cancel_when_in_flight(cs)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # still waiting for its thread
            assert trio_aio.statistics().in_flight == 1
            os.write(w, b"0123456789")
    assert cs.cancelled_caught
    assert got == [b"0123456789"]
    stats = trio_aio.statistics()
    assert (stats.in_flight, stats.cancelled) == (0, 1)


async def test_cancel_before_submission_is_immediate(data_path: Path) -> None:
    async with await trio_aio.open_file(data_path) as f:
        before = trio_aio.statistics()
        with trio.CancelScope() as cs:
            cs.cancel()
            await f.read_at(10, 0)
        after = trio_aio.statistics()
    assert cs.cancelled_caught
    assert after.submitted == before.submitted
    assert after.dropped == before.dropped + 1
    assert after.cancelled == before.cancelled


class CancelRightAfterSubmission(trio.abc.Instrument):
    """Cancels a scope in the first before_io_wait after trio_aio's own hook submitted.

    At that moment the kernel holds the operation (a regular-file read has even
    completed already), but trio_aio has not reaped its completion yet.
    """

    def __init__(self, scope: trio.CancelScope) -> None:
        self.scope = scope
        self.armed = False
        self.fired = False

    def before_io_wait(self, timeout: float) -> None:
        if self.armed and not self.fired and trio_aio.statistics().in_flight:
            self.fired = True
            self.scope.cancel()


@URING_ONLY
async def test_a_result_the_kernel_produced_is_returned(data_path: Path, ring_only: None) -> None:
    expected = data_path.read_bytes()[:4096]
    async with await trio_aio.open_file(data_path) as f:
        await f.read_at(1, 0)  # the ring exists: its hook runs before ours
        results: list[object] = []
        with trio.CancelScope() as cs:
            instrument = CancelRightAfterSubmission(cs)
            trio.lowlevel.add_instrument(instrument)
            try:
                instrument.armed = True
                results.append(await f.read_at(4096, 0))
                await trio.lowlevel.checkpoint()  # the cancellation arrives here
                results.append("not reached")
            finally:
                trio.lowlevel.remove_instrument(instrument)
        assert instrument.fired
        assert cs.cancelled_caught
        assert results == [expected]
        stats = trio_aio.statistics()
        assert stats.cancelled >= 1  # an ASYNC_CANCEL really went to the kernel
        assert stats.in_flight == 0


def _fill(r: int, w: int) -> int:
    """Fill the pipe so that the next write blocks; returns the bytes written."""
    os.set_blocking(w, False)
    filled = 0
    try:
        while True:
            filled += os.write(w, b"x" * 65536)
    except BlockingIOError:
        pass
    os.set_blocking(w, True)
    return filled


def _drain(r: int) -> bytes:
    drained = b""
    os.set_blocking(r, False)
    try:
        while True:
            drained += os.read(r, 1 << 20)
    except BlockingIOError:
        pass
    return drained


@URING_ONLY
async def test_a_kernel_cancelled_write_reports_cancelled(pipe: tuple[int, int]) -> None:
    r, w = pipe
    filled = _fill(r, w)
    async with await trio_aio.open_file(w, "wb", closefd=False) as f:
        with trio.CancelScope() as cs:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_in_flight, cs)
                await f.write(b"y" * 10)
        assert cs.cancelled_caught
    # Nothing of the cancelled write reached the pipe.
    assert _drain(r) == b"x" * filled


@THREADS_ONLY
async def test_a_cancelled_write_in_a_thread_completes_and_reports(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    filled = _fill(r, w)
    got: list[object] = []
    cs = trio.CancelScope()
    async with await trio_aio.open_file(w, "wb", closefd=False) as f:

        async def writer() -> None:
            with cs:
                got.append(await f.write(b"y" * 10))
                await trio.lowlevel.checkpoint()
                got.append("not reached")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await cancel_when_in_flight(cs)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            drained = _drain(r)  # makes room: the write goes through
    assert cs.cancelled_caught
    assert got == [10]
    assert drained + _drain(r) == b"x" * filled + b"y" * 10


async def test_buffer_stays_exported_until_the_kernel_is_done(
    pipe: tuple[int, int], backend: str
) -> None:
    r, w = pipe
    buf = array.array("b", bytes(16))
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        cs = trio.CancelScope()

        async def reader() -> None:
            with cs:
                await f.readinto(buf)
                await trio.lowlevel.checkpoint()  # threads: the cancellation arrives here

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await wait_blocked_in_kernel()
            with pytest.raises(BufferError):
                buf.append(1)  # the kernel may write into it: it cannot move
            cs.cancel()
            # Cancel requested, kernel (or thread) not yet done: still exported.
            with pytest.raises(BufferError):
                buf.append(1)
            if pipes_use_threads(backend):
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(BufferError):
                    buf.append(1)  # the thread still has it
                os.write(w, b"z" * 16)
        assert cs.cancelled_caught
        buf.append(1)  # the kernel has let go
        assert len(buf) == 17
        assert buf.tobytes()[:16] == (b"z" * 16 if pipes_use_threads(backend) else bytes(16))


@URING_ONLY
async def test_aclose_cancels_in_flight_operations(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    f = await trio_aio.open_file(r, "rb")
    outcomes: list[str] = []

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(read_one_noting_closed, f, outcomes)
        await wait_blocked_in_kernel()
        assert trio_aio.statistics().in_flight == 3
        await f.aclose()
        # aclose returned: the kernel answered for every operation, fd closed.
        assert trio_aio.statistics().in_flight == 0
        with pytest.raises(OSError):
            os.fstat(r)
    assert outcomes == ["closed"] * 3


@THREADS_ONLY
async def test_aclose_waits_for_operations_in_threads(pipe: tuple[int, int]) -> None:
    """Threads cannot be stopped: aclose waits for them, and their results are kept."""
    r, w = pipe
    f = await trio_aio.open_file(r, "rb")
    outcomes: list[str] = []
    closed = trio.Event()

    async def close() -> None:
        await f.aclose()
        closed.set()

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(read_one_noting_closed, f, outcomes)
        await wait_blocked_in_kernel()
        assert trio_aio.statistics().in_flight == 3
        nursery.start_soon(close)
        await trio.testing.wait_all_tasks_blocked()
        assert not closed.is_set()
        os.fstat(r)  # still open: threads are reading from it
        os.write(w, b"abc")
        await closed.wait()
        assert trio_aio.statistics().in_flight == 0
        with pytest.raises(OSError):
            os.fstat(r)
    assert outcomes == ["read"] * 3


async def test_aclose_closes_even_when_cancelled(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    f = await trio_aio.open_file(os.dup(r), "rb")
    with trio.CancelScope() as cs:
        cs.cancel()
        await f.aclose()
    assert f.closed
    assert cs.cancelled_caught


async def test_aclose_drops_operations_not_yet_submitted(
    pipe: tuple[int, int], backend: str
) -> None:
    """With room for one operation in the kernel (or one thread), the others wait in a queue."""
    if backend == "io_uring":
        trio_aio.lowlevel.configure_ring(entries=4, max_in_flight=1)
    else:
        trio_aio.lowlevel.configure_threads(1)
    r, w = pipe
    f = await trio_aio.open_file(r, "rb", closefd=False)
    outcomes: list[str] = []

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(read_one_noting_closed, f, outcomes)
        await wait_blocked_in_kernel()
        before = trio_aio.statistics()
        assert (before.in_flight, before.queued) == (1, 2)
        if pipes_use_threads(backend):
            # the read in the thread cannot be stopped: let it finish
            nursery.start_soon(f.aclose)
            await trio.testing.wait_all_tasks_blocked()
            os.write(w, b"!")
        else:
            await f.aclose()
    after = trio_aio.statistics()
    assert after.dropped - before.dropped == 2
    assert (after.in_flight, after.queued) == (0, 0)
    if pipes_use_threads(backend):
        assert sorted(outcomes) == ["closed", "closed", "read"]
    else:
        assert outcomes == ["closed"] * 3
        assert after.cancelled - before.cancelled == 1


class RandomCanceller(trio.abc.Instrument):
    """Right after each submission, cancels one writer whose operation the kernel holds.

    Runs right after trio_aio's hook, so the cancel goes to the kernel (and
    the write, already done there, may still come back as a success); a
    few more random writers are cancelled as well, some of them still queued.
    """

    def __init__(
        self,
        rng: random.Random,
        scopes: list[trio.CancelScope],
        tasks: dict[object, int],
        kernel: FakeKernel | None = None,
    ) -> None:
        self.rng = rng
        self.scopes = scopes
        self.tasks = tasks
        self.kernel = kernel  # posix_aio's simulated kernel, holding every job

    def before_io_wait(self, timeout: float) -> None:
        if self.kernel is not None:
            # writer i writes at i * 4096; its job is cancelled in the kernel
            # (AIO_CANCELED), then the others are done
            held = [job.offset // 4096 for job in self.kernel.jobs.values() if not job.done]
            if held:
                self.scopes[self.rng.choice(held)].cancel()
            self.kernel.release()
            return
        driver = current_driver_or_none()
        if driver is None:
            return
        held = [
            self.tasks[op.waiter._task]  # (the trio waiter's task)
            for op in driver.engine._in_flight.values()
            if getattr(op.waiter, "_task", None) in self.tasks and not op.cancel_requested
        ]
        if held:
            self.scopes[self.rng.choice(held)].cancel()
            for _ in range(2):
                self.scopes[self.rng.randrange(len(self.scopes))].cancel()


@pytest.mark.parametrize("seed", range(5))
async def test_random_cancellation_of_writes_loses_nothing_reported(
    tmp_path: Path, seed: int, backend: str, request: pytest.FixtureRequest
) -> None:
    """Every write reported as done is in the file, whatever was cancelled around it."""
    rng = random.Random(seed)
    kernel = simulated_kernel(request)
    if kernel is not None:
        kernel.hold = True  # each job waits for the instrument's release()
    if backend == "io_uring":
        trio_aio.lowlevel.configure_ring(entries=8, max_in_flight=16)
    else:
        trio_aio.lowlevel.configure_threads(16)
    block = 4096
    n = 300
    path = tmp_path / "w"
    done: set[int] = set()
    scopes = [trio.CancelScope() for _ in range(n)]
    tasks: dict[object, int] = {}

    async with await trio_aio.open_file(path, "wb") as f:

        async def writer(i: int) -> None:
            tasks[trio.lowlevel.current_task()] = i
            with scopes[i]:
                for _ in range(rng.randrange(3)):
                    await trio.lowlevel.checkpoint()
                await f.write_at(bytes([i % 251 + 1]) * block, i * block)
                done.add(i)

        async def canceller() -> None:
            order = list(range(n))
            rng.shuffle(order)
            for i in order[: n // 4]:
                for _ in range(rng.randrange(4)):
                    await trio.lowlevel.checkpoint()
                scopes[i].cancel()

        instrument = RandomCanceller(rng, scopes, tasks, kernel)
        trio.lowlevel.add_instrument(instrument)
        try:
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(writer, i)
                nursery.start_soon(canceller)
        finally:
            trio.lowlevel.remove_instrument(instrument)
        stats = trio_aio.statistics()

    if backend == "io_uring":
        # All three fates occurred: dropped before submission, cancel sent to
        # the kernel, and completed.
        assert stats.dropped > 0
        assert stats.cancelled > 0
    if backend == "posix_aio" and kernel is None:  # FreeBSD's kernel: too fast to be sure
        assert 0 < len(done) <= n, (len(done), stats)
    else:
        assert 0 < len(done) < n, (len(done), stats)
    if kernel is not None:
        assert stats.cancelled > 0 and kernel.jobs == {}
    content = path.read_bytes()
    for i in range(n):
        chunk = content[i * block : (i + 1) * block]
        if i in done:
            assert chunk == bytes([i % 251 + 1]) * block, i
        else:
            # a cancelled write happened whole or not at all
            assert chunk in (b"", bytes(block), bytes([i % 251 + 1]) * block), i

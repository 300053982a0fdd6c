"""The ring driver on real trio and asyncio loops, against an in-memory kernel.

The engine's port is a :class:`PipeRing`: SQEs are recorded, ``submit``
answers from a plan (take all, ``-EAGAIN``, a partial count, a hard error),
and a completion is posted by the test, which makes the ring's fd (a pipe)
readable.  So the paths a real kernel rarely takes (the retry after a
refusal, with nothing in flight to wake the loop; a cancel request racing a
completion) run deterministically, on both loops, through the one driver.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator, Iterator

import anyio
import pytest
from fake_ring import FakeRing

from trio_aio import _loops
from trio_aio._loops import RingConfig
from trio_aio._ring import _constants as C
from trio_aio._ring import _driver
from trio_aio._ring._engine import SUBMITTED, Engine, Op

pytestmark = [pytest.mark.anyio, pytest.mark.backends("io_uring")]


class PipeRing(FakeRing):
    """A :class:`FakeRing` whose fd (a pipe) is readable while completions wait."""

    def __init__(self) -> None:
        super().__init__()
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        self.fd = self._r

    def reap(self) -> list[tuple[int, int]]:
        with contextlib.suppress(BlockingIOError):
            os.read(self._r, 1024)
        return super().reap()

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._r)
            os.close(self._w)

    forget = close

    def complete(self, op: Op | int, res: int) -> None:
        super().complete(op, res)
        os.write(self._w, b"!")


@pytest.fixture
def ring() -> Iterator[PipeRing]:
    ring = PipeRing()
    yield ring
    ring.close()


@pytest.fixture
async def driver(ring: PipeRing) -> AsyncIterator[_driver.RingDriver]:
    """A driver of the run's loop on ``ring`` (anyio may run several tests on one loop)."""
    run = _loops.current().run()
    driver = _driver.RingDriver(run, Engine(ring), RingConfig(), ring.supported)  # type: ignore[arg-type]
    yield driver
    driver.close()


async def until(condition: object) -> None:
    """Until ``condition()`` holds (the loop runs meanwhile; no sleeps)."""
    with anyio.fail_after(5):
        while not condition():  # type: ignore[operator]
            await anyio.lowlevel.checkpoint()


async def test_a_refused_submission_is_retried_with_nothing_in_flight(
    ring: PipeRing, driver: _driver.RingDriver
) -> None:
    """Nothing the kernel does wakes the loop for what it never took: the retry timer does."""
    ring.answers = [-errno.EAGAIN, -errno.EBUSY, 0]  # refused three times, then taken
    op = Op(C.IORING_OP_NOP)
    results: list[int] = []
    async with anyio.create_task_group() as tg:

        async def run() -> None:
            results.append(await driver.run(op))

        tg.start_soon(run)
        await until(lambda: op.state == SUBMITTED)
        assert ring.submits == 4
        ring.complete(op, 7)
    assert results == [7]


async def test_a_hard_refusal_fails_the_operation_and_wakes_its_task(
    ring: PipeRing, driver: _driver.RingDriver
) -> None:
    ring.answers = [-errno.EINVAL]
    with anyio.fail_after(5):
        assert await driver.run(Op(C.IORING_OP_NOP)) == -errno.EINVAL


async def test_cancelled_before_submission_nothing_reaches_the_kernel(
    ring: PipeRing, driver: _driver.RingDriver
) -> None:
    """Cancelled while still queued (the kernel refuses for now): dropped, raised at once."""
    ring.answers = [-errno.EAGAIN] * 1000
    op = Op(C.IORING_OP_NOP)
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(driver.run, op)
            await until(lambda: ring.submits > 0)
            scope.cancel()
    assert scope.cancelled_caught
    assert ring.consumed == []
    assert driver.engine.statistics().dropped == 1
    assert driver.engine.idle


@pytest.mark.parametrize("answer", [-errno.ECANCELED, 4096])
async def test_cancelled_in_the_kernel_waits_for_its_completion(
    ring: PipeRing, driver: _driver.RingDriver, answer: int
) -> None:
    """``-ECANCELED``: the cancellation is raised; a result: returned, cancellation later."""
    op = Op(C.IORING_OP_NOP)
    scope = anyio.CancelScope()
    got: list[object] = []

    async def run() -> None:
        with scope:
            got.append(await driver.run(op))
            await anyio.lowlevel.checkpoint()  # the deferred cancellation arrives here
            got.append("not reached")

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await until(lambda: op.state == SUBMITTED)
        scope.cancel()
        await until(lambda: ring.taken(C.IORING_OP_ASYNC_CANCEL))
        assert got == []  # still waiting for the kernel
        ring.complete(ring.taken(C.IORING_OP_ASYNC_CANCEL)[0], 0)
        ring.complete(op, answer)
    assert scope.cancelled_caught
    assert got == ([] if answer < 0 else [answer])
    assert driver.engine.idle


async def test_a_batch_part_of_which_ran_returns_its_results(
    ring: PipeRing, driver: _driver.RingDriver
) -> None:
    ops = [Op(C.IORING_OP_NOP) for _ in range(3)]
    scope = anyio.CancelScope()
    got: list[list[int]] = []

    async def run() -> None:
        with scope:
            got.append(await driver.run_many(ops))
            await anyio.lowlevel.checkpoint()  # the deferred cancellation arrives here
            got.append([])

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await until(lambda: all(op.state == SUBMITTED for op in ops))
        ring.complete(ops[0], 1)  # one ran
        await until(lambda: ops[0].result == 1)
        scope.cancel()
        await until(lambda: len(ring.taken(C.IORING_OP_ASYNC_CANCEL)) == 2)
        for op in ops[1:]:
            ring.complete(op, -errno.ECANCELED)
    assert scope.cancelled_caught
    assert got == [[1, -errno.ECANCELED, -errno.ECANCELED]]

"""trio_aio.lowlevel.Aio against a fake kqueue with trio's own bookkeeping (any OS)."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from fake_kqueue import FakeKqueue, FakeSource

from trio_aio.lowlevel import EV_ONESHOT, EVFILT_AIO, EVFILT_LIO, Aio, AioEvent


async def test_for_aio_registers_the_source_and_waits_for_its_oneshot_event() -> None:
    kq, source = FakeKqueue(), FakeSource(0x1234)
    aio = Aio.for_aio(source, kqueue=kq)
    assert (source.kqueue_fd, source.udata) == (99, 0x1234)
    got: list[AioEvent] = []

    async def waiter() -> None:
        got.append(await aio.wait_ready())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert (0x1234, EVFILT_AIO) in kq.registered
        kq.post(0x1234, EVFILT_AIO, EV_ONESHOT, data=7)
    assert got == [AioEvent(0x1234, EVFILT_AIO, EV_ONESHOT, 7, 0x1234)]
    assert kq.registered == {}  # trio dropped the oneshot registration
    # ready until cleared: the same event again, at once
    assert await aio.wait_ready() is got[0]
    aio.clear_ready(got[0])
    assert aio.into_inner() is source
    assert source.kqueue_fd is None


async def test_a_cancelled_wait_cancels_the_job_and_waits_for_the_kernel() -> None:
    """Abort.FAILED: the event still comes, and trio must have a registration for it."""
    kq, source = FakeKqueue(), FakeSource()
    aio = Aio.for_aio(source, kqueue=kq)
    source.on_cancel = lambda: None
    got: list[AioEvent] = []
    after: list[str] = []

    async def waiter(scope: trio.CancelScope) -> None:
        with scope:
            got.append(await aio.wait_ready())  # returns the event, not Cancelled
            after.append("returned")
            await trio.lowlevel.checkpoint()  # the cancellation arrives here
            after.append("not reached")

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter, scope)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert source.cancels == 1
        assert kq.aborts == 1
        assert (source.ident, EVFILT_AIO) in kq.registered  # still waiting
        kq.post(source.ident, EVFILT_AIO, EV_ONESHOT)  # ECANCELED or done: either way
    assert len(got) == 1
    assert after == ["returned"]
    assert scope.cancelled_caught


async def test_one_waiter_at_a_time() -> None:
    kq, source = FakeKqueue(), FakeSource()
    aio = Aio.for_aio(source, kqueue=kq)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(aio.wait_ready)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(RuntimeError, match="already waiting"):
            await aio.wait_ready()
        with pytest.raises(RuntimeError, match="waiting"):
            aio.into_inner()
        kq.post(source.ident, EVFILT_AIO, EV_ONESHOT)


async def test_for_lio_is_registered_before_submission_and_takes_repeats() -> None:
    """EVFILT_LIO is level-triggered: repeats go to the monitor's queue, never to a crash."""
    kq, source = FakeKqueue(), FakeSource(0x5000)
    aio = Aio.for_lio(source, kqueue=kq)
    assert (0x5000, EVFILT_LIO) in kq.registered  # before lio_listio is called
    kq.post(0x5000, EVFILT_LIO)  # part of the list is done
    first = await aio.wait_ready()
    assert first.filter == EVFILT_LIO
    kq.post(0x5000, EVFILT_LIO)  # reported again (level-triggered)
    assert await aio.wait_ready() is first  # not cleared yet
    aio.clear_ready(first)
    second = await aio.wait_ready()  # the repeat that was queued
    assert second is not first
    aio.clear_ready(first)  # stale: ignored
    assert await aio.wait_ready() is second
    aio.into_inner()
    assert kq.registered == {}


async def test_a_wait_on_a_list_can_be_cancelled() -> None:
    kq, source = FakeKqueue(), FakeSource()
    aio = Aio.for_lio(source, kqueue=kq)
    with trio.move_on_after(0) as scope:
        await aio.wait_ready()
    assert scope.cancelled_caught
    assert (source.ident, EVFILT_LIO) in kq.registered  # still there for the event
    kq.post(source.ident, EVFILT_LIO)
    assert (await aio.wait_ready()).ident == source.ident


async def test_into_inner_is_final() -> None:
    kq, source = FakeKqueue(), FakeSource()
    aio = Aio.for_aio(source, kqueue=kq)
    assert aio.into_inner() is source
    assert aio.into_inner() is source
    with pytest.raises(RuntimeError, match="into_inner"):
        await aio.wait_ready()


def test_without_a_kqueue_the_error_says_so() -> None:
    async def main() -> None:
        with pytest.raises(RuntimeError, match="FreeBSD"):
            Aio.for_aio(FakeSource())

    trio.run(main)

"""Batches: read_many, readinto_many, write_many, and the backends' batch contract."""

from __future__ import annotations

import errno
import os
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import URING_ONLY, cancel_when_in_flight, needs_nowait, pipes_use_threads

import trio_aio
from trio_aio._backends import current_backend_impl
from trio_aio._backends._inline import HAVE_NOWAIT

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


async def test_read_many_matches_pread(data_path: Path, backend: str, ring_only: None) -> None:
    data = data_path.read_bytes()
    rng = random.Random(1)
    ranges = [(rng.randrange(len(data)), rng.randrange(1, 9000)) for _ in range(200)]
    ranges += [(len(data) - 10, 100), (len(data), 5), (0, 0)]  # short and empty at EOF
    async with await trio_aio.open_file(data_path) as f:
        before = trio_aio.statistics()
        got = await f.read_many(ranges)
        after = trio_aio.statistics()
    assert got == [data[off : off + size] for off, size in ranges]
    # one more read: the element cut short by the end of file is asked for the rest
    ran = (after.submitted + after.inline) - (before.submitted + before.inline)
    if backend == "threads" and not HAVE_NOWAIT:  # the batch in one trip to a thread
        assert ran == 2
    else:
        assert ran == len(ranges) + 1
    if after.backend == "io_uring":
        assert before.backend == "io_uring"
        assert after.enter_calls - before.enter_calls == 2  # the batch, then that one
    elif backend == "threads" and HAVE_NOWAIT:
        assert after.inline - before.inline == len(ranges) + 1  # all cached: no thread


async def test_write_many_and_readinto_many(tmp_path: Path) -> None:
    path = tmp_path / "w"
    blocks = [os.urandom(4096) for _ in range(50)]
    async with await trio_aio.open_file(path, "w+b") as f:
        order = list(range(50))
        random.Random(2).shuffle(order)
        counts = await f.write_many([(i * 4096, blocks[i]) for i in order])
        assert counts == [4096] * 50
        buffers = [bytearray(4096) for _ in range(50)]
        assert await f.readinto_many([(i * 4096, buffers[i]) for i in range(50)]) == [4096] * 50
        assert await f.readinto_many([(50 * 4096 - 10, bytearray(20))]) == [10]
        assert await f.write_many([]) == []
    assert [bytes(b) for b in buffers] == blocks
    assert path.read_bytes() == b"".join(blocks)


@URING_ONLY
async def test_batches_larger_than_the_ring(data_path: Path) -> None:
    trio_aio.lowlevel.configure_ring(entries=8, cq_entries=16, max_in_flight=16)
    data = data_path.read_bytes()
    ranges = [(i * 512, 512) for i in range(1000)]
    async with await trio_aio.open_file(data_path) as f:
        got = await f.read_many(ranges)
        stats = trio_aio.statistics()
    assert got == [data[off : off + 512] for off, _ in ranges]
    assert stats.in_flight == 0


async def test_a_failed_element_raises_with_its_index_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    path = tmp_path / "big"
    async with await trio_aio.open_file(path, "w+b") as f:
        with pytest.raises(trio_aio.BatchError) as info:
            await f.write_many([(0, b"first"), (2**62, b"too far"), (10, b"third")])
    error = info.value
    assert error.index == 1
    assert error.errno == errno.EFBIG
    assert error.filename == str(path)
    assert "element 1 of the batch failed" in str(error)
    assert error.results[0] == 5 and error.results[2] == 5
    assert isinstance(error.results[1], OSError) and error.results[1].errno == errno.EFBIG
    assert path.read_bytes() == b"first" + bytes(5) + b"third"  # the others happened


async def test_bad_batches_are_refused_before_submission(data_path: Path) -> None:
    async with await trio_aio.open_file(data_path, "r+b") as f:
        before = trio_aio.statistics().submitted
        with pytest.raises(TypeError, match=r"element 1 must be an \(offset, size\) pair"):
            await f.read_many([(0, 1), (5,)])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="element 2's offset must be non-negative"):
            await f.read_many([(0, 1), (0, 1), (-1, 1)])
        with pytest.raises(TypeError, match="element 0's size must be an integer"):
            await f.read_many([(0, "1")])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="writable"):
            await f.readinto_many([(0, bytearray(1)), (0, b"read-only")])
        with pytest.raises(TypeError, match="not 'str'"):
            await f.write_many([(0, "text")])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="iterable of"):
            await f.write_many(b"ab")  # type: ignore[arg-type]
        assert trio_aio.statistics().submitted == before
    async with await trio_aio.open_file(data_path, "rb") as f:
        with pytest.raises(OSError, match="not writable"):
            await f.write_many([(0, b"x")])


# -- the backends' batch contract, on a pipe (where operations stay in flight) --------


async def test_a_batch_none_of_which_ran_is_cancelled(pipe: tuple[int, int], backend: str) -> None:
    r, _ = pipe
    handle = current_backend_impl().wrap(r)
    views = [memoryview(bytearray(1)) for _ in range(3)]
    with trio.CancelScope() as cs:
        cs.cancel()
        await handle.preadinto_many([(view, -1) for view in views])
    assert cs.cancelled_caught
    await handle.close(close_fd=False)


@needs_nowait  # the byte is read inline; the other read waits for the busy thread
async def test_a_partly_done_cancelled_batch_returns_what_ran(
    pipe: tuple[int, int], backend: str
) -> None:
    """Two pipe reads, one byte in the pipe: one read gets it, the other is cancelled."""
    r, w = pipe
    other_r, other_w = os.pipe()
    if backend == "io_uring":
        blocker = None
    else:
        # The only thread is busy (reading another pipe), so the read that
        # misses waits for it, and is dropped.
        trio_aio.lowlevel.configure_threads(1)
        blocker = current_backend_impl().wrap(other_r)
    handle = current_backend_impl().wrap(r)
    views = [memoryview(bytearray(1)) for _ in range(2)]
    results: list[object] = []
    cs = trio.CancelScope()

    async def batch() -> None:
        with cs:
            results.extend(await handle.preadinto_many([(view, -1) for view in views]))
            await trio.lowlevel.checkpoint()  # the cancellation arrives here
            results.append("not reached")

    async with trio.open_nursery() as nursery:
        if blocker is not None:
            nursery.start_soon(blocker.pread, 1, -1)
            await trio.testing.wait_all_tasks_blocked()
        os.write(w, b"!")
        nursery.start_soon(batch)
        await trio.testing.wait_all_tasks_blocked()
        if backend == "io_uring":
            while trio_aio.statistics().in_flight != 1:  # the byte's read is reaped
                await trio.sleep(0)
        cs.cancel()
        await trio.testing.wait_all_tasks_blocked()
        os.write(other_w, b"?")  # release the blocker's thread
    assert cs.cancelled_caught
    counts = [res for res in results if isinstance(res, int)]
    errors = [res for res in results if isinstance(res, OSError)]
    assert counts == [1] and len(errors) == 1 and errors[0].errno == errno.ECANCELED
    assert b"!" in [bytes(view) for view in views]
    await handle.close(close_fd=False)
    if blocker is not None:
        await blocker.close(close_fd=False)
    os.close(other_r)
    os.close(other_w)


@URING_ONLY
async def test_a_batch_the_kernel_gave_up_is_cancelled(pipe: tuple[int, int]) -> None:
    r, w = pipe
    handle = current_backend_impl().wrap(r)
    views = [memoryview(bytearray(1)) for _ in range(3)]
    with trio.CancelScope() as cs:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_in_flight, cs, 3)
            await handle.preadinto_many([(view, -1) for view in views])
            pytest.fail("the batch should have been cancelled")
    assert cs.cancelled_caught
    stats = trio_aio.statistics()
    assert (stats.in_flight, stats.cancelled) == (0, 3)
    os.write(w, b"abc")  # nothing was read: all three bytes are still there
    assert os.read(r, 3) == b"abc"
    await handle.close(close_fd=False)


async def test_aclose_during_a_batch(pipe: tuple[int, int], backend: str) -> None:
    """Closing the file ends the batch: ClosedResourceError when none of it ran."""
    r, w = pipe
    f = await trio_aio.open_file(r, "rb", closefd=False)
    handle = f._handle
    outcome: list[str] = []

    async def batch() -> None:
        try:
            await handle.preadinto_many([(memoryview(bytearray(1)), -1) for _ in range(2)])
            outcome.append("read")
        except trio.ClosedResourceError:
            outcome.append("closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(batch)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(f.aclose)
        await trio.testing.wait_all_tasks_blocked()
        if pipes_use_threads(backend):
            os.write(w, b"ab")  # a thread cannot be stopped: let it finish
    assert outcome == (["read"] if pipes_use_threads(backend) else ["closed"])

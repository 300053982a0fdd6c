"""Many tasks, many operations: more in flight than the ring has room for, nothing lost."""

from __future__ import annotations

import collections
import os
import random
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import URING_ONLY, thread_statistics, uring_statistics, wait_blocked_in_kernel

import trio_aio

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


async def test_1000_tasks_random_reads_and_writes(tmp_path: Path) -> None:
    """1,000 tasks read and write random blocks; every byte is checked."""
    block = 512
    nblocks = 4096
    path = tmp_path / "big"
    model = bytearray(os.urandom(block * nblocks))
    path.write_bytes(model)
    rng = random.Random(1234)
    # Each task owns the blocks congruent to its number, so no two tasks race
    # on a block and the model stays exact.
    async with await trio_aio.open_file(path, "r+b") as f:

        async def worker(k: int) -> None:
            mine = list(range(k, nblocks, 1000))
            for _ in range(8):
                b = rng.choice(mine)
                if rng.random() < 0.5:
                    data = os.urandom(block)
                    assert await f.write_at(data, b * block) == block
                    model[b * block : (b + 1) * block] = data
                else:
                    got = await f.read_at(block, b * block)
                    assert got == model[b * block : (b + 1) * block]

        async with trio.open_nursery() as nursery:
            for k in range(1000):
                nursery.start_soon(worker, k)
        assert await f.read_at(len(model), 0) == model
    assert path.read_bytes() == model


async def test_10000_concurrent_file_reads(data_path: Path) -> None:
    expected = data_path.read_bytes()
    size = len(expected)
    async with await trio_aio.open_file(data_path) as f:
        results: dict[int, bytes] = {}

        async def reader(i: int) -> None:
            off = (i * 4099) % (size - 100)
            results[i] = await f.read_at(100, off)

        async with trio.open_nursery() as nursery:
            for i in range(10_000):
                nursery.start_soon(reader, i)
    assert len(results) == 10_000
    for i, data in results.items():
        off = (i * 4099) % (size - 100)
        assert data == expected[off : off + 100]
    stats = trio_aio.statistics()
    assert stats.completed == stats.submitted


@URING_ONLY
async def test_10000_operations_in_flight_with_a_tiny_ring(pipe: tuple[int, int]) -> None:
    """10,000 reads held by the kernel at once on a ring of 8 entries and 16 completion slots.

    They are submitted 8 per io_uring_enter, complete together when the pipe is
    written, overflow the completion ring, and every completion is collected.
    """
    trio_aio.lowlevel.configure_ring(entries=8, cq_entries=16, max_in_flight=20_000)
    r, w = pipe
    n = 10_000
    got: list[bytes] = []
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:

        async def reader() -> None:
            got.append(await f.read(1))

        async with trio.open_nursery() as nursery:
            for _ in range(n):
                nursery.start_soon(reader)
            await wait_blocked_in_kernel()
            stats = uring_statistics()
            assert stats.in_flight == n
            assert stats.sq_entries == 8
            assert stats.enter_calls >= n // 8
            payload = bytes(i % 256 for i in range(n))
            assert os.write(w, payload) == n
    assert collections.Counter(b"".join(got)) == collections.Counter(payload)
    stats = uring_statistics()
    assert stats.cq_overflows > 0
    assert stats.in_flight == 0


async def test_more_than_max_in_flight_waits_in_the_queue(
    pipe: tuple[int, int], backend: str
) -> None:
    if backend == "io_uring":
        trio_aio.lowlevel.configure_ring(entries=4, cq_entries=8, max_in_flight=10)
    else:
        trio_aio.lowlevel.configure_threads(10)
    r, w = pipe
    got: list[bytes] = []
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:

        async def reader() -> None:
            got.append(await f.read(1))

        async with trio.open_nursery() as nursery:
            for _ in range(25):
                nursery.start_soon(reader)
            await wait_blocked_in_kernel()
            stats = trio_aio.statistics()
            assert (stats.in_flight, stats.queued) == (10, 15)
            os.write(w, b"a" * 25)
    assert b"".join(got) == b"a" * 25


@URING_ONLY
async def test_configure_ring_rules(data_path: Path) -> None:
    with pytest.raises(ValueError):
        trio_aio.lowlevel.configure_ring(entries=0)
    with pytest.raises(ValueError):
        trio_aio.lowlevel.configure_ring(entries=64, cq_entries=8)
    with pytest.raises(TypeError):
        trio_aio.lowlevel.configure_ring(entries="8")  # type: ignore[arg-type]
    async with await trio_aio.open_file(data_path):
        pass
    with pytest.raises(RuntimeError, match="before the first operation"):
        trio_aio.lowlevel.configure_ring(entries=8)


@pytest.mark.backends("threads")
async def test_configure_threads_rules(data_path: Path) -> None:
    with pytest.raises(ValueError):
        trio_aio.lowlevel.configure_threads(0)
    with pytest.raises(TypeError):
        trio_aio.lowlevel.configure_threads(2.0)  # type: ignore[arg-type]
    trio_aio.lowlevel.configure_threads(3)
    async with await trio_aio.open_file(data_path):
        pass
    assert thread_statistics().max_threads == 3
    with pytest.raises(RuntimeError, match="before the run's first operation"):
        trio_aio.lowlevel.configure_threads(8)

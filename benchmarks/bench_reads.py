"""4 KiB random reads from a page-cached file by 32 concurrent trio tasks.

Compares, in one run and on the same file:

* ``trio_aio``: ``AsyncFile.read_at`` on each backend that works here
  (io_uring; threads, whose reads of cached data take the ``RWF_NOWAIT``
  fast path on the event loop's thread);
* ``trio.open_file``: one file object per task, ``seek`` then ``read``
  (each call a trip to a worker thread);
* ``trio.to_thread.run_sync(os.pread)``: the cheapest thread offload;
* ``read_many``: batches of 64 per task, one wakeup per batch;
* a synchronous ``os.pread`` loop, the kernel's own rate for one thread.

Prints operations per second for each (median of the rounds) and each one's
ratio to ``trio.open_file``. Absolute numbers drift 10-25% between runs on
shared machines; the ratios are what to compare.

    python benchmarks/bench_reads.py [--size-mib 256] [--tasks 32] [--seconds 1.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import trio

import trio_aio

BLOCK = 4096

Way = Callable[[str, int, int, float], Awaitable[int]]


def make_file(path: str, size: int) -> None:
    chunk = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
    # Read it once so that every read below is a page-cache hit.
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def offsets(seed: int, blocks: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(blocks) * BLOCK for _ in range(4096)]


async def run_tasks(
    tasks: int, worker: Callable[[int, Callable[[], bool]], Awaitable[int]], seconds: float
) -> int:
    """Run ``tasks`` workers until ``seconds`` pass; returns the operations they did."""
    counts: list[int] = []
    deadline = time.perf_counter() + seconds

    def more() -> bool:
        return time.perf_counter() < deadline

    async def one(i: int) -> None:
        counts.append(await worker(i, more))

    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(one, i)
    return sum(counts)


def way_trio_aio(backend: str) -> Way:
    async def way(path: str, size: int, tasks: int, seconds: float) -> int:
        trio_aio.select_backend(backend)
        return await read_at_tasks(path, size, tasks, seconds)

    return way


async def read_at_tasks(path: str, size: int, tasks: int, seconds: float) -> int:
    async with await trio_aio.open_file(path, "rb") as f:

        async def worker(i: int, more: Callable[[], bool]) -> int:
            offs = offsets(i, size // BLOCK)
            n = 0
            while more():
                for off in offs[:64]:
                    await f.read_at(BLOCK, off)
                n += 64
                offs.append(offs.pop(0))
            return n

        return await run_tasks(tasks, worker, seconds)


async def way_trio_open_file(path: str, size: int, tasks: int, seconds: float) -> int:
    async def worker(i: int, more: Callable[[], bool]) -> int:
        offs = offsets(i, size // BLOCK)
        n = 0
        async with await trio.open_file(path, "rb") as f:
            while more():
                for off in offs[:16]:
                    await f.seek(off)
                    await f.read(BLOCK)
                n += 16
        return n

    return await run_tasks(tasks, worker, seconds)


async def way_to_thread_pread(path: str, size: int, tasks: int, seconds: float) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:

        async def worker(i: int, more: Callable[[], bool]) -> int:
            offs = offsets(i, size // BLOCK)
            n = 0
            while more():
                for off in offs[:16]:
                    await trio.to_thread.run_sync(os.pread, fd, BLOCK, off)
                n += 16
            return n

        return await run_tasks(tasks, worker, seconds)
    finally:
        os.close(fd)


def way_read_many(backend: str) -> Way:
    """Each task reads batches of 64 with read_many: one wakeup per batch."""

    async def way(path: str, size: int, tasks: int, seconds: float) -> int:
        trio_aio.select_backend(backend)
        async with await trio_aio.open_file(path, "rb") as f:

            async def worker(i: int, more: Callable[[], bool]) -> int:
                offs = offsets(i, size // BLOCK)
                n = 0
                while more():
                    await f.read_many([(off, BLOCK) for off in offs[:64]])
                    n += 64
                    offs.append(offs.pop(0))
                return n

            return await run_tasks(tasks, worker, seconds)

    return way


async def way_sync_pread(path: str, size: int, tasks: int, seconds: float) -> int:
    """The synchronous loop: os.pread on the event loop's thread (the kernel's rate)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        offs = offsets(0, size // BLOCK)
        n = 0
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            for off in offs[:256]:
                os.pread(fd, BLOCK, off)
            n += 256
            offs.append(offs.pop(0))
        await trio.lowlevel.checkpoint()
        return n
    finally:
        os.close(fd)


WAYS: dict[str, Way] = {
    **{f"trio_aio {name}": way_trio_aio(name) for name in trio_aio.available_backends()},
    **{f"read_many {name}": way_read_many(name) for name in trio_aio.available_backends()},
    "os.pread loop (sync)": way_sync_pread,
    "trio.open_file": way_trio_open_file,
    "to_thread(os.pread)": way_to_thread_pread,
}
BASELINE = "trio.open_file"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1.5, help="per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where to put the file (default: tmp)")
    args = parser.parse_args()

    size = args.size_mib << 20
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "bench.bin")
        print(f"preparing a page-cached {args.size_mib} MiB file ...", flush=True)
        make_file(path, size)
        rates: dict[str, list[float]] = {name: [] for name in WAYS}
        for rnd in range(args.rounds):
            for name, way in WAYS.items():
                start = time.perf_counter()
                ops = trio.run(way, path, size, args.tasks, args.seconds)
                rate = ops / (time.perf_counter() - start)
                rates[name].append(rate)
                print(f"  round {rnd + 1}: {name:<22} {rate:>12,.0f} ops/s", flush=True)

    print()
    print(f"4 KiB random reads, page cache warm, {args.tasks} tasks, median of {args.rounds}:")
    base = statistics.median(rates[BASELINE])
    print(f"{'way':<22} {'ops/s':>12} {'spread':>8} {'vs ' + BASELINE:>20}")
    for name, values in rates.items():
        med = statistics.median(values)
        spread = (max(values) - min(values)) / med if med else 0.0
        print(f"{name:<22} {med:>12,.0f} {spread:>7.0%} {med / base:>19.1f}x")


if __name__ == "__main__":
    main()

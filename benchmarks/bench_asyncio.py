"""4 KiB random reads from a page-cached file by 32 concurrent asyncio tasks.

Compares, in one run, under ``anyio.run(..., backend="asyncio")``:

* ``trio_aio``: ``AsyncFile.read_at`` on each backend that works here;
* ``trio_aio.streams.FileReadStream``: ``seek`` then ``receive`` per read;
* ``anyio.open_file``: one file object per task, ``seek`` then ``read``
  (each call a trip to a worker thread), the peer trio_aio replaces.

Prints operations per second (median of the rounds) and each one's ratio to
``anyio.open_file``; absolute numbers drift 10-25% between runs here.

    python benchmarks/bench_asyncio.py [--size-mib 256] [--tasks 32] [--seconds 1.5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

import anyio

import trio_aio
from trio_aio._diagnose import make_cached_file as make_file
from trio_aio.streams import FileReadStream

BLOCK = 4096

Way = Callable[[str, int, int, float], Awaitable[int]]


async def _run_tasks(tasks: int, one: Callable[[random.Random], Awaitable[int]]) -> int:
    """Run ``one`` in ``tasks`` tasks at once; the sum of their counts."""
    counts: list[int] = []

    async def task(i: int) -> None:
        counts.append(await one(random.Random(i)))

    async with anyio.create_task_group() as tg:
        for i in range(tasks):
            tg.start_soon(task, i)
    return sum(counts)


async def trio_aio_read_at(path: str, blocks: int, tasks: int, seconds: float) -> int:
    """``read_at`` from one shared AsyncFile."""
    async with await trio_aio.open_file(path, "rb") as f:
        end = time.perf_counter() + seconds

        async def one(rng: random.Random) -> int:
            n = 0
            while time.perf_counter() < end:
                await f.read_at(BLOCK, rng.randrange(blocks) * BLOCK)
                n += 1
            return n

        return await _run_tasks(tasks, one)


async def trio_aio_stream(path: str, blocks: int, tasks: int, seconds: float) -> int:
    """One FileReadStream per task: seek, then receive."""
    end = time.perf_counter() + seconds

    async def one(rng: random.Random) -> int:
        n = 0
        async with await FileReadStream.from_path(path) as stream:
            while time.perf_counter() < end:
                await stream.seek(rng.randrange(blocks) * BLOCK)
                await stream.receive(BLOCK)
                n += 1
        return n

    return await _run_tasks(tasks, one)


async def anyio_open_file(path: str, blocks: int, tasks: int, seconds: float) -> int:
    """One anyio.open_file object per task: seek, then read."""
    end = time.perf_counter() + seconds

    async def one(rng: random.Random) -> int:
        n = 0
        async with await anyio.open_file(path, "rb") as f:
            while time.perf_counter() < end:
                await f.seek(rng.randrange(blocks) * BLOCK)
                await f.read(BLOCK)
                n += 1
        return n

    return await _run_tasks(tasks, one)


def main() -> None:
    """Run every way, round after round, and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=1.5, help="per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.bin")
        print(f"preparing a page-cached {args.size_mib} MiB file ...")
        make_file(path, args.size_mib << 20)
        blocks = (args.size_mib << 20) // BLOCK

        ways: list[tuple[str, str | None, Way]] = []
        for available in trio_aio.available_backends():
            ways.append((f"trio_aio {available}", available, trio_aio_read_at))
            ways.append((f"streams {available}", available, trio_aio_stream))
        ways.append(("anyio.open_file", None, anyio_open_file))

        results: dict[str, list[float]] = {name: [] for name, _, _ in ways}
        for round_ in range(1, args.rounds + 1):
            for name, backend, way in ways:
                if backend is not None:
                    trio_aio.select_backend(backend)
                start = time.perf_counter()
                ops = anyio.run(way, path, blocks, args.tasks, args.seconds, backend="asyncio")
                rate = ops / (time.perf_counter() - start)
                results[name].append(rate)
                print(f"  round {round_}: {name:24} {rate:>12,.0f} ops/s")

    peer = statistics.median(results["anyio.open_file"])
    print(
        f"\n4 KiB random reads, page cache warm, {args.tasks} asyncio tasks, "
        f"median of {args.rounds}:"
    )
    print(f"{'way':24} {'ops/s':>12} {'spread':>8} {'vs anyio.open_file':>20}")
    for name, rates in results.items():
        med = statistics.median(rates)
        spread = (max(rates) - min(rates)) / med
        print(f"{name:24} {med:>12,.0f} {spread:>7.0%} {med / peer:>19.1f}x")


if __name__ == "__main__":
    main()

"""Where the time of one cached 4 KiB read goes: trio_aio's layers as ratios to the least.

Tasks (1 and 32 by default: ``--tasks``) read random 4 KiB blocks of a file
in the page cache.  The reference is **the minimal inline read**, what the
inline path (``trio_aio/_backends/_inline.py``) must do at the least:

* on trio: ``checkpoint_if_cancelled()``, ``os.preadv(fd, [buf], off,
  RWF_NOWAIT)`` into a new ``bytearray``, ``cancel_shielded_checkpoint()``,
  and a ``bytes`` result;
* on asyncio (``--loop asyncio``, under ``anyio.run(..., backend="asyncio")``):
  the same with one ``await asyncio.sleep(0)`` for the two checkpoints (plain
  asyncio has no "raise a pending cancellation without yielding"; what
  anyio's cancel scopes add to that is part of trio_aio's cost).

Beside it, each as a ratio to it:

* the bare yield (``cancel_shielded_checkpoint()``, or ``asyncio.sleep(0)``),
  no I/O: the loop's own ceiling;
* that yield plus ``preadv2(RWF_NOWAIT)`` into one reused buffer;
* the backend's ``pread`` (``AsyncFile._handle.pread``): the inline path
  with its counters, as the backend runs it;
* ``AsyncFile.read_at``: argument checks and the short-read loop on top.

Method: ``--rounds`` interleaved rounds; in each, every way runs once for
``--seconds`` per task count, in an order rotated from round to round.  Each
way's ratio to the minimal read is taken within a round, and the table gives
the median rate, the median of the per-round ratios with their range
[min-max], and the median extra time per read against the minimal read
(1/rate - 1/rate_minimal, within a round: all tasks share one thread, so
1/rate is the time one read costs).  Every way is an async callable awaited
directly by the measuring loop (no wrapper coroutine of the benchmark's own).
Usage::

    python benchmarks/layers.py [--tasks 1,32] [--rounds 7] [--seconds 0.5]
        [--backend io_uring|threads] [--loop trio|asyncio] [--size-mib 64]

With no arguments it takes about 40 s (2-vCPU VM).  The file goes to a temporary
directory (``--dir`` to choose one that is not tmpfs).  trio is not imported
with ``--loop asyncio``, nor anyio with ``--loop trio``.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import trio_aio
from trio_aio._diagnose import make_cached_file as make_file

BLOCK = 4096
MIB = 1 << 20
OFFSETS = 4096  # a power of two: the loop wraps with a mask
WARMUP = 0.05  # seconds per way and task count, before the first round

Read = Callable[[int, int], Awaitable[Any]]
MINIMAL = "minimal inline read"


class Loop:
    """The few things the measurement needs from trio or asyncio."""

    name: str

    async def run_tasks(
        self, tasks: int, worker: Callable[[int], Coroutine[Any, Any, None]]
    ) -> None:
        """Run ``worker(0) ... worker(tasks - 1)`` at once; return when all are done."""
        raise NotImplementedError

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        """Run ``main`` on this loop."""
        raise NotImplementedError


class TrioLoop(Loop):
    name = "trio"

    def __init__(self) -> None:
        import trio

        self.trio = trio
        self.check: Callable[[], Awaitable[None]] = trio.lowlevel.checkpoint_if_cancelled
        self.yield_: Callable[[], Awaitable[None]] = trio.lowlevel.cancel_shielded_checkpoint

    async def run_tasks(
        self, tasks: int, worker: Callable[[int], Coroutine[Any, Any, None]]
    ) -> None:
        async with self.trio.open_nursery() as nursery:
            for k in range(tasks):
                nursery.start_soon(worker, k)

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        self.trio.run(main)


class AsyncioLoop(Loop):
    name = "asyncio"

    def __init__(self) -> None:
        import anyio

        self.anyio = anyio

    async def run_tasks(
        self, tasks: int, worker: Callable[[int], Coroutine[Any, Any, None]]
    ) -> None:
        async with self.anyio.create_task_group() as tg:
            for k in range(tasks):
                tg.start_soon(worker, k)

    def run(self, main: Callable[[], Awaitable[None]]) -> None:
        self.anyio.run(main, backend="asyncio")


def ways(loop: Loop, fd: int, f: trio_aio.AsyncFile) -> dict[str, Read]:
    """The ways to read, by name, in the table's order."""
    preadv = os.preadv
    nowait = os.RWF_NOWAIT
    shared = bytearray(BLOCK)
    if isinstance(loop, TrioLoop):
        check = loop.check
        yield_ = loop.yield_

        def bare_yield(size: int, off: int) -> Awaitable[None]:
            return yield_()

        async def yield_pread(size: int, off: int) -> None:
            try:
                preadv(fd, [shared], off, nowait)
            except BlockingIOError:  # evicted meanwhile (rare)
                preadv(fd, [shared], off)
            await yield_()

        async def minimal(size: int, off: int) -> bytes:
            await check()
            data = bytearray(size)
            try:
                n = preadv(fd, [data], off, nowait)
            except BlockingIOError:  # evicted meanwhile (rare)
                n = preadv(fd, [data], off)
            await yield_()
            if n < size:
                del data[n:]
            return bytes(data)

        yield_name = "cancel_shielded_checkpoint"
    else:
        import asyncio

        sleep = asyncio.sleep

        def bare_yield(size: int, off: int) -> Awaitable[None]:
            return sleep(0)

        async def yield_pread(size: int, off: int) -> None:
            try:
                preadv(fd, [shared], off, nowait)
            except BlockingIOError:
                preadv(fd, [shared], off)
            await sleep(0)

        async def minimal(size: int, off: int) -> bytes:
            # (one sleep(0) is asyncio's checkpoint: no check before the system call)
            data = bytearray(size)
            try:
                n = preadv(fd, [data], off, nowait)
            except BlockingIOError:
                n = preadv(fd, [data], off)
            await sleep(0)
            if n < size:
                del data[n:]
            return bytes(data)

        yield_name = "asyncio.sleep(0)"

    return {
        f"bare yield: {yield_name}": bare_yield,
        "yield + preadv2(RWF_NOWAIT), one buffer": yield_pread,
        MINIMAL: minimal,
        f"backend pread ({trio_aio.current_backend()})": f._handle.pread,
        "AsyncFile.read_at": f.read_at,
    }


async def measure(
    loop: Loop, tasks: int, offsets: list[int], read: Read, seconds: float
) -> tuple[int, float]:
    """How many reads ``tasks`` tasks calling ``read`` for ``seconds`` did, and in what time."""
    count = 0
    mask = len(offsets) - 1
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds

    async def worker(k: int) -> None:
        nonlocal count
        i = k * 97
        while clock() < deadline:
            for _ in range(16):
                await read(BLOCK, offsets[i & mask])
                i += 1
            count += 16

    await loop.run_tasks(tasks, worker)
    return count, clock() - start


def report(
    tasks: int, rates: dict[str, list[float]], rounds: int, seconds: float, loop: Loop
) -> list[str]:
    ref = rates[MINIMAL]
    lines = [
        "",
        f"{tasks} task{'s' if tasks > 1 else ''} ({loop.name}), "
        f"{rounds} rounds of {seconds:g} s per way:",
        f"  {'way':<42} {'ops/s median':>12}  {'ratio median [min-max]':>22}"
        f"  {'extra us/read':>13}",
    ]
    for name, values in rates.items():
        ratios = [v / r for v, r in zip(values, ref, strict=True)]
        extra = [1e6 / v - 1e6 / r for v, r in zip(values, ref, strict=True)]
        ratio = f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
        lines.append(
            f"  {name:<42} {statistics.median(values):>12,.0f}  {ratio:>22}  "
            f"{statistics.median(extra):>+13.2f}"
        )
    return lines


async def bench(
    loop: Loop,
    path: str,
    size: int,
    task_counts: list[int],
    rounds: int,
    seconds: float,
) -> None:
    rng = random.Random(14)
    offsets = [rng.randrange(size // BLOCK) * BLOCK for _ in range(OFFSETS)]
    fd = os.open(path, os.O_RDONLY)
    try:
        async with await trio_aio.open_file(path, "rb") as f:
            table = ways(loop, fd, f)
            # Every way reads the same bytes (a check, and the run's first operation).
            expected = os.pread(fd, BLOCK, offsets[1])
            for name, read in table.items():
                got = await read(BLOCK, offsets[1])
                if got is not None and got != expected:
                    raise AssertionError(f"{name} read the wrong bytes")
            names = list(table)
            for tasks in task_counts:
                for name in names:
                    await measure(loop, tasks, offsets, table[name], WARMUP)
            library = names[names.index(MINIMAL) + 1 :]  # the ways through trio_aio
            library_reads = 0
            inline = trio_aio.statistics().inline
            rates: dict[int, dict[str, list[float]]] = {
                t: {n: [] for n in names} for t in task_counts
            }
            for rnd in range(rounds):
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for tasks in task_counts:
                    for name in order:
                        count, elapsed = await measure(loop, tasks, offsets, table[name], seconds)
                        rates[tasks][name].append(count / elapsed)
                        if name in library:
                            library_reads += count
                print(f"round {rnd + 1}/{rounds} done", file=sys.stderr, flush=True)
            inline = trio_aio.statistics().inline - inline
    finally:
        os.close(fd)
    for tasks in task_counts:
        print("\n".join(report(tasks, rates[tasks], rounds, seconds, loop)))
    # The rounds must have stayed on the inline path, or they measured something else.
    print(
        f"\n{trio_aio.current_backend()}: {inline:,} of trio_aio's {library_reads:,} reads "
        "in the rounds were served inline"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--tasks", default="1,32", help="comma-separated task counts")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5, help="per way, task count, round")
    parser.add_argument("--backend", default="io_uring", choices=["io_uring", "threads"])
    parser.add_argument("--loop", default="trio", choices=["trio", "asyncio"])
    parser.add_argument("--size-mib", type=int, default=64)
    parser.add_argument("--dir", default=None, help="where the test file goes")
    args = parser.parse_args()
    task_counts = [int(t) for t in args.tasks.split(",")]
    try:
        trio_aio.select_backend(args.backend)
    except trio_aio.BackendUnavailableError as exc:
        if args.backend != "io_uring":
            raise
        print(f"{exc}\n(so: the thread backend)", file=sys.stderr)
        trio_aio.select_backend("threads")
    loop: Loop = AsyncioLoop() if args.loop == "asyncio" else TrioLoop()
    print(
        f"cached {BLOCK // 1024} KiB random reads: {platform.node()}, Linux {platform.release()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {loop.name}, "
        f"{trio_aio.current_backend()}; load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = os.path.join(tmp, "layers.bin")
        size = args.size_mib * MIB
        make_file(path, size)

        async def run() -> None:
            await bench(loop, path, size, task_counts, args.rounds, args.seconds)

        loop.run(run)


if __name__ == "__main__":
    main()

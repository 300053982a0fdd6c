"""Where the time of one cached 4 KiB read goes: each layer of trio_aio, peeled off.

32 trio tasks (``--tasks``) read random cached blocks, each way for one
second, in one run:

1. ``cancel_shielded_checkpoint`` alone: trio's cheapest yield;
2. ``preadv2(RWF_NOWAIT)`` into a reused buffer + that yield;
3. the same with ``checkpoint_if_cancelled`` first and a new ``bytes`` result:
   what the inline path must do at the least;
4. the backend's ``pread`` (``trio_aio._backends``), loop lookup and counters
   included;
5. ``AsyncFile.read_at``: argument checks and the short-read loop on top.

    python benchmarks/layers.py [--tasks 32] [--size-mib 64]
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from collections.abc import Awaitable, Callable

import trio
from suite import make_file

import trio_aio

BLOCK = 4096


async def measure(
    name: str, tasks: int, offsets: list[int], op: Callable[[int], Awaitable[object]]
) -> None:
    count = 0
    start = time.perf_counter()
    deadline = start + 1.0

    async def worker() -> None:
        nonlocal count
        i = 0
        while time.perf_counter() < deadline:
            for _ in range(16):
                await op(offsets[i % len(offsets)])
                i += 1
            count += 16

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)
    print(f"{name:<52} {count / (time.perf_counter() - start):>10,.0f}/s", flush=True)


async def main(path: str, size: int, tasks: int) -> None:
    offsets = [random.randrange(size // BLOCK) * BLOCK for _ in range(4096)]
    fd = os.open(path, os.O_RDONLY)
    buf = bytearray(BLOCK)

    def nowait(target: bytearray, off: int) -> None:
        try:
            os.preadv(fd, [target], off, os.RWF_NOWAIT)
        except BlockingIOError:  # rare: evicted meanwhile
            os.preadv(fd, [target], off)

    async def yield_only(off: int) -> None:
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def pread_and_yield(off: int) -> None:
        nowait(buf, off)
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def least_inline(off: int) -> bytes:
        await trio.lowlevel.checkpoint_if_cancelled()
        data = bytearray(BLOCK)
        nowait(data, off)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return bytes(data)

    await measure("1. cancel_shielded_checkpoint", tasks, offsets, yield_only)
    await measure("2. + preadv2(RWF_NOWAIT) into one buffer", tasks, offsets, pread_and_yield)
    await measure("3. + checkpoint_if_cancelled, new bytes", tasks, offsets, least_inline)
    async with await trio_aio.open_file(path, "rb") as f:
        handle = f._handle  # the backend file, below the file layer

        async def backend(off: int) -> bytes:
            return await handle.pread(BLOCK, off)

        async def read_at(off: int) -> bytes:
            return await f.read_at(BLOCK, off)

        await measure(f"4. backend pread ({trio_aio.current_backend()})", tasks, offsets, backend)
        await measure("5. AsyncFile.read_at", tasks, offsets, read_at)
    os.close(fd)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=32)
    parser.add_argument("--size-mib", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "layers.bin")
        make_file(path, args.size_mib << 20)
        trio.run(main, path, args.size_mib << 20, args.tasks)

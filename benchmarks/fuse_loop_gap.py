"""Does the event loop keep ticking while a FUSE daemon holds a read for a second?

Mounts the tests' FUSE file system (``tests/fusefs.py``; needs root and
``/dev/fuse``), opens a file on it in direct-I/O mode, and has the daemon
hold one read for 1 s while a task ticks the loop (``sleep(0)``) and records
the largest gap between two ticks.  Then it holds a write, cancels the
writer, and times how long the cancelled ``write_at`` takes to return.  On
each backend, on trio and on asyncio.

    sudo .venv/bin/python benchmarks/fuse_loop_gap.py
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fusefs import FuseFS, unavailable_reason

import trio_aio

HOLD = 1.0
DATA = bytes(i % 251 for i in range(1 << 16))


async def largest_gap(fuse: FuseFS) -> tuple[float, int]:
    """The largest gap between loop ticks while the daemon holds a read for HOLD seconds."""
    async with await trio_aio.open_file(fuse.path("f"), "rb") as f:
        stall = fuse.stall("read", "f")
        gaps: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(f.read_at, 4096, 0)
            await anyio.to_thread.run_sync(stall.wait_arrived)
            timer = threading.Timer(HOLD, stall.release)
            timer.start()
            last = time.monotonic()
            while not stall.replied.is_set():
                await anyio.sleep(0)
                now = time.monotonic()
                gaps.append(now - last)
                last = now
        return max(gaps), len(gaps)


async def cancelled_write(fuse: FuseFS) -> float:
    """Seconds from cancelling a write the daemon holds to the writer's return."""
    async with await trio_aio.open_file(fuse.path("f"), "r+b") as f:
        stall = fuse.stall("write", "f")
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(f.write_at, b"x" * 4096, 0)
                await anyio.to_thread.run_sync(stall.wait_arrived)
                start = time.monotonic()
                scope.cancel()
        took = time.monotonic() - start
        stall.release()
        return took


def main() -> None:
    reason = unavailable_reason()
    if reason is not None:
        sys.exit(f"cannot mount the FUSE test file system here: {reason}")
    print(
        f"| backend | loop | largest gap while a read is held {HOLD:.0f} s | ticks "
        "| a cancelled held write returns after |"
    )
    print("|---|---|---:|---:|---:|")
    for backend in trio_aio.available_backends():
        trio_aio.select_backend(backend)
        for loop in ("trio", "asyncio"):
            with FuseFS(files={"f": DATA}, direct_io=True, stall_timeout=10.0) as fuse:
                gap, ticks = anyio.run(largest_gap, fuse, backend=loop)
                took = anyio.run(cancelled_write, fuse, backend=loop)
            print(f"| {backend} | {loop} | {gap * 1e3:.2f} ms | {ticks} | {took * 1e3:.1f} ms |")


if __name__ == "__main__":
    main()

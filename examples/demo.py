"""A tour of trio_aio: parallel positional I/O, a real cancellation, and the statistics.

Run it with no arguments (it works in a temporary directory) or give it a
directory to work in:

    python examples/demo.py [DIRECTORY]

It writes a 64 MiB file from 16 tasks with ``write_at``, reads it back from
32 tasks with ``read_at`` and checks every byte against a SHA-256 of what was
written, then starts a read from a pipe that nobody writes to and cancels it:
the kernel gives the read up, and the data written to the pipe afterwards is
all still there.

Where io_uring is unavailable (or with ``TRIO_AIO_BACKEND=threads``) the same
code runs on the thread backend; a read already running in a worker thread
cannot be stopped, so there the demo shows the cancelled task waiting for it
and keeping its data.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time

import trio

import trio_aio

SIZE = 64 << 20
CHUNK = 1 << 20


def chunk_data(i: int) -> bytes:
    """Deterministic, distinct content for chunk ``i``."""
    return hashlib.shake_256(i.to_bytes(8, "little")).digest(CHUNK)


async def write_file(path: str) -> str:
    """Write the file from 16 tasks; returns the SHA-256 of what was written."""
    async with await trio_aio.open_file(path, "wb") as f:
        await f.allocate(0, SIZE)

        async def writer(first: int) -> None:
            for i in range(first, SIZE // CHUNK, 16):
                await f.write_at(chunk_data(i), i * CHUNK)

        async with trio.open_nursery() as nursery:
            for first in range(16):
                nursery.start_soon(writer, first)
        await f.datasync()
    expected = hashlib.sha256()
    for i in range(SIZE // CHUNK):
        expected.update(chunk_data(i))
    return expected.hexdigest()


async def read_file(path: str) -> str:
    """Read the file back from 32 tasks; returns the SHA-256 of what was read."""
    parts: dict[int, bytes] = {}
    async with await trio_aio.open_file(path, "rb") as f:

        async def reader(first: int) -> None:
            for i in range(first, SIZE // CHUNK, 32):
                parts[i] = await f.read_at(CHUNK, i * CHUNK)

        async with trio.open_nursery() as nursery:
            for first in range(32):
                nursery.start_soon(reader, first)
    digest = hashlib.sha256()
    for i in range(SIZE // CHUNK):
        digest.update(parts[i])
    return digest.hexdigest()


async def cancel_a_pipe_read() -> None:
    """Cancel a read from a pipe nobody writes to, and show that nothing was lost.

    A pipe is not a disk: trio_aio waits for it to become readable (no ring
    operation, no thread), so the cancelled read holds nothing.
    """
    r, w = os.pipe()
    try:
        async with await trio_aio.open_file(r, "rb", closefd=False) as f:
            with trio.move_on_after(0.2) as scope:
                await f.read(5)  # nobody writes: waits until cancelled
            print(f"  pipe read cancelled after 0.2 s: {scope.cancelled_caught}")
            os.write(w, b"hello")
            print(f"  written afterwards, read back whole: {await f.read(5)!r}")
    finally:
        os.close(r)
        os.close(w)


async def main(directory: str) -> None:
    """Run the tour in ``directory``."""
    path = os.path.join(directory, "trio_aio-demo.bin")
    print(f"backend: {trio_aio.current_backend()}")

    start = time.perf_counter()
    expected = await write_file(path)
    elapsed = time.perf_counter() - start
    print(f"wrote {SIZE >> 20} MiB from 16 tasks in {elapsed:.2f} s")

    start = time.perf_counter()
    got = await read_file(path)
    elapsed = time.perf_counter() - start
    print(
        f"read {SIZE >> 20} MiB from 32 tasks in {elapsed:.2f} s "
        f"({SIZE / elapsed / (1 << 20):,.0f} MiB/s)"
    )
    if got != expected:
        raise SystemExit("data mismatch!")
    print(f"sha256 matches: {got[:16]}...")

    await cancel_a_pipe_read()
    os.unlink(path)

    stats = trio_aio.statistics()
    if stats.backend == "io_uring":
        print(
            f"statistics: {stats.submitted} operations submitted in {stats.enter_calls} "
            f"io_uring_enter calls, {stats.cancelled} cancelled in the kernel, "
            f"{stats.in_flight} in flight"
        )
    else:
        print(
            f"statistics: {stats.inline} operations served from the page cache without a "
            f"thread, {stats.submitted} in worker threads, {stats.in_flight} in flight"
        )


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="A tour of trio_aio: parallel positional I/O, a real cancellation, "
        "and the statistics."
    )
    parser.add_argument(
        "directory",
        nargs="?",
        help="where to write the demo's 64 MiB file (default: a temporary directory)",
    )
    args = parser.parse_args()
    if args.directory is not None:
        trio.run(main, args.directory)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            trio.run(main, tmp)

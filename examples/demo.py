"""A tour of trio_aio: how fast, how cancellation works, and what the statistics say.

Run it with no arguments (it works in a temporary directory that it makes in
the current directory, and removes) or give it a directory to work in:

    python examples/demo.py [DIRECTORY] [--seconds S]

1. It writes a 64 MiB file from 16 tasks with ``write_at``, reads it back
   from 32 tasks with ``read_at`` and checks every byte.
2. It reads random 4 KiB blocks of that file (in the page cache) from 32
   tasks, for S seconds with trio_aio and S seconds with ``trio.open_file``,
   and prints both rates.
3. It starts many ``O_DIRECT`` reads at once (never served from the page
   cache), cancels them with ``trio.move_on_after``, and shows what became
   of each, from its task and from ``trio_aio.statistics()``: dropped before
   it reached the kernel, cancelled in the kernel, or too far along to stop
   (then its task waits and gets the data, which the demo checks). On a
   local disk the kernel has usually started every read it holds; so the
   demo does the same with ``datasync()`` calls, which the kernel queues and
   does give up.
4. It prints ``trio_aio.statistics()`` in plain words.

Where io_uring is unavailable (or with ``TRIO_AIO_BACKEND=threads``) the same
code runs on the thread backend: an operation already running in a worker
thread cannot be stopped, so there the demo shows the cancelled tasks waiting
for their threads and keeping their data.

The directory matters for part 3: on tmpfs (``/tmp`` on many systems) files
live in memory, nothing waits for a disk and there is little to cancel; the
demo says what it saw.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator

import trio

import trio_aio

SIZE = 64 << 20  # the demo file
CHUNK = 1 << 20  # written and read back 1 MiB at a time
BLOCK = 4096  # part 2: random 4 KiB reads
TASKS = 32
READS = 512  # part 3: the whole file as 512 reads of 128 KiB, all at once
SYNCS = 32  # part 3: datasync() of 32 files at once
TIMEOUT = 0.01  # part 3: how long the tasks wait before they give up


def make_content() -> list[bytes]:
    """Deterministic, distinct content for each 1 MiB chunk of the file."""
    return [hashlib.shake_256(i.to_bytes(8, "little")).digest(CHUNK) for i in range(SIZE // CHUNK)]


# -- 1. parallel positional writes and reads ----------------------------------------------


async def write_file(path: str, chunks: list[bytes]) -> None:
    """Write the file from 16 tasks, each ``write_at`` its own chunks, and make it durable."""
    async with await trio_aio.open_file(path, "wb") as f:
        await f.allocate(0, SIZE)

        async def writer(first: int) -> None:
            for i in range(first, len(chunks), 16):
                await f.write_at(chunks[i], i * CHUNK)

        async with trio.open_nursery() as nursery:
            for first in range(16):
                nursery.start_soon(writer, first)
        await f.datasync()


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
    return hashlib.sha256(b"".join(parts[i] for i in range(SIZE // CHUNK))).hexdigest()


# -- 2. trio_aio beside trio.open_file ---------------------------------------------------------


async def reads_per_second(read: Callable[[int, int], Awaitable[bytes]], seconds: float) -> float:
    """How many random 4 KiB reads ``TASKS`` tasks calling ``read(task, offset)`` do per second."""
    count = 0
    deadline = trio.current_time() + seconds

    async def task(k: int) -> None:
        nonlocal count
        rng = random.Random(k)
        while trio.current_time() < deadline:
            await read(k, rng.randrange(SIZE // BLOCK) * BLOCK)
            count += 1

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for k in range(TASKS):
            nursery.start_soon(task, k)
    return count / (time.perf_counter() - start)


async def compare_with_trio(path: str, seconds: float) -> None:
    """Random cached 4 KiB reads from 32 tasks: trio_aio, then trio.open_file."""
    async with await trio_aio.open_file(path, "rb") as ours:

        async def ours_read(k: int, offset: int) -> bytes:
            return await ours.read_at(BLOCK, offset)

        ours_rate = await reads_per_second(ours_read, seconds)

    # trio.open_file has no positional read: one unbuffered file per task, seek + read.
    theirs = [await trio.open_file(path, "rb", buffering=0) for _ in range(TASKS)]
    try:

        async def theirs_read(k: int, offset: int) -> bytes:
            await theirs[k].seek(offset)
            return await theirs[k].read(BLOCK)

        theirs_rate = await reads_per_second(theirs_read, seconds)
    finally:
        for f in theirs:
            await f.aclose()

    print(f"2. random 4 KiB reads of that file (cached), {TASKS} tasks, {seconds:g} s each:")
    print(f"     trio_aio.open_file  {ours_rate:>10,.0f} reads/s")
    print(f"     trio.open_file      {theirs_rate:>10,.0f} reads/s  (a worker thread per call)")
    print(f"   trio_aio did {ours_rate / theirs_rate:.1f}x the reads of trio.open_file")


# -- 3. cancellation ----------------------------------------------------------------------------


def say(text: str, indent: int = 5) -> None:
    """Print ``text`` wrapped to 100 columns, indented, with further lines indented 2 more."""
    print(
        textwrap.fill(text, 100, initial_indent=" " * indent, subsequent_indent=" " * (indent + 2))
    )


def how_cancelled(backend: str) -> str:
    """How the backend asks the kernel for an operation back."""
    return {"io_uring": "IORING_OP_ASYNC_CANCEL", "posix_aio": "aio_cancel"}.get(backend, "")


def report(
    backend: str, cancelled: int, dropped: int, asked: int, waited: str, too_late: str
) -> None:
    """Say what became of the operations a cancellation reached (part 3).

    ``cancelled`` operations raised trio.Cancelled, ``dropped`` of them before
    they were submitted; the kernel or a worker thread held ``asked`` when the
    cancellation came.  An operation raises trio.Cancelled only if it did
    nothing, so the ones the kernel gave up are ``cancelled - dropped``.
    """
    say(f"(trio_aio.statistics(): cancelled +{asked}, dropped +{dropped})")
    if dropped:
        say(f"{dropped} had not been submitted yet: dropped, so nothing was done")
    if backend == "threads":
        if asked:
            say(
                f"{asked} were running in worker threads: a running thread cannot be stopped, "
                f"so {waited}"
            )
        return
    gave_up = cancelled - dropped
    if gave_up:
        say(
            f"{gave_up} cancelled in the kernel: trio_aio asked for them back "
            f"({how_cancelled(backend)}) and the kernel gave them up before doing anything"
        )
    if asked - gave_up:
        say(f"{asked - gave_up} asked back too late: the kernel {too_late}, so {waited}")


async def cancel_disk_reads(path: str, chunks: list[bytes]) -> None:
    """Start READS reads at once, give up after TIMEOUT, and account for every one of them."""
    size = SIZE // READS
    try:
        f = await trio_aio.open_file(path, "rb", direct=True)
        what = f"{READS} O_DIRECT reads of {size >> 10} KiB (never served from the page cache)"
    except (OSError, ValueError) as exc:  # a file system that refuses O_DIRECT (EINVAL)
        f = await trio_aio.open_file(path, "rb")
        if hasattr(os, "posix_fadvise"):  # ask the kernel to drop the file from its cache
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        what = (
            f"{READS} reads of {size >> 10} KiB of the file dropped from the page cache "
            f"(O_DIRECT is refused here: {exc})"
        )
    buffer = trio_aio.aligned_buffer(SIZE)  # O_DIRECT wants page-aligned memory
    view = memoryview(buffer)
    returned = cancelled = 0
    wrong: list[int] = []

    async def reader(offset: int) -> None:
        nonlocal returned, cancelled
        try:
            n = await f.readinto_at(view[offset : offset + size], offset)
        except trio.Cancelled:
            cancelled += 1  # the read did nothing
            raise
        returned += 1
        chunk = chunks[offset // CHUNK]
        start = offset % CHUNK
        if n != size or buffer[offset : offset + n] != chunk[start : start + size]:
            wrong.append(offset)

    backend = f.statistics().backend
    before = trio_aio.statistics()
    async with f:
        with trio.move_on_after(TIMEOUT) as scope:
            async with trio.open_nursery() as nursery:
                for i in range(READS):
                    nursery.start_soon(reader, i * size)
    after = trio_aio.statistics()
    if wrong or returned + cancelled != READS:
        raise SystemExit(f"wrong data at offsets {wrong}, or reads unaccounted for!")

    say(f"{what}:", 3)
    if not scope.cancel_called:
        say(f"all finished within {TIMEOUT * 1000:g} ms: nothing was left to cancel")
        return
    say(
        f"{returned} returned their data (every byte checked), {cancelled} raised "
        "trio.Cancelled: nothing was lost"
    )
    report(
        backend,
        cancelled,
        dropped=after.dropped - before.dropped,
        asked=after.cancelled - before.cancelled,
        waited="their tasks waited for them and kept the data",
        too_late="had already started them (a read it has started is finished)",
    )


async def cancel_syncs(directory: str, data: bytes) -> None:
    """datasync() SYNCS files with new data at once, give up after TIMEOUT, and count."""
    paths = [os.path.join(directory, f"trio_aio-demo-sync-{i}.bin") for i in range(SYNCS)]
    files = [await trio_aio.open_file(path, "wb") for path in paths]
    synced = cancelled = 0

    async def sync(f: trio_aio.AsyncFile) -> None:
        nonlocal synced, cancelled
        try:
            await f.datasync()
        except trio.Cancelled:
            cancelled += 1  # the sync did nothing: the data is written, but not yet durable
            raise
        synced += 1

    backend = trio_aio.current_backend()
    try:
        for f in files:
            await f.write_at(data, 0)
        before = trio_aio.statistics()
        with trio.move_on_after(TIMEOUT) as scope:
            async with trio.open_nursery() as nursery:
                for f in files:
                    nursery.start_soon(sync, f)
        after = trio_aio.statistics()
    finally:
        for f in files:
            await f.aclose()
        for path in paths:
            os.unlink(path)

    say(
        f"{SYNCS} datasync() calls at once, on {SYNCS} files of {len(data) >> 20} MiB "
        "just written:",
        3,
    )
    if not scope.cancel_called:
        say(f"all finished within {TIMEOUT * 1000:g} ms: nothing was left to cancel")
        return
    say(f"{synced} synced, {cancelled} raised trio.Cancelled")
    report(
        backend,
        cancelled,
        dropped=after.dropped - before.dropped,
        asked=after.cancelled - before.cancelled,
        waited="their tasks waited until they were done",
        too_late="had already started them",
    )


# -- 4. the statistics, in words --------------------------------------------------------------


def explain_statistics() -> None:
    """Print the run's counters (the ones every backend shares, and io_uring's enter_calls)."""
    stats = trio_aio.statistics()
    if stats.backend == "io_uring":
        per_call = stats.submitted / max(stats.enter_calls, 1)
        submitted = (
            f"operations handed to the kernel, in {stats.enter_calls:,} io_uring_enter calls "
            f"({per_call:.1f} per call)"
        )
    elif stats.backend == "threads":
        submitted = f"operations handed to worker threads (at most {stats.max_threads} at a time)"
    else:
        submitted = "operations handed to the kernel (AIO) or to worker threads"
    rows = [
        ("submitted", stats.submitted, submitted),
        ("completed", stats.completed, "of them finished"),
        (
            "inline",
            stats.inline,
            "reads served at once from the page cache, on the event loop's thread "
            "(RWF_NOWAIT): never submitted, nothing waited for",
        ),
        (
            "cancelled",
            stats.cancelled,
            "operations a cancellation reached while the kernel or a thread held them; each was "
            "waited for: given up by the kernel, or finished with its result kept",
        ),
        ("dropped", stats.dropped, "operations cancelled before they were submitted: nothing ran"),
        ("in_flight", stats.in_flight, "held by the kernel or a thread now"),
        ("queued", stats.queued, "waiting to be submitted now"),
    ]
    print("4. trio_aio.statistics() for this run, in words:")
    for name, value, meaning in rows:
        line = f"   {name:<9} {value:>9,}  {meaning}"
        print(textwrap.fill(line, 100, subsequent_indent=" " * 24))


# -- the tour -------------------------------------------------------------------------------------


async def main(directory: str, seconds: float) -> None:
    """Run the tour in ``directory``."""
    path = os.path.join(directory, "trio_aio-demo.bin")
    print(f"backend: {trio_aio.current_backend()} (python -m trio_aio says why)")
    chunks = make_content()
    try:
        start = time.perf_counter()
        await write_file(path, chunks)
        wrote = time.perf_counter() - start
        start = time.perf_counter()
        got = await read_file(path)
        read = time.perf_counter() - start
        if got != hashlib.sha256(b"".join(chunks)).hexdigest():
            raise SystemExit("data mismatch!")
        print(
            f"1. wrote {SIZE >> 20} MiB from 16 tasks in {wrote:.2f} s, read it back from 32 "
            f"tasks in {read:.2f} s ({SIZE / read / (1 << 20):,.0f} MiB/s): sha256 matches"
        )
        await compare_with_trio(path, seconds)
        print(
            f"3. cancellation: disk I/O started all at once, under trio.move_on_after({TIMEOUT:g})"
        )
        await cancel_disk_reads(path, chunks)
        await cancel_syncs(directory, chunks[0])
    finally:
        os.unlink(path)
    explain_statistics()


@contextlib.contextmanager
def work_directory(given: str | None) -> Iterator[str]:
    """The directory given, or a temporary one in the current directory (else the system's)."""
    if given is not None:
        yield given
        return
    try:
        tmp = tempfile.TemporaryDirectory(prefix="trio_aio-demo-", dir=os.getcwd())
    except OSError:  # the current directory is not writable
        tmp = tempfile.TemporaryDirectory(prefix="trio_aio-demo-")
    with tmp as name:
        yield name


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="A tour of trio_aio: parallel positional I/O, trio_aio beside "
        "trio.open_file, disk reads cancelled, and the statistics in words."
    )
    parser.add_argument(
        "directory",
        nargs="?",
        help="where to write the demo's files (64 MiB, and 32 MiB for a moment); default: a "
        "temporary directory in the current one, removed at the end (a disk, rather than "
        "/tmp, which may be tmpfs: nothing there waits for a disk)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=1.5,
        help="how long each of trio_aio and trio.open_file reads in part 2 (default: 1.5)",
    )
    args = parser.parse_args()
    with work_directory(args.directory) as directory:
        trio.run(main, directory, args.seconds)

"""Faults as users meet them: full disks, file-size limits, two closers, many readers.

Each test sets the fault up so that it happens for certain (a tmpfs that is
full, ``RLIMIT_FSIZE`` in a subprocess, a pipe that holds an operation for as
long as the test wants), and checks what the caller saw against what is in
the file: a byte reported written is in the file, the position is just past
what was written, and an error says how much was.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import gc
import os
import random
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from helpers import REAL_BACKENDS, pipes_use_threads, wait_blocked_in_kernel

import trio_aio
from trio_aio import streams

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


# -- a file-size limit (RLIMIT_FSIZE), in a subprocess --------------------------------

_FSIZE_SCRIPT = """
import os, resource, signal, sys
import anyio, trio_aio
from trio_aio import streams
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
path, how, loop = sys.argv[1:]

async def main():
    f = await trio_aio.open_file(path, "wb+")
    async with f:
        print(await f.write(b"a" * 60_000))
        try:
            if how == "stream":
                await streams.FileWriteStream(f).send(b"b" * 60_000)
            elif how == "write_at":
                await f.write_at(b"b" * 60_000, 60_000)
            else:
                await f.write(b"b" * 60_000)
        except anyio.BrokenResourceError as exc:
            error = exc.__cause__
            print("broken")
        except OSError as exc:
            error = exc
            print("oserror")
        print(error.errno, error.filename == path, error.bytes_written)
        print(await f.tell())
        await f.write(b"")
        print(await f.tell())

anyio.run(main, backend=loop)
"""


@REAL_BACKENDS
@pytest.mark.parametrize("how", ["write", "stream", "write_at"])
def test_a_write_cut_short_by_a_file_size_limit(
    tmp_path: Path, backend: str, anyio_backend_name: str, how: str
) -> None:
    """The kernel writes 40,000 of 60,000 bytes, then refuses: nothing lost, nothing doubled."""
    path = tmp_path / "limited"
    env = {**os.environ, "TRIO_AIO_BACKEND": backend}
    done = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(path), how, anyio_backend_name],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.split("\n")
    assert lines[0] == "60000"
    assert lines[1] == ("broken" if how == "stream" else "oserror")
    assert lines[2] == f"{errno.EFBIG} True 40000"
    # The position is past what was written (write_at leaves it alone).
    expected_position = "60000" if how == "write_at" else "100000"
    assert lines[3:5] == [expected_position, expected_position]
    assert path.read_bytes() == b"a" * 60_000 + b"b" * 40_000


# -- a full disk: a small tmpfs (needs root) --------------------------------------------


def _mount_small_tmpfs(where: Path, size: int) -> str | None:
    """Mount a tmpfs of ``size`` bytes at ``where``; None, or why it cannot be done here."""
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return "mounting a tmpfs needs root on Linux"
    libc = ctypes.CDLL(None, use_errno=True)
    options = f"size={size},mode=0700".encode()
    if libc.mount(b"tmpfs", bytes(where), b"tmpfs", 0, options) != 0:
        err = ctypes.get_errno()
        return f"mount(tmpfs) failed: {os.strerror(err)}"
    return None


@contextlib.contextmanager
def small_tmpfs(tmp_path: Path, size: int) -> Iterator[Path]:
    where = tmp_path / "full"
    where.mkdir()
    problem = _mount_small_tmpfs(where, size)
    if problem is not None:
        pytest.skip(problem)
    try:
        yield where
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.umount2(bytes(where), 2)  # MNT_DETACH


async def test_a_full_disk(tmp_path: Path) -> None:
    """ENOSPC part-way: the error says how much was written; the position agrees."""
    with small_tmpfs(tmp_path, 64 * 1024) as where:
        path = where / "big"
        async with await trio_aio.open_file(path, "wb") as f:
            data = os.urandom(256 * 1024)
            with pytest.raises(OSError) as info:
                await f.write(data)
            assert info.value.errno == errno.ENOSPC
            assert info.value.filename == str(path)
            written = info.value.bytes_written  # type: ignore[attr-defined]
            assert 0 < written < len(data)
            assert await f.tell() == written
            # Positional writes say the same.
            with pytest.raises(OSError) as info2:
                await f.write_at(data, written)
            assert info2.value.errno == errno.ENOSPC
            assert info2.value.bytes_written == 0  # type: ignore[attr-defined]
            # And a stream maps it to anyio's BrokenResourceError.
            with pytest.raises(anyio.BrokenResourceError) as info3:
                await streams.FileWriteStream(f).send(data)
            assert isinstance(info3.value.__cause__, OSError)
        del info, info2, info3
        gc.collect()
        assert path.read_bytes() == data[:written]


# -- cursor writes from many tasks -------------------------------------------------------


async def test_cursor_writes_from_many_tasks_never_overlap(tmp_path: Path) -> None:
    """As the kernel's f_pos_lock does for write(2): each write gets its own bytes."""
    path = tmp_path / "many"
    chunks = [bytes([i]) * 4096 for i in range(32)]
    async with await trio_aio.open_file(path, "wb") as f:
        async with anyio.create_task_group() as tg:
            for chunk in chunks:
                tg.start_soon(f.write, chunk)
        assert await f.tell() == 32 * 4096
    data = path.read_bytes()
    assert sorted(data[i : i + 4096] for i in range(0, len(data), 4096)) == chunks


async def test_cursor_reads_from_many_tasks_see_each_byte_once(data_path: Path) -> None:
    got: list[bytes] = []

    async def reader(f: trio_aio.AsyncFile) -> None:
        while data := await f.read(1000):
            got.append(data)
            await anyio.lowlevel.checkpoint()

    async with await trio_aio.open_file(data_path, "rb") as f, anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(reader, f)
    assert sum(map(len, got)) == data_path.stat().st_size
    assert len(set(got)) == len(got)


async def test_a_cancelled_cursor_write_moves_the_position_by_what_it_wrote(
    tmp_path: Path,
) -> None:
    """Cancellations at random points of a run of writes: the file is what was reported."""
    rng = random.Random(1234)
    path = tmp_path / "storm"
    reported = bytearray()
    async with await trio_aio.open_file(path, "wb") as f:
        for i in range(200):
            chunk = bytes([i % 251]) * rng.randrange(1, 20_000)
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def cancel_after(n: int, scope: anyio.CancelScope = scope) -> None:
                        for _ in range(n):
                            await anyio.lowlevel.checkpoint()
                        scope.cancel()

                    tg.start_soon(cancel_after, rng.randrange(0, 3))
                    await f.write(chunk)
                    reported += chunk
            assert await f.tell() == len(reported)
    assert path.read_bytes() == bytes(reported)


# -- a cancellation storm against a model of the file -----------------------------------


async def test_a_cancellation_storm_against_a_model(tmp_path: Path, backend: str) -> None:
    """Writes that returned are in the file; writes that raised the cancellation did nothing.

    (The contract: a cancellation is raised only for an operation the kernel
    gave up, or that never reached it.)  Each write has its own block, so the
    model needs no ordering.
    """
    rng = random.Random(4321)
    block = 4096
    n = 256
    path = tmp_path / "model"
    path.write_bytes(bytes(n * block))
    outcome: dict[int, str] = {}
    async with await trio_aio.open_file(path, "rb+") as f:

        async def writer(i: int, scope: anyio.CancelScope) -> None:
            with scope:
                await f.write_at(bytes([1 + i % 255]) * block, i * block)
                outcome[i] = "written"
                return
            outcome[i] = "cancelled"

        async with anyio.create_task_group() as tg:
            scopes = [anyio.CancelScope() for _ in range(n)]
            for i in range(n):
                tg.start_soon(writer, i, scopes[i])
            for i in rng.sample(range(n), n // 2):
                for _ in range(rng.randrange(0, 3)):
                    await anyio.lowlevel.checkpoint()
                scopes[i].cancel()
        gc.collect()
    data = path.read_bytes()
    assert len(outcome) == n
    for i, what in outcome.items():
        expected = bytes([1 + i % 255]) * block if what == "written" else bytes(block)
        assert data[i * block : (i + 1) * block] == expected, (i, what)
    assert "written" in outcome.values()
    stats = trio_aio.statistics()
    assert stats.in_flight == 0


# -- two closers -------------------------------------------------------------------------


def _fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


async def test_a_second_aclose_waits_until_the_fd_is_closed(
    pipe: tuple[int, int], backend: str
) -> None:
    """The second closer returns only once the first has closed the fd."""
    r, w = pipe
    fd = os.dup(r)
    f = await trio_aio.open_file(fd, "rb")
    seen: list[str] = []

    async def read() -> None:
        with contextlib.suppress(anyio.ClosedResourceError):
            await f.read(1)

    async def close(who: str) -> None:
        await f.aclose()
        seen.append(f"{who} returned, fd {'open' if _fd_is_open(fd) else 'closed'}")

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await wait_blocked_in_kernel()
        tg.start_soon(close, "first")
        await wait_blocked_in_kernel()
        tg.start_soon(close, "second")
        await wait_blocked_in_kernel()
        if pipes_use_threads(backend):  # the thread cannot be stopped: let it finish
            os.write(w, b"x")
    assert sorted(seen) == ["first returned, fd closed", "second returned, fd closed"]
    assert not _fd_is_open(fd)


# -- several tasks reading one FIFO -------------------------------------------------------


async def test_tasks_reading_one_fifo_take_turns(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    w = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # keeps the FIFO open: no end of file
    try:
        async with await trio_aio.open_file(fifo, "rb") as f:
            got: list[bytes] = []

            async def reader() -> None:
                got.append(await f.read(100))

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                for message in (b"one", b"two", b"three"):
                    os.write(w, message)
                    while len(got) < [b"one", b"two", b"three"].index(message) + 1:
                        await anyio.lowlevel.checkpoint()
            assert got == [b"one", b"two", b"three"]

            # A reader cancelled while it waits its turn leaves the queue.
            scope = anyio.CancelScope()

            async def cancelled_reader() -> None:
                with scope:
                    await reader()

            async with anyio.create_task_group() as tg:
                tg.start_soon(reader)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(cancelled_reader)
                await anyio.wait_all_tasks_blocked()
                scope.cancel()
                await anyio.wait_all_tasks_blocked()
                os.write(w, b"four")
            assert scope.cancelled_caught
            assert got[3:] == [b"four"]
    finally:
        os.close(w)


async def test_a_close_wakes_every_fifo_reader(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    w = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    outcomes: list[str] = []
    try:
        f = await trio_aio.open_file(fifo, "rb")

        async def reader() -> None:
            try:
                await f.read(1)
                outcomes.append("read")
            except anyio.ClosedResourceError:
                outcomes.append("closed")

        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(reader)
            await anyio.wait_all_tasks_blocked()
            await f.aclose()
        assert outcomes == ["closed"] * 3
    finally:
        os.close(w)


# -- bounded allocations -------------------------------------------------------------------


@contextlib.contextmanager
def at_most(limit: int) -> Iterator[None]:
    """Fail if Python's allocations peak above ``limit`` bytes in the block."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < limit


async def test_a_huge_read_allocates_only_what_the_file_holds(tmp_path: Path) -> None:
    path = tmp_path / "small"
    path.write_bytes(b"0123456789")
    with at_most(4 << 20):
        async with await trio_aio.open_file(path, "rb") as f:
            assert await f.read_at(2**63 - 1, 0) == b"0123456789"
            assert await f.read_at(2**63 - 1, 4) == b"456789"
            assert await f.read_at(2**40, 2**62) == b""
            assert await f.read_many([(0, 2**29)] * 8) == [b"0123456789"] * 8
            assert await f.read(2**64) == b"0123456789"
            await f.seek(0)
            assert await f.read() == b"0123456789"


async def test_a_huge_read_of_a_growing_file_gets_the_new_data(tmp_path: Path) -> None:
    path = tmp_path / "growing"
    path.write_bytes(b"x" * (3 << 20))
    async with await trio_aio.open_file(path, "rb") as f:
        real_size = f._file_size

        async def size_then_grow() -> int | None:
            size = await real_size()
            with path.open("ab") as g:  # the file grows after it was measured
                g.write(b"y" * 100_000)
            return size

        f._file_size = size_then_grow  # type: ignore[method-assign]
        data = await f.read_at(10 << 20, 0)
    assert data == b"x" * (3 << 20) + b"y" * 100_000


async def test_reading_a_pipe_with_a_huge_size_allocates_what_arrives(
    pipe: tuple[int, int],
) -> None:
    r, w = pipe
    os.write(w, b"hello")
    with at_most(4 << 20):
        async with await trio_aio.open_file(r, "rb", closefd=False) as f:
            assert await f.read(2**62) == b"hello"


async def test_bad_values_raise_what_io_raises(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with path.open("rb", buffering=0) as reference, pytest.raises(OverflowError) as expected:
        reference.seek(0, 2**31)
    before = trio_aio.statistics().submitted
    async with await trio_aio.open_file(path, "rb") as f:
        with pytest.raises(OverflowError) as got:
            await f.seek(0, 2**31)
        assert str(got.value) == str(expected.value)
    with pytest.raises(TypeError) as builtin:
        open(2**32, "rb")  # noqa: SIM115 - the reference
    with pytest.raises(TypeError) as ours:
        await trio_aio.open_file(2**32, "rb")
    assert str(ours.value) == str(builtin.value)
    assert trio_aio.statistics().submitted - before <= 3  # open, stat, close


async def test_multidimensional_buffers_in_batches(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(64)))
    async with await trio_aio.open_file(path, "rb+") as f:
        grid = memoryview(bytearray(32)).cast("B", (4, 8))
        assert await f.readinto_many([(48, grid)]) == [16]  # short: end of file
        assert bytes(grid)[:16] == bytes(range(48, 64))
        assert await f.write_many([(64, grid)]) == [32]
    assert path.read_bytes()[64:] == bytes(grid)


# -- closing during a batch ------------------------------------------------------------------


async def test_closing_during_a_batch_raises_closed_resource_error(tmp_path: Path) -> None:
    """Elements the close stopped make it ClosedResourceError; the results ride along."""
    path = tmp_path / "f"
    path.write_bytes(bytes(8192))
    f = await trio_aio.open_file(path, "rb")
    handle = f._handle

    class ClosedMidway:
        fd = handle.fd

        async def pread_many(self, requests: object) -> list[object]:
            f._closed = True  # what aclose() sets before it cancels the batch
            return [b"x" * 4096, OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))]

    f._handle = ClosedMidway()  # type: ignore[assignment]
    with pytest.raises(anyio.ClosedResourceError) as info:
        await f.read_many([(0, 4096), (4096, 4096)])
    cause = info.value.__cause__
    assert isinstance(cause, trio_aio.BatchError)
    assert cause.results[0] == b"x" * 4096
    f._handle = handle
    f._closed = False
    await f.aclose()


# -- a file nobody closed -----------------------------------------------------------------


async def test_an_unclosed_file_warns_as_builtin_files_do(data_path: Path) -> None:
    f = await trio_aio.open_file(data_path, "rb")
    fd = f.fileno()
    with pytest.warns(ResourceWarning, match="unclosed file"):
        del f
        gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)


# -- the queue cursor calls and stream readers wait in ------------------------------------


async def test_a_waiter_cancelled_as_its_turn_comes_passes_it_on() -> None:
    from trio_aio._backends._base import TaskQueue

    queue = TaskQueue()
    order: list[str] = []
    scope_a = anyio.CancelScope()

    async def waiter(name: str, scope: anyio.CancelScope) -> None:
        with scope:
            async with queue:
                order.append(name)
                await anyio.lowlevel.checkpoint()
        if scope.cancelled_caught:
            order.append(f"{name} cancelled")

    async with anyio.create_task_group() as tg:
        async with queue:
            tg.start_soon(waiter, "a", scope_a)
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(waiter, "b", anyio.CancelScope())
            await anyio.wait_all_tasks_blocked()
        # The holder left: "a" has its turn, but is cancelled before it runs.
        scope_a.cancel()
    # (On both loops the wake-up wins here: "a" runs, then sees the cancellation.)
    assert order in (["a cancelled", "b"], ["a", "a cancelled", "b"])
    assert not queue.locked()


def test_a_task_cancelled_after_its_turn_came_passes_it_on() -> None:
    """Plain asyncio: ``Task.cancel()`` after the wake-up, before the task ran."""
    import asyncio

    from trio_aio._backends._base import TaskQueue

    async def main() -> list[str]:
        queue = TaskQueue()
        order: list[str] = []

        async def waiter(name: str) -> None:
            async with queue:
                order.append(name)

        async with queue:
            a = asyncio.ensure_future(waiter("a"))
            b = asyncio.ensure_future(waiter("b"))
            await asyncio.sleep(0)
        a.cancel()  # its turn came as the holder left; it has not run since
        await asyncio.gather(a, b, return_exceptions=True)
        assert a.cancelled()
        assert not queue.locked()
        return order

    assert asyncio.run(main()) == ["b"]

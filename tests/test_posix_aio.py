"""The posix_aio backend against a simulated FreeBSD kernel (tests/fake_freebsd.py).

Each test here looks at what the kernel was asked and what it still holds, so
it needs the simulation (``fake_kernel`` skips on real FreeBSD, where the
contract tests of the other modules run on the real kernel instead).
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing
from fake_freebsd import LIO_DSYNC, LIO_READV, LIO_SYNC, LIO_WRITEV, FakeKernel
from helpers import POSIX_AIO_ONLY, drop_a_read_and_a_batch

import trio_aio
from trio_aio._backends import current_backend_impl
from trio_aio._freebsd import _aiocb as A

pytestmark = POSIX_AIO_ONLY


def aio_statistics() -> trio_aio.PosixAioStatistics:
    """The current run's statistics, on the posix_aio backend."""
    stats = trio_aio.statistics()
    assert stats.backend == "posix_aio", stats
    return stats


@pytest.fixture
def kernel(fake_kernel: FakeKernel) -> FakeKernel:
    return fake_kernel


async def _wait_held(kernel: FakeKernel, n: int) -> None:
    """Wait until ``n`` jobs are held in the kernel and every task sleeps."""
    await trio.testing.wait_all_tasks_blocked()
    assert kernel.in_progress == n


def _no_registrations(kernel: FakeKernel) -> None:
    assert all(not kq.registered for kq in kernel.kqueues.values())


async def test_a_read_is_one_aio_read_woken_by_its_oneshot_kevent(
    kernel: FakeKernel, data_path: Path
) -> None:
    data = data_path.read_bytes()
    async with await trio_aio.open_file(data_path) as f:
        before = aio_statistics()
        assert await f.read_at(100, 4096) == data[4096:4196]
        after = aio_statistics()
    assert kernel.calls == [f"aio {A.LIO_READ}"]
    assert (after.submitted - before.submitted, after.completed - before.completed) == (1, 1)
    assert after.threaded == before.threaded  # no thread
    assert after.in_flight == 0
    assert kernel.jobs == {}  # collected with aio_return
    _no_registrations(kernel)


async def test_writes_vectors_and_fsyncs_are_aio_jobs(kernel: FakeKernel, tmp_path: Path) -> None:
    path = tmp_path / "w"
    async with await trio_aio.open_file(path, "w+b") as f:
        assert await f.write_at(b"hello", 0) == 5
        assert await f.write_at([b"ab", b"cd"], 5) == 4
        a, b = bytearray(3), bytearray(6)
        assert await f.readinto_at([a, b], 0) == 9
        assert (bytes(a), bytes(b)) == (b"hel", b"loabcd")
        await f.sync()
        await f.datasync()
    assert kernel.calls == [
        f"aio {A.LIO_WRITE}",
        f"aio {LIO_WRITEV}",
        f"aio {LIO_READV}",
        f"aio {LIO_SYNC}",
        f"aio {LIO_DSYNC}",
    ]
    assert path.read_bytes() == b"helloabcd"


async def test_a_cancelled_read_still_queued_is_cancelled_in_the_kernel(
    kernel: FakeKernel, data_path: Path
) -> None:
    kernel.hold = True
    buf = bytearray(16)
    async with await trio_aio.open_file(data_path) as f:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    await f.readinto_at(buf, 0)
                    pytest.fail("the read should have been cancelled")

                nursery.start_soon(reader)
                await _wait_held(kernel, 1)
                with pytest.raises(BufferError):
                    buf.append(0)  # the kernel holds it
                scope.cancel()
        assert scope.cancelled_caught
        stats = aio_statistics()
    assert kernel.cancels == 1
    assert stats.cancelled == 1 and stats.in_flight == 0
    assert kernel.jobs == {}
    assert buf == bytes(16)  # the kernel never wrote into it
    buf.append(0)  # and let go of it
    _no_registrations(kernel)


async def test_a_read_the_kernel_had_started_returns_its_data(
    kernel: FakeKernel, data_path: Path
) -> None:
    """aio_cancel says AIO_NOTCANCELED: the task waits, gets the data, then the cancellation."""
    kernel.hold = kernel.running = True
    data = data_path.read_bytes()
    got: list[bytes] = []
    after: list[str] = []
    async with await trio_aio.open_file(data_path) as f:
        scope = trio.CancelScope()

        async def reader() -> None:
            with scope:
                got.append(await f.read_at(8, 0))
                after.append("returned")
                await trio.lowlevel.checkpoint()
                after.append("not reached")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await _wait_held(kernel, 1)
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # still waiting for the kernel's event
            kernel.hold = False
            kernel.release()
    assert got == [data[:8]]
    assert after == ["returned"]
    assert scope.cancelled_caught


async def test_cancelled_before_submission_reaches_no_kernel(
    kernel: FakeKernel, data_path: Path
) -> None:
    async with await trio_aio.open_file(data_path) as f:
        assert await drop_a_read_and_a_batch(f) == 3
    assert kernel.calls == []


async def test_closing_cancels_the_jobs_and_waits_for_the_kernel(
    kernel: FakeKernel, data_path: Path
) -> None:
    kernel.hold = True
    f = await trio_aio.open_file(data_path)
    outcomes: list[str] = []

    async def reader() -> None:
        try:
            await f.read_at(10, 0)
        except trio.ClosedResourceError:
            outcomes.append("closed")

    async def batch() -> None:
        try:
            await f.read_many([(0, 5), (5, 5)])
        except trio.ClosedResourceError:
            outcomes.append("batch closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        nursery.start_soon(batch)
        await _wait_held(kernel, 3)
        await f.aclose()
        assert kernel.jobs == {}  # every job collected before the fd was closed
    assert sorted(outcomes) == ["batch closed", "closed"]
    assert kernel.cancels == 3


async def test_a_full_queue_sends_that_operation_to_a_thread(
    kernel: FakeKernel, data_path: Path
) -> None:
    data = data_path.read_bytes()
    kernel.max_queue = 0  # vfs.aio.max_aio_queue_per_proc reached
    async with await trio_aio.open_file(data_path) as f:
        before = aio_statistics()
        assert await f.read_at(10, 0) == data[:10]
        assert aio_statistics().threaded == before.threaded + 1
        kernel.max_queue = 256  # room again: back to AIO
        assert await f.read_at(10, 10) == data[10:20]
        after = aio_statistics()
    assert after.threaded == before.threaded + 1
    assert after.submitted - before.submitted == 2  # one to a thread, one to the kernel


async def test_unsafe_aio_sends_the_file_to_threads_for_good(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    """EOPNOTSUPP (a pipe, a FIFO, NFS): asked once, then threads."""
    kernel.refuse[A.LIO_READ] = errno.EOPNOTSUPP
    path = tmp_path / "nfs"
    path.write_bytes(b"abcdef")
    async with await trio_aio.open_file(path) as f:
        assert await f.read_at(3, 0) == b"abc"
        assert await f.read_at(3, 3) == b"def"
        assert await f.read_many([(0, 1), (1, 1)]) == [b"a", b"b"]
    assert kernel.calls == [f"aio {A.LIO_READ}"]


async def test_other_refusals_are_errors_with_the_file_name(
    kernel: FakeKernel, data_path: Path
) -> None:
    kernel.refuse[A.LIO_READ] = errno.EINVAL
    async with await trio_aio.open_file(data_path) as f:
        before = aio_statistics()
        with pytest.raises(OSError) as info:
            await f.read_at(10, 0)
        assert aio_statistics().threaded == before.threaded
    assert info.value.errno == errno.EINVAL
    assert info.value.filename == str(data_path)


async def test_the_file_position_is_not_aios(kernel: FakeKernel, data_path: Path) -> None:
    """AIO has no current position (a negative offset is EINVAL): read() uses a thread."""
    r, w = os.pipe()
    os.write(w, b"xyz")
    handle = current_backend_impl().wrap(r)
    assert await handle.pread(3, -1) == b"xyz"
    await handle.close()
    os.close(w)
    assert kernel.calls == []


async def test_a_batch_is_lists_of_at_most_aio_listio_max(
    kernel: FakeKernel, data_path: Path
) -> None:
    data = data_path.read_bytes()
    ranges = [(i * 1000, 100) for i in range(40)]
    async with await trio_aio.open_file(data_path) as f:
        got = await f.read_many(ranges)
        assert got == [data[off : off + size] for off, size in ranges]
        blocks = [bytes([i]) * 512 for i in range(20)]
        await f.aclose()
    assert kernel.calls == ["lio 16", "lio 16", "lio 8"]
    assert kernel.jobs == {} and kernel.lists == {}
    _no_registrations(kernel)
    path = data_path.with_name("w")
    async with await trio_aio.open_file(path, "wb") as f:
        counts = await f.write_many([(i * 512, b) for i, b in enumerate(blocks)])
    assert counts == [512] * 20
    assert path.read_bytes() == b"".join(blocks)


async def test_a_batch_the_kernel_refuses_in_part_finishes_in_a_thread(
    kernel: FakeKernel, data_path: Path
) -> None:
    """lio_listio says EAGAIN: the queued jobs finish in the kernel, the others in a thread."""
    data = data_path.read_bytes()
    kernel.max_queue_global = 10
    ranges = [(i * 1000, 100) for i in range(16)]
    async with await trio_aio.open_file(data_path) as f:
        before = aio_statistics()
        got = await f.read_many(ranges)
        after = aio_statistics()
    assert got == [data[off : off + size] for off, size in ranges]
    assert after.threaded == before.threaded + 1  # the six refused, in one trip
    assert kernel.jobs == {}


async def test_a_list_refused_as_a_whole_is_an_error(
    kernel: FakeKernel, data_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kernel, "lio_listio", lambda *args: kernel._fail(errno.EINVAL))
    async with await trio_aio.open_file(data_path) as f:
        with pytest.raises(OSError) as info:
            await f.read_many([(0, 10), (10, 10)])
    assert info.value.errno == errno.EINVAL
    _no_registrations(kernel)


async def test_a_cancelled_batch_nothing_of_which_ran_is_cancelled(
    kernel: FakeKernel, data_path: Path
) -> None:
    kernel.hold = True
    async with await trio_aio.open_file(data_path) as f:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def batch() -> None:
                    await f.read_many([(i * 10, 10) for i in range(20)])
                    pytest.fail("the batch should have been cancelled")

                nursery.start_soon(batch)
                await _wait_held(kernel, 20)
                scope.cancel()
    assert scope.cancelled_caught
    assert kernel.cancels == 20
    assert kernel.jobs == {} and kernel.lists == {}


async def test_a_cancelled_batch_part_of_which_ran_returns_it(
    kernel: FakeKernel, data_path: Path
) -> None:
    data = data_path.read_bytes()
    kernel.hold = True
    results: list[object] = []
    handle = current_backend_impl().wrap(os.open(data_path, os.O_RDONLY))
    scope = trio.CancelScope()

    async def batch() -> None:
        with scope:
            results.extend(await handle.pread_many([(10, 0), (10, 10), (10, 20)]))
            await trio.lowlevel.checkpoint()
            results.append("not reached")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(batch)
        await _wait_held(kernel, 3)
        first = next(iter(kernel.jobs.values()))
        kernel._perform(first)  # the first job finishes, the others are still queued
        scope.cancel()
    await handle.close()
    assert scope.cancelled_caught
    assert results[0] == data[:10]
    assert [getattr(res, "errno", None) for res in results[1:]] == [errno.ECANCELED] * 2


async def test_asyncio_uses_threads(kernel: FakeKernel) -> None:
    """The kqueue AIO filter is trio's to wait on: under asyncio the files use threads."""
    import asyncio

    from trio_aio._freebsd._backend import PosixAioFile

    def main() -> bytes:
        async def read() -> bytes:
            r, w = os.pipe()
            os.write(w, b"ok")
            handle = PosixAioFile(r, current_backend_impl())  # type: ignore[arg-type]
            data = await handle.pread(2, 0)
            await handle.close()
            os.close(w)
            return data

        return asyncio.run(read())

    with pytest.raises(OSError) as info:  # a pipe has no offset 0: ESPIPE, from the thread
        await trio.to_thread.run_sync(main)
    assert info.value.errno == errno.ESPIPE
    assert kernel.calls == []


# -- the thread-backend file a posix_aio file holds ------------------------------


async def test_one_close_for_an_aio_job_and_a_thread_in_flight(
    kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close(): aio_cancel for the job, the running thread waited for, then the fd closed once."""
    kernel.hold = True
    sock, peer = socket.socketpair()  # AIO takes sockets; a cursor read blocks its thread
    fd = sock.detach()
    closes: list[int] = []
    real_close = os.close

    def close(n: int) -> None:
        if n == fd:
            closes.append(n)
        real_close(n)

    monkeypatch.setattr(os, "close", close)
    handle = current_backend_impl().wrap(fd)
    outcomes: dict[str, object] = {}
    closed = trio.Event()

    async def aio_read() -> None:
        try:
            await handle.pread(1, 0)
        except trio.ClosedResourceError:
            outcomes["aio"] = "closed"

    async def thread_read() -> None:
        outcomes["thread"] = await handle.pread(1, -1)  # the file position: a worker thread

    async def closer() -> None:
        await handle.close()
        closed.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(aio_read)
            nursery.start_soon(thread_read)
            await _wait_held(kernel, 1)
            stats = aio_statistics()
            assert (stats.in_flight, stats.threaded) == (2, 1)  # one job, one thread
            nursery.start_soon(closer)
            await trio.testing.wait_all_tasks_blocked()
            assert kernel.cancels == 1 and kernel.jobs == {}  # cancelled and collected
            assert outcomes == {"aio": "closed"}
            assert not closed.is_set() and closes == []  # the thread still reads the fd
            peer.send(b"x")
    finally:
        peer.close()
    assert outcomes == {"aio": "closed", "thread": b"x"}  # the thread's result is kept
    assert closes == [fd]
    assert aio_statistics().in_flight == 0
    _no_registrations(kernel)


async def test_refused_fsyncs_and_vectored_writes_run_in_threads(
    kernel: FakeKernel, tmp_path: Path
) -> None:
    kernel.refuse[LIO_WRITEV] = kernel.refuse[LIO_DSYNC] = errno.EAGAIN  # queue full
    path = tmp_path / "w"
    async with await trio_aio.open_file(path, "w+b") as f:
        before = aio_statistics()
        assert await f.write_at([b"ab", b"cd"], 0) == 4
        await f.datasync()
        after = aio_statistics()
    assert kernel.calls == [f"aio {LIO_WRITEV}", f"aio {LIO_DSYNC}"]  # each asked once
    assert after.threaded - before.threaded == 2
    assert after.submitted - before.submitted == 2  # to threads only: the kernel took none
    assert path.read_bytes() == b"abcd"


async def test_a_batch_closed_with_refused_elements_sends_none_to_a_thread(
    kernel: FakeKernel, data_path: Path
) -> None:
    """The refused elements would go to the thread-backend file, which is closed too."""
    kernel.hold = True
    kernel.max_queue_global = 2  # two of the four are queued, two are refused (EAGAIN)
    f = await trio_aio.open_file(data_path)
    before = aio_statistics()
    outcomes: list[str] = []

    async def batch() -> None:
        try:
            await f.read_many([(i * 10, 10) for i in range(4)])
        except trio.ClosedResourceError:
            outcomes.append("closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(batch)
        await _wait_held(kernel, 2)
        await f.aclose()
    assert outcomes == ["closed"]
    assert kernel.jobs == {}  # the two queued ones, cancelled and collected
    assert aio_statistics().threaded == before.threaded


async def test_an_asyncio_run_uses_the_thread_file(kernel: FakeKernel, data_path: Path) -> None:
    """Every operation of a non-trio run goes to the held thread-backend file."""
    import asyncio

    from trio_aio._backends._threads import ThreadFile

    data = data_path.read_bytes()
    backend = current_backend_impl()

    def main() -> tuple[list[object], trio_aio.PosixAioStatistics]:
        async def work() -> tuple[list[object], trio_aio.PosixAioStatistics]:
            handle = backend.wrap(os.open(data_path, os.O_RDWR))
            got: list[object] = [
                await handle.pread(10, 0),
                await handle.pread_many([(5, 100), (5, 200)]),
                await handle.pwrite(b"new", 0),
            ]
            await handle.fsync(True)
            stats = backend.statistics()
            assert stats.backend == "posix_aio"
            await handle.close()
            return got, stats

        return asyncio.run(work())

    calls: list[str] = []
    real = ThreadFile.close

    async def close(self: ThreadFile, close_fd: bool = True) -> None:
        calls.append(f"close_fd={close_fd}")
        await real(self, close_fd)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ThreadFile, "close", close)
        got, stats = await trio.to_thread.run_sync(main)
    assert got == [data[:10], [data[100:105], data[200:205]], 3]
    assert (stats.backend, stats.submitted, stats.threaded) == ("posix_aio", 4, 4)
    assert calls == ["close_fd=True"]  # once, after the AIO side: it closes the fd
    assert kernel.calls == []
    assert data_path.read_bytes()[:3] == b"new"


def test_importing_trio_aio_on_freebsd_does_not_import_trio() -> None:
    """An asyncio program on FreeBSD never imports trio: the kqueue glue imports it when used."""
    code = (
        "import sys\n"
        "sys.platform = 'freebsd14'\n"
        "import trio_aio\n"
        "assert 'trio' not in sys.modules, 'trio was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr

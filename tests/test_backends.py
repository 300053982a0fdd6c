"""Choosing a backend, the thread backend's own parts, and a real fallback under seccomp."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import trio
from helpers import O_DIRECT, drop_a_read_and_a_batch, needs_nowait

import trio_aio
from trio_aio import _backends
from trio_aio._backends import _inline, _threads

ROOT = Path(__file__).resolve().parent.parent
NO_IO_URING = Path(__file__).resolve().parent / "no_io_uring.py"
THREADS = pytest.mark.backends("threads")


# -- selection -----------------------------------------------------------------------


@pytest.fixture
def fresh_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the test's selection so that the environment decides again."""
    _backends.reset_selection()
    monkeypatch.delenv(_backends.ENV_VAR, raising=False)


@pytest.fixture
def no_uring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process believe io_uring_setup is refused (and that it is not on FreeBSD)."""
    monkeypatch.setitem(
        _backends._problems, "io_uring", "io_uring_setup failed with EPERM (pretend)"
    )
    monkeypatch.setitem(_backends._problems, "posix_aio", "not FreeBSD (pretend)")


@THREADS
@pytest.mark.usefixtures("fresh_selection")
def test_the_environment_variable_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_AIO_BACKEND", "threads")
    assert trio_aio.current_backend() == "threads"
    _backends.reset_selection()
    monkeypatch.setenv("TRIO_AIO_BACKEND", " auto ")
    assert trio_aio.current_backend() == trio_aio.available_backends()[0]
    _backends.reset_selection()
    monkeypatch.setenv("TRIO_AIO_BACKEND", "")
    assert trio_aio.current_backend() == trio_aio.available_backends()[0]


@THREADS
@pytest.mark.usefixtures("fresh_selection")
def test_a_bad_environment_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_AIO_BACKEND", "uring")
    with pytest.raises(
        ValueError, match="TRIO_AIO_BACKEND must be one of io_uring, posix_aio, threads, auto"
    ):
        trio_aio.current_backend()

    async def main() -> None:
        with pytest.raises(ValueError, match="not 'uring'"):
            await trio_aio.open_file(__file__)

    trio.run(main)


@THREADS
@pytest.mark.usefixtures("fresh_selection")
def test_select_backend_overrides_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIO_AIO_BACKEND", "io_uring")
    assert trio_aio.select_backend("threads") == "threads"
    assert trio_aio.current_backend() == "threads"
    assert trio_aio.select_backend("auto") == trio_aio.available_backends()[0]
    with pytest.raises(ValueError, match="select_backend"):
        trio_aio.select_backend("aio")
    with pytest.raises(TypeError):
        trio_aio.select_backend(None)  # type: ignore[arg-type]


@THREADS
@pytest.mark.skipif(sys.platform.startswith("freebsd"), reason="posix_aio works there")
@pytest.mark.usefixtures("fresh_selection")
def test_posix_aio_is_freebsds() -> None:
    assert "posix_aio" not in trio_aio.available_backends()
    with pytest.raises(
        trio_aio.BackendUnavailableError,
        match=r"select_backend\(\) asks for the posix_aio backend, which cannot work here: "
        "AIO with kqueue events is FreeBSD's",
    ):
        trio_aio.select_backend("posix_aio")


@THREADS
@pytest.mark.usefixtures("fresh_selection", "no_uring")
def test_without_io_uring_auto_means_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert trio_aio.available_backends() == ("threads",)
    assert trio_aio.current_backend() == "threads"
    assert trio_aio.select_backend("auto") == "threads"
    with pytest.raises(trio_aio.BackendUnavailableError, match=r"select_backend\(\).*EPERM"):
        trio_aio.select_backend("io_uring")
    _backends.reset_selection()
    monkeypatch.setenv("TRIO_AIO_BACKEND", "io_uring")
    with pytest.raises(
        trio_aio.BackendUnavailableError,
        match="TRIO_AIO_BACKEND asks for the io_uring backend, which cannot work here: "
        "io_uring_setup failed with EPERM",
    ):
        trio_aio.current_backend()


@pytest.mark.backends("io_uring")
def test_io_uring_is_chosen_where_it_works() -> None:
    assert _backends.uring_problem() is None
    assert trio_aio.available_backends() == ("io_uring", "threads")


# -- a real refusal: io_uring_setup returns EPERM under a seccomp filter ------------------


def _run_without_io_uring(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "TRIO_AIO_BACKEND"}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, str(NO_IO_URING), *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=120,
    )


SECCOMP = pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux's")


@SECCOMP
@THREADS
def test_the_example_falls_back_to_threads_when_seccomp_refuses_io_uring() -> None:
    done = _run_without_io_uring("examples/demo.py", "--seconds", "0.2")
    assert done.returncode == 0, done.stderr
    assert "backend: threads" in done.stdout
    assert "sha256 matches" in done.stdout
    assert "trio_aio did" in done.stdout  # the comparison with trio.open_file
    assert "were running in worker threads: a running thread cannot be stopped" in done.stdout


PROBE = """
import errno, sys, trio, trio_aio
from trio_aio._ring._ring import Ring, RingUnavailableError
try:
    Ring(4)
except RingUnavailableError as exc:
    print("setup:", exc)
print("available:", trio_aio.available_backends())
try:
    trio_aio.select_backend("io_uring")
except trio_aio.BackendUnavailableError as exc:
    print("asked:", exc)
async def main():
    async with await trio_aio.open_file(sys.argv[1], "w+b") as f:
        await f.write_at(b"fallback", 0)
        print("read:", await f.read_at(8, 0), trio_aio.statistics().backend)
trio_aio.select_backend("auto")
trio.run(main)
"""


@SECCOMP
@THREADS
def test_asking_for_io_uring_under_seccomp_says_why(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    done = _run_without_io_uring(str(script), str(tmp_path / "f"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("setup: io_uring_setup failed with EPERM (Operation not permitted)")
    assert "seccomp" in lines[0]
    assert lines[1] == "available: ('threads',)"
    assert lines[2].startswith(
        "asked: select_backend() asks for the io_uring backend, which cannot work here: "
        "io_uring_setup failed with EPERM"
    )
    assert lines[3] == "read: b'fallback' threads"

    done = _run_without_io_uring(
        str(script), str(tmp_path / "f"), env={"TRIO_AIO_BACKEND": "io_uring"}
    )
    assert done.returncode == 0, done.stderr  # select_backend() overrides it


# -- the thread backend's parts ------------------------------------------------------------


@THREADS
def test_emulated_positional_io_leaves_the_position_alone(tmp_path: Path) -> None:
    """The Windows path (lseek around read/write), run here."""
    path = tmp_path / "e"
    path.write_bytes(b"0123456789")
    lock = threading.Lock()
    fd = os.open(path, os.O_RDWR)
    try:
        os.lseek(fd, 3, os.SEEK_SET)
        assert _threads._emulated_pread(lock, fd, 4, 5) == b"5678"
        buf = memoryview(bytearray(4))
        assert _threads._emulated_preadinto(lock, fd, buf, 8) == 2
        assert bytes(buf[:2]) == b"89"
        assert _threads._emulated_pwrite(lock, fd, memoryview(b"ab"), 0) == 2
        assert os.lseek(fd, 0, os.SEEK_CUR) == 3
        assert _threads._emulated_pread(lock, fd, 2, -1) == b"34"  # -1: the position
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
        bufs = [memoryview(bytearray(2)), memoryview(bytearray(4))]
        assert _threads._one_at_a_time(_threads._emulated_preadinto, lock, fd, bufs, 6) == 4
        assert bytes(bufs[0]) + bytes(bufs[1][:2]) == b"6789"  # short at the end
        assert os.lseek(fd, 0, os.SEEK_CUR) == 5
    finally:
        os.close(fd)
    assert path.read_bytes() == b"ab23456789"


def _slow_way(stats: trio_aio.Statistics) -> int:
    """Operations that went to a worker thread or through the ring."""
    return stats.submitted


@needs_nowait
async def test_uncached_reads_take_the_slow_way(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RWF_NOWAIT says EAGAIN for data not in the page cache: a thread or the ring reads it.

    The miss is simulated: a real one cannot be had for certain here.  Even
    with the page evicted (``mincore`` says so), the readahead that a
    ``RWF_NOWAIT`` miss starts can finish before the kernel looks again, on
    a fast virtual disk, and the read is then served inline (seen on this
    project's VM about one run in five).
    """
    path = tmp_path / "cold"
    data = os.urandom(1 << 16)
    path.write_bytes(data)
    misses: list[int] = []
    real = _inline.nowait_readv

    def miss_once(fd: int, buffers: object, offset: int) -> int:
        if not misses:
            misses.append(offset)
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))
        return real(fd, buffers, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(_inline, "nowait_readv", miss_once)
    async with await trio_aio.open_file(path, "rb") as f:
        before = trio_aio.statistics()
        assert await f.read_at(4096, 8192) == data[8192 : 8192 + 4096]
        after = trio_aio.statistics()
        assert misses == [8192]
        assert _slow_way(after) - _slow_way(before) == 1
        assert after.inline == before.inline
        # cached: served inline
        assert await f.read_at(4096, 8192) == data[8192 : 8192 + 4096]
        assert trio_aio.statistics().inline == after.inline + 1
        assert _slow_way(trio_aio.statistics()) == _slow_way(after)


@needs_nowait
async def test_a_file_that_refuses_nowait_stops_trying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    calls: list[int] = []

    def refuse(fd: int, buffer: object, offset: int) -> int:
        calls.append(offset)
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(_inline, "nowait_writev", refuse)
    path = tmp_path / "w"
    async with await trio_aio.open_file(path, "wb") as f:
        for i in range(3):
            assert await f.write_at(b"abc", 3 * i) == 3
    assert calls == [0]  # tried once, then straight to the slow way
    assert path.read_bytes() == b"abcabcabc"


async def test_direct_io_files_never_read_on_the_loop_thread(tmp_path: Path, backend: str) -> None:
    """RWF_NOWAIT on an O_DIRECT fd still waits for the device: never inline."""
    import mmap

    if not O_DIRECT:
        pytest.skip("no O_DIRECT here")
    path = tmp_path / "direct"
    data = os.urandom(1 << 16)
    path.write_bytes(data)
    try:
        fd = os.open(path, os.O_RDONLY | O_DIRECT)
    except OSError as exc:  # pragma: no cover - a file system without O_DIRECT
        pytest.skip(f"O_DIRECT refused here: {exc}")
    buf = mmap.mmap(-1, 4096)  # page-aligned
    async with await trio_aio.open_file(fd, "rb") as f:
        before = trio_aio.statistics()
        assert await f.readinto_at(buf, 4096) == 4096
        after = trio_aio.statistics()
    assert buf[:] == data[4096:8192]
    assert after.inline == before.inline
    assert _slow_way(after) - _slow_way(before) == 1
    buf.close()


@pytest.mark.backends("io_uring")
async def test_the_inline_path_can_be_turned_off(data_path: Path) -> None:
    trio_aio.lowlevel.configure_ring(inline_cached=False)
    data = data_path.read_bytes()
    async with await trio_aio.open_file(data_path) as f:
        before = trio_aio.statistics()
        assert await f.read_at(10, 0) == data[:10]
        assert await f.read_many([(0, 4), (4, 4)]) == [data[:4], data[4:8]]
        after = trio_aio.statistics()
    assert after.inline == before.inline == 0
    assert after.submitted - before.submitted == 3


@needs_nowait
async def test_a_cancelled_inline_read_is_dropped_before_its_system_call(
    data_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    calls: list[int] = []
    real = _inline.nowait_readv

    def counting(fd: int, buffers: object, offset: int) -> int:
        calls.append(offset)
        return real(fd, buffers, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(_inline, "nowait_readv", counting)
    async with await trio_aio.open_file(data_path) as f:
        await f.read_at(1, 0)
        before = trio_aio.statistics()
        assert await drop_a_read_and_a_batch(f) == 3
        after = trio_aio.statistics()
    assert calls == [0]
    assert after.inline == before.inline


async def test_a_batch_with_an_uncached_element_reads_every_element(
    data_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str
) -> None:
    """One element would block: the batch still returns every element's data."""
    real = _inline.nowait_readv

    def cold_at_8192(fd: int, buffers: object, offset: int) -> int:
        if offset == 8192:
            raise BlockingIOError(errno.EAGAIN, "pretend it is not cached")
        return real(fd, buffers, offset)  # type: ignore[arg-type]

    monkeypatch.setattr(_inline, "nowait_readv", cold_at_8192)
    data = data_path.read_bytes()
    ranges = [(0, 100), (4096, 200), (8192, 300), (12288, 400)]
    async with await trio_aio.open_file(data_path) as f:
        before = trio_aio.statistics()
        got = await f.read_many(ranges)
        after = trio_aio.statistics()
    assert got == [data[off : off + n] for off, n in ranges]
    assert _slow_way(after) - _slow_way(before) >= 1


@THREADS
async def test_operations_waiting_for_a_thread_are_dropped_by_cancellation(
    pipe: tuple[int, int],
) -> None:
    trio_aio.lowlevel.configure_threads(1)
    r, w = pipe
    got: list[bytes] = []
    waiting = trio.CancelScope()
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:

        async def reader() -> None:
            got.append(await f.read(1))

        async def queued_reader() -> None:
            with waiting:
                got.append(await f.read(1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(queued_reader)
            await trio.testing.wait_all_tasks_blocked()
            before = trio_aio.statistics()
            assert (before.in_flight, before.queued) == (1, 1)  # one thread, one waiting
            waiting.cancel()
            await trio.testing.wait_all_tasks_blocked()
            after = trio_aio.statistics()
            assert (after.in_flight, after.queued) == (1, 0)
            assert after.dropped - before.dropped == 1
            assert after.submitted == before.submitted
            os.write(w, b"!")
    assert waiting.cancelled_caught
    assert got == [b"!"]

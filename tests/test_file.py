"""Every AsyncFile method against os.pread/os.pwrite on real files."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
import trio
from helpers import (
    ALLOCATE_REFUSALS,
    O_DIRECT,
    URING_ONLY,
    uring_statistics,
    wait_blocked_in_kernel,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_aio
from trio_aio._backends._inline import HAVE_NOWAIT

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


async def test_current_backend_is_the_selected_one(backend: str) -> None:
    assert trio_aio.current_backend() == backend
    assert trio_aio.statistics().backend == backend


async def test_read_at_matches_pread(data_path: Path) -> None:
    raw = os.open(data_path, os.O_RDONLY)
    try:
        async with await trio_aio.open_file(data_path) as f:
            for size, offset in [
                (0, 0),
                (1, 0),
                (4096, 0),
                (4096, 12345),
                (100_000, 7),
                (10, (1 << 20) - 3),
                (10, 1 << 21),
                ((1 << 20) + 5, 0),
            ]:
                assert await f.read_at(size, offset) == os.pread(raw, size, offset)
            # positional reads never move the cursor
            assert await f.tell() == 0
    finally:
        os.close(raw)


async def test_readinto_at_matches_pread(data_path: Path) -> None:
    expected = data_path.read_bytes()
    async with await trio_aio.open_file(data_path) as f:
        buf = bytearray(5000)
        assert await f.readinto_at(buf, 1000) == 5000
        assert buf == expected[1000:6000]
        view = memoryview(buf)[10:20]
        assert await f.readinto_at(view, 0) == 10
        assert buf[10:20] == expected[:10]
        tail = bytearray(100)
        assert await f.readinto_at(tail, len(expected) - 40) == 40
        assert tail[:40] == expected[-40:]
        assert await f.readinto_at(bytearray(10), len(expected) + 1) == 0


async def test_write_at_matches_pwrite(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    raw = os.open(theirs, os.O_RDWR | os.O_CREAT)
    try:
        async with await trio_aio.open_file(ours, "wb") as f:
            cases: list[tuple[bytes | bytearray | memoryview, int]] = [
                (b"hello", 0),
                (b"x" * 10_000, 3),
                (b"tail", 50_000),
                (bytearray(b"ba"), 1),
                (memoryview(b"mv"), 2),
                (b"", 9),
            ]
            for data, offset in cases:
                assert await f.write_at(data, offset) == len(data)
                os.pwrite(raw, data, offset)
            assert await f.tell() == 0
    finally:
        os.close(raw)
    assert ours.read_bytes() == theirs.read_bytes()


async def test_cursor_methods(tmp_path: Path) -> None:
    path = tmp_path / "f"
    async with await trio_aio.open_file(path, "wb+") as f:
        assert f.mode == "rb+"
        assert await f.write(b"0123456789") == 10
        assert await f.tell() == 10
        assert await f.seek(2) == 2
        assert await f.read(3) == b"234"
        assert await f.seek(-1, os.SEEK_END) == 9
        assert await f.read() == b"9"
        assert await f.read(5) == b""
        await f.seek(0)
        buf = bytearray(4)
        assert await f.readinto(buf) == 4
        assert buf == b"0123"
        assert await f.seek(2, os.SEEK_CUR) == 6
        assert await f.read() == b"6789"
        assert await f.truncate(4) == 4
        assert (await f.stat()).st_size == 4
        await f.seek(2)
        assert await f.truncate() == 2
        await f.flush()
    assert path.read_bytes() == b"01"


async def test_read_all_of_a_large_file(data_path: Path) -> None:
    async with await trio_aio.open_file(data_path) as f:
        assert await f.read() == data_path.read_bytes()
        assert await f.tell() == data_path.stat().st_size


async def test_append_mode(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"abc")
    async with await trio_aio.open_file(path, "ab") as f:
        assert f.mode == "ab"
        assert await f.tell() == 3
        await f.write(b"def")
        await f.write(b"gh")
    assert path.read_bytes() == b"abcdefgh"
    async with await trio_aio.open_file(path, "a+b") as f:
        assert f.mode == "ab+"
        await f.write(b"!")
        assert await f.read_at(100, 0) == b"abcdefgh!"


async def test_modes(tmp_path: Path) -> None:
    path = tmp_path / "m"
    async with await trio_aio.open_file(path, "xb") as f:
        assert f.mode == "xb"
        assert f.writable() and not f.readable()
        await f.write(b"data")
    async with await trio_aio.open_file(path, "rb") as f:
        assert f.readable() and not f.writable()
        assert await f.read() == b"data"
    async with await trio_aio.open_file(path, "r+b") as f:
        await f.write(b"D")
    assert path.read_bytes() == b"Data"
    async with await trio_aio.open_file(path, "wb") as f:
        assert f.mode == "wb"
    assert path.read_bytes() == b""
    async with await trio_aio.open_file(str(path).encode(), "wb") as f:
        assert f.name == str(path).encode()


async def test_sync_datasync_allocate_stat(tmp_path: Path) -> None:
    path = tmp_path / "s"
    async with await trio_aio.open_file(path, "wb") as f:
        await f.write(b"x" * 100)
        await f.sync()
        await f.datasync()
        try:
            await f.allocate(0, 1 << 20)
        except OSError as exc:
            if exc.errno not in ALLOCATE_REFUSALS:
                raise
        st = await f.stat()
        ref = os.fstat(f.fileno())
        assert st == ref
        # stat_result equality compares only the integer fields: check the rest too
        for field in (
            "st_atime",
            "st_mtime",
            "st_ctime",
            "st_atime_ns",
            "st_mtime_ns",
            "st_ctime_ns",
            "st_blksize",
            "st_blocks",
            "st_rdev",
        ):
            assert getattr(st, field) == getattr(ref, field), field
        assert st.st_size == 1 << 20
        assert st.st_blocks * 512 >= 1 << 20
        assert stat.S_ISREG(st.st_mode)
        assert st.st_mtime_ns == ref.st_mtime_ns
        assert st.st_blksize == ref.st_blksize


async def test_name_mode_closed_fileno(data_path: Path) -> None:
    f = await trio_aio.open_file(data_path)
    assert f.name == str(data_path)
    assert f.mode == "rb"
    assert not f.closed
    assert os.fstat(f.fileno()).st_ino == data_path.stat().st_ino
    assert str(data_path) in repr(f)
    await f.aclose()
    assert f.closed
    await f.aclose()  # twice is fine


async def test_open_an_fd(data_path: Path) -> None:
    fd = os.open(data_path, os.O_RDONLY)
    async with await trio_aio.open_file(fd, "rb") as f:
        assert f.name == fd
        assert await f.read_at(4, 0) == data_path.read_bytes()[:4]
    with pytest.raises(OSError):
        os.fstat(fd)  # closefd=True closed it

    fd = os.open(data_path, os.O_RDONLY)
    async with await trio_aio.open_file(fd, "rb", closefd=False) as f:
        await f.read_at(1, 0)
    os.fstat(fd)
    os.close(fd)


async def test_opener_runs_and_its_fd_is_used(data_path: Path) -> None:
    calls = []

    def opener(path: str | bytes, flags: int) -> int:
        calls.append((path, flags))
        return os.open(path, flags)

    async with await trio_aio.open_file(data_path, opener=opener) as f:
        assert await f.read_at(3, 0) == data_path.read_bytes()[:3]
    assert calls and calls[0][0] == str(data_path)


@URING_ONLY
async def test_open_and_close_go_through_the_ring(data_path: Path) -> None:
    before = trio_aio.statistics().submitted
    async with await trio_aio.open_file(data_path) as f:
        pass
    # openat, statx, close
    assert trio_aio.statistics().submitted - before == 3
    assert f.closed


async def test_statistics_counts(
    data_path: Path, backend: str, ring_only: None, anyio_backend_name: str
) -> None:
    async with await trio_aio.open_file(data_path) as f:
        s0 = trio_aio.statistics()
        for i in range(10):
            await f.read_at(10, i)
        s1 = trio_aio.statistics()
    assert s1.backend == backend
    # the shared counters mean the same on every backend: each read was
    # either submitted (and completed) or served inline
    submitted = s1.submitted - s0.submitted
    assert submitted + (s1.inline - s0.inline) == 10
    assert s1.completed - s0.completed == submitted
    assert s1.in_flight == 0
    if s1.backend == "io_uring":
        assert s0.backend == "io_uring"
        assert s1.enter_calls - s0.enter_calls == 10
    elif s1.backend == "posix_aio":
        assert s0.backend == "posix_aio"
        # on trio every read is an AIO job; asyncio has no AIO filter: threads
        assert s1.threaded - s0.threaded == (0 if anyio_backend_name == "trio" else 10)
    elif HAVE_NOWAIT:
        # the file was just written: cached, so every read was served inline
        assert s1.inline - s0.inline == 10
    else:  # no RWF_NOWAIT (macOS, the BSDs, Windows): every read in a thread
        assert submitted == 10


@pytest.mark.backends("threads")
async def test_thread_backend_counts_its_threads(data_path: Path) -> None:
    before = trio_aio.statistics()
    async with await trio_aio.open_file(data_path, "r+b") as f:
        await f.sync()
        await f.write_at(b"x", 0)
    after = trio_aio.statistics()
    # open, fstat, fsync in threads; the write inline or in a thread (ext4
    # refuses RWF_NOWAIT for buffered writes); close is not counted
    submitted = after.submitted - before.submitted
    assert submitted in (3, 4)
    assert submitted + after.inline - before.inline == 4
    assert after.completed - before.completed == submitted
    assert (after.in_flight, after.queued) == (0, 0)


@URING_ONLY
async def test_concurrent_reads_share_one_enter(data_path: Path, ring_only: None) -> None:
    expected = data_path.read_bytes()
    async with await trio_aio.open_file(data_path) as f:
        go = anyio.Event()
        results: dict[int, bytes] = {}

        async def reader(i: int) -> None:
            await go.wait()
            results[i] = await f.read_at(4096, i * 4096)

        async with anyio.create_task_group() as nursery:
            for i in range(32):
                nursery.start_soon(reader, i)
            await wait_blocked_in_kernel()
            before = uring_statistics().enter_calls
            go.set()
        after = uring_statistics().enter_calls
    # All 32 readers woke in one scheduler pass: one io_uring_enter.
    assert after - before == 1
    for i in range(32):
        assert results[i] == expected[i * 4096 : (i + 1) * 4096]


async def test_regular_file_kinds(tmp_path: Path) -> None:
    # a character device works too
    async with await trio_aio.open_file("/dev/zero", "rb") as f:
        assert await f.read(16) == b"\0" * 16
    async with await trio_aio.open_file("/dev/null", "wb") as f:
        assert await f.write(b"gone") == 4


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    ops=st.lists(
        st.tuples(st.booleans(), st.integers(0, 20_000), st.binary(max_size=5000)),
        max_size=25,
    )
)
def test_positional_io_matches_a_model(ops: list[tuple[bool, int, bytes]]) -> None:
    """Random write_at/read_at sequences agree with a bytearray model and with os.pread."""

    async def main(path: str) -> None:
        model = bytearray()
        async with await trio_aio.open_file(path, "w+b") as f:
            for is_write, offset, data in ops:
                if is_write:
                    assert await f.write_at(data, offset) == len(data)
                    if data:
                        if len(model) < offset:
                            model.extend(bytes(offset - len(model)))
                        model[offset : offset + len(data)] = data
                else:
                    got = await f.read_at(len(data), offset)
                    assert got == bytes(model[offset : offset + len(data)])
                    assert got == os.pread(f.fileno(), len(data), offset)
            assert (await f.stat()).st_size == len(model)
            assert await f.read() == bytes(model)

    with tempfile.TemporaryDirectory() as tmp:
        trio.run(main, os.path.join(tmp, "model"))


@URING_ONLY
async def test_truncate_without_the_ring_opcode_uses_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Kernels before 6.9 lack IORING_OP_FTRUNCATE: truncate falls back to a thread."""
    from trio_aio._ring import _constants as C
    from trio_aio._ring._ring import Ring

    probe = Ring._probe
    monkeypatch.setattr(Ring, "_probe", lambda self: probe(self) - {C.IORING_OP_FTRUNCATE})
    path = tmp_path / "t"
    path.write_bytes(b"x" * 100)
    before = trio_aio.statistics().submitted
    async with await trio_aio.open_file(path, "r+b") as f:
        after_open = trio_aio.statistics().submitted
        assert await f.truncate(10) == 10
        assert trio_aio.statistics().submitted == after_open  # not through the ring
    assert trio_aio.statistics().submitted - before == 3  # openat, statx, close
    assert path.read_bytes() == b"x" * 10


async def test_a_stream_read_returns_what_one_read_gives(pipe: tuple[int, int]) -> None:
    """On a pipe, read(n) does not wait for n bytes: a cancellation could lose those it has."""
    r, w = pipe
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        os.write(w, b"12345")
        assert await f.read(10) == b"12345"
        os.write(w, b"678")
        buf = bytearray(10)
        assert await f.readinto(buf) == 3
        assert buf[:3] == b"678"
        os.close(w)
        assert await f.read(10) == b""
        assert await f.readinto(buf) == 0


def operations() -> int:
    """Operations that ran so far, submitted or served inline."""
    stats = trio_aio.statistics()
    return stats.submitted + stats.inline


async def test_vectored_reads_and_writes(tmp_path: Path, ring_only: None) -> None:
    path = tmp_path / "v"
    async with await trio_aio.open_file(path, "w+b") as f:
        before = operations()
        parts: list[bytes | bytearray | memoryview] = [
            b"abc",
            bytearray(b"defgh"),
            memoryview(b"ij"),
            b"",
            b"k" * 5000,
        ]
        assert await f.write_at(parts, 10) == 5010
        assert operations() - before == 1  # one kernel operation
        assert await f.write_at((b"12", b"34"), 0) == 4
        assert await f.write_at([], 0) == 0
        expected = b"1234" + bytes(6) + b"abcdefghij" + b"k" * 5000

        bufs = [bytearray(3), bytearray(7), bytearray(5)]
        before = operations()
        assert await f.readinto_at(bufs, 2) == 15
        assert operations() - before == 1
        assert b"".join(bufs) == expected[2:17]
        # short only at end of file
        tail = [bytearray(4000), bytearray(4000)]
        assert await f.readinto_at(tail, 20) == len(expected) - 20
        assert bytes(tail[0]) + bytes(tail[1][: len(expected) - 4020]) == expected[20:]
        assert await f.readinto_at([bytearray(1)], len(expected)) == 0
    assert path.read_bytes() == expected


async def test_more_buffers_than_one_operation_takes(tmp_path: Path) -> None:
    path = tmp_path / "many"
    data = os.urandom(2500)
    async with await trio_aio.open_file(path, "w+b") as f:
        before = trio_aio.statistics().submitted
        assert await f.write_at([data[i : i + 1] for i in range(2500)], 0) == 2500
        assert trio_aio.statistics().submitted - before == 3  # 1024 + 1024 + 452
        bufs = [bytearray(1) for _ in range(2500)]
        assert await f.readinto_at(bufs, 0) == 2500
    assert b"".join(bufs) == data
    assert path.read_bytes() == data


class ShortTransfers:
    """A backend file that moves at most 3 bytes per call, over a bytearray."""

    fd = -1
    may_block = False

    def __init__(self) -> None:
        self.content = bytearray(b"0123456789abcdef")
        self.calls = 0

    async def preadv(self, buffers: list[memoryview], offset: int) -> int:
        await anyio.lowlevel.checkpoint()
        self.calls += 1
        n = min(3, len(buffers[0]), max(0, len(self.content) - offset))
        buffers[0][:n] = self.content[offset : offset + n]
        return n

    async def pwritev(self, buffers: list[memoryview], offset: int) -> int:
        await anyio.lowlevel.checkpoint()
        self.calls += 1
        n = min(3, len(buffers[0]))
        self.content[offset : offset + n] = buffers[0][:n]
        return n


async def test_vectored_transfers_resume_after_short_ones() -> None:
    handle = ShortTransfers()
    f = trio_aio.AsyncFile(handle, "fake", "rb+", closefd=False)  # type: ignore[arg-type]
    bufs = [bytearray(2), bytearray(7), bytearray(10)]
    assert await f.readinto_at(bufs, 1) == 15  # 16 - 1: short only at the end
    assert bytes(bufs[0] + bufs[1] + bufs[2][:6]) == b"123456789abcdef"
    assert await f.write_at([b"AB", b"CDEFG"], 0) == 7
    assert handle.content.startswith(b"ABCDEFG789")
    f._closed = True  # nothing to close: the fake has no fd


def _open_direct_or_skip(path: Path) -> None:
    if not O_DIRECT:
        pytest.skip("no O_DIRECT here")
    try:
        os.close(os.open(path, os.O_RDONLY | O_DIRECT))
    except OSError as exc:  # pragma: no cover - tmpfs and some others refuse O_DIRECT
        pytest.skip(f"this file system refuses O_DIRECT: {exc}")


async def test_direct_io(tmp_path: Path, backend: str) -> None:
    path = tmp_path / "direct"
    data = os.urandom(1 << 16)
    path.write_bytes(data)
    _open_direct_or_skip(path)
    async with await trio_aio.open_file(path, "r+b", direct=True) as f:
        assert f.direct_alignment is not None
        mem, align = f.direct_alignment
        assert 0 < mem <= 4096 and 512 <= align <= 4096
        assert await f.read_at(8192, 4096) == data[4096 : 4096 + 8192]
        buf = trio_aio.aligned_buffer(8192)
        assert await f.readinto_at(buf, 0) == 8192
        assert buf[:] == data[:8192]
        buf[:4096] = b"D" * 4096
        assert await f.write_at(memoryview(buf)[:4096], 8192) == 4096
        assert await f.read() == data[:8192] + b"D" * 4096 + data[12288:]
        before = trio_aio.statistics().submitted
        for bad, what in (
            (lambda: f.read_at(100, 0), "a buffer of 100 bytes"),
            (lambda: f.read_at(4096, 100), "offset 100"),
            (lambda: f.write_at(memoryview(buf)[8:4104], 0), "a buffer at an address"),
            (lambda: f.readinto_at(memoryview(buf)[1:4097], 0), "a buffer at an address"),
            (lambda: f.write_at([memoryview(buf)[:4096], b"x"], 0), "a buffer of 1 bytes"),
        ):
            with pytest.raises(ValueError, match=f"direct I/O on .*; got {what}"):
                await bad()
        assert trio_aio.statistics().submitted == before  # nothing was submitted
        # The cursor moves, though io_uring alone would not move it for O_DIRECT.
        await f.seek(4096)
        blocks = [trio_aio.aligned_buffer(4096) for _ in range(2)]
        for block in blocks:
            assert await f.readinto(block) == 4096
        assert blocks[0][:] + blocks[1][:] == data[4096:8192] + b"D" * 4096
        assert await f.tell() == 12288
        assert await f.write(memoryview(buf)[:4096]) == 4096
        assert await f.tell() == 16384
        assert await f.read(4096) == data[16384:20480]
    content = path.read_bytes()
    assert content[8192:12288] == b"D" * 4096
    assert content[12288:16384] == b"D" * 4096


async def test_an_fd_opened_with_o_direct_is_detected(tmp_path: Path) -> None:
    path = tmp_path / "direct-fd"
    path.write_bytes(bytes(8192))
    _open_direct_or_skip(path)
    async with await trio_aio.open_file(os.open(path, os.O_RDONLY | O_DIRECT)) as f:
        assert f.direct_alignment is not None
        with pytest.raises(ValueError, match="direct I/O"):
            await f.read_at(10, 0)
        assert await f.read_at(4096, 4096) == bytes(4096)
    async with await trio_aio.open_file(path) as f:
        assert f.direct_alignment is None
    with pytest.raises(ValueError, match="needs a path"):
        await trio_aio.open_file(0, "rb", direct=True)


async def test_a_file_counts_its_own_operations_in_flight(
    pipe: tuple[int, int], backend: str
) -> None:
    """``AsyncFile.statistics()``: a read held by the kernel (or a thread) on this file only."""
    r, w = pipe
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        assert f.statistics() == trio_aio.FileStatistics(backend=backend, in_flight=0)
        got: list[bytes] = []
        async with anyio.create_task_group() as tg:

            async def reader() -> None:
                got.append(await f.read(1))

            tg.start_soon(reader)
            await wait_blocked_in_kernel()
            assert f.statistics().in_flight == 1
            os.write(w, b"!")
        assert got == [b"!"]
        assert f.statistics().in_flight == 0

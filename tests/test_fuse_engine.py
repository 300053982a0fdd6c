"""Files on a FUSE file system (``tests/fusefs.py``): the loop keeps running.

Skipped only where ``/dev/fuse`` or root is missing.  The facts these rely on
are in ``trio_aio/_backends/_fs.py``.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterator

import anyio
import pytest
from fusefs import FuseFS, unavailable_reason

import trio_aio
from trio_aio._backends import _fs

_REASON = unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.backends("io_uring", "threads"),
]

DATA = bytes(i % 251 for i in range(1 << 16))
TICKS = 50


@pytest.fixture
def fuse() -> Iterator[FuseFS]:
    with FuseFS(files={"f": DATA}, direct_io=True, stall_timeout=10.0) as fs:
        yield fs


def test_fuse_files_may_block_and_local_ones_do_not(fuse: FuseFS, tmp_path: object) -> None:
    fd = os.open(fuse.path("f"), os.O_RDONLY)
    try:
        before = fuse.counts.copy()
        assert _fs.filesystem_type(fd) == "fuse.trio_aio_test"
        assert _fs.classify(fd) == (True, True)
        assert fuse.counts == before  # the daemon was not asked (it could stall)
    finally:
        os.close(fd)
    r, w = os.pipe()
    fd = os.open(__file__, os.O_RDONLY)  # this machine's /work: a local file system
    try:
        for local in (r, w):
            assert _fs.classify(local) == (False, False)
        assert _fs.filesystem_type(fd) in _fs.LOCAL_FILESYSTEMS
        assert _fs.classify(fd) == (False, False)
    finally:
        for f in (r, w, fd):
            os.close(f)


@pytest.mark.anyio
async def test_the_loop_runs_while_the_daemon_holds_a_read(fuse: FuseFS) -> None:
    async with await trio_aio.open_file(fuse.path("f"), "rb") as f:
        assert f._handle.may_block
        stall = fuse.stall("read", "f")
        result: list[bytes] = []
        ticks = 0
        gaps: list[float] = []
        async with anyio.create_task_group() as tg:

            async def read() -> None:
                result.append(await f.read_at(4096, 4096))

            tg.start_soon(read)
            # Before the fix the loop froze inside io_uring_enter until the
            # daemon's safety release: no tick could run while it held the read.
            await anyio.to_thread.run_sync(stall.wait_arrived)
            last = time.monotonic()
            while ticks < TICKS:
                await anyio.sleep(0)
                now = time.monotonic()
                gaps.append(now - last)
                last = now
                ticks += 1
            assert not stall.replied.is_set()  # the daemon still holds it
            stall.release()
        assert not stall.timed_out  # released by the test, not by the safety net
        assert result == [DATA[4096:8192]]
        print(f"largest gap between ticks while FUSE held the read: {max(gaps) * 1e3:.2f} ms")


@pytest.mark.anyio
@pytest.mark.backends("io_uring")
async def test_a_cancelled_stalled_fuse_write_returns_promptly(fuse: FuseFS) -> None:
    async with await trio_aio.open_file(fuse.path("f"), "r+b") as f:
        stall = fuse.stall("write", "f")
        start = time.monotonic()
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def write() -> None:
                    await f.write_at(b"x" * 4096, 0)

                tg.start_soon(write)
                await anyio.to_thread.run_sync(stall.wait_arrived)
                scope.cancel()
        assert scope.cancelled_caught
        assert stall.interrupted.is_set()  # the kernel sent FUSE_INTERRUPT ...
        assert stall.reply_error == errno.EINTR and not stall.timed_out  # ... and it was honoured
        assert time.monotonic() - start < stall.timeout / 2
        assert bytes(fuse.files["f"][:4096]) == DATA[:4096]  # the write did not happen


@pytest.mark.anyio
async def test_short_fuse_reads_give_the_right_bytes(fuse: FuseFS) -> None:
    # io_uring retried a short direct-I/O FUSE read from a stale offset: wrong bytes.
    fuse.short("read", 100, count=None, name="f")
    async with await trio_aio.open_file(fuse.path("f"), "rb") as f:
        assert await f.read_at(4096, 1000) == DATA[1000:5096]
        buf = bytearray(300)
        n = await f.readinto_at(buf, 7)
        assert buf[:n] == DATA[7 : 7 + n] and n > 0
        assert await f.read_many([(0, 50), (8192, 250)]) == [DATA[:50], DATA[8192:8442]]


@pytest.mark.anyio
async def test_many_fuse_reads_never_raise_interrupted_error(fuse: FuseFS) -> None:
    async with await trio_aio.open_file(fuse.path("f"), "rb") as f:
        async with anyio.create_task_group() as tg:
            for i in range(16):
                tg.start_soon(f.read_at, 4096, i * 4096)
        for _ in range(50):
            assert await f.read_at(512, 512) == DATA[512:1024]

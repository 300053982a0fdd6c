"""The file layer on a FUSE file system that fails, stalls and transfers short on demand.

A direct-I/O FUSE file is the worst case for the cursor: io_uring never moves
its position, and retries short reads from a stale offset.  Skipped only
where ``/dev/fuse`` or root is missing (``tests/fusefs.py``).
"""

from __future__ import annotations

import errno
import gc
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest
from fusefs import FuseFS, unavailable_reason

import trio_aio

_REASON = unavailable_reason()
pytestmark = [
    pytest.mark.skipif(_REASON is not None, reason=_REASON or ""),
    pytest.mark.backends("io_uring", "threads"),
    pytest.mark.anyio,
]

DATA = bytes(i % 251 for i in range(1 << 16))


@pytest.fixture(params=[True, False], ids=["direct_io", "cached"])
def fuse(request: pytest.FixtureRequest) -> Iterator[FuseFS]:
    with FuseFS(files={"f": DATA}, direct_io=request.param, stall_timeout=10.0) as fs:
        yield fs


async def test_cursor_reads_and_writes_move_the_position(fuse: FuseFS) -> None:
    async with await trio_aio.open_file(fuse.path("f"), "rb+") as f:
        assert await f.read(1000) == DATA[:1000]
        assert await f.read(1000) == DATA[1000:2000]
        assert await f.tell() == 2000
        assert await f.write(b"x" * 500) == 500
        assert await f.tell() == 2500
        buf = bytearray(100)
        assert await f.readinto(buf) == 100
        assert bytes(buf) == DATA[2500:2600]
        await f.seek(-10, 2)
        assert await f.read() == DATA[-10:]
    assert bytes(fuse.files["f"][2000:2500]) == b"x" * 500


async def test_short_transfers_are_finished_at_the_right_offsets(fuse: FuseFS) -> None:
    # (In page-cache mode a short READ reply means end of file to the kernel,
    # which then shrinks the file: only a direct-I/O daemon may answer short.)
    if fuse.direct_io:
        fuse.short("read", 100, name="f")
    fuse.short("write", 300, name="f")
    async with await trio_aio.open_file(fuse.path("f"), "rb+") as f:
        assert await f.read(5000) == DATA[:5000]
        assert await f.write(b"y" * 4000) == 4000
        assert await f.tell() == 9000
        assert await f.read_at(2000, 100) == DATA[100:2100]
        assert await f.write_at(b"z" * 1000, 20_000) == 1000
    assert bytes(fuse.files["f"][5000:9000]) == b"y" * 4000
    assert bytes(fuse.files["f"][20_000:21_000]) == b"z" * 1000


async def test_a_write_the_daemon_fails_part_way(fuse: FuseFS) -> None:
    """Like a full disk behind a FUSE daemon: what went in is reported, and kept."""
    fuse.short("write", 1000, name="f")
    errors: list[OSError] = []
    async with await trio_aio.open_file(fuse.path("f"), "wb") as f:
        assert await f.write(b"a" * 2500) == 2500

        async def write() -> None:
            try:
                await f.write(b"b" * 2500)
            except OSError as exc:
                errors.append(exc)

        first = fuse.stall("write", "f")
        async with anyio.create_task_group() as tg:
            tg.start_soon(write)
            await anyio.to_thread.run_sync(first.wait_arrived)
            second = fuse.stall("write", "f")
            first.release()  # 1000 bytes go in ...
            await anyio.to_thread.run_sync(second.wait_arrived)
            second.release(errno.ENOSPC)  # ... then the daemon's disk is full
        [error] = errors
        assert error.errno == errno.ENOSPC
        assert error.filename == fuse.path("f")
        assert error.bytes_written == 1000  # type: ignore[attr-defined]
        assert await f.tell() == 3500
        del error
        errors.clear()
        gc.collect()
    assert bytes(fuse.files["f"]) == b"a" * 2500 + b"b" * 1000


async def test_a_read_the_daemon_fails(fuse: FuseFS) -> None:
    async with await trio_aio.open_file(fuse.path("f"), "rb") as f:
        # (every read: the kernel retries a failed readahead with a plain read)
        fuse.fail("read", errno.EIO, count=None, name="f")
        with pytest.raises(OSError) as info:
            await f.read(100)
        assert info.value.errno == errno.EIO
        fuse.clear()
        assert await f.tell() == 0  # a failed read does not move the position
        assert await f.read(100) == DATA[:100]
        del info
        gc.collect()


async def test_append_mode_asks_for_the_end_off_the_loop(fuse: FuseFS) -> None:
    async with await trio_aio.open_file(fuse.path("f"), "ab") as f:
        assert await f.tell() == len(DATA)
        assert await f.write(b"end") == 3
        assert await f.tell() == len(DATA) + 3
    assert bytes(fuse.files["f"][-3:]) == b"end"


@pytest.mark.parametrize("timeouts", [0.0, 60.0], ids=["revalidated", "cached_entries"])
@pytest.mark.parametrize("op", ["lookup", "open", "getattr"])
async def test_the_loop_runs_while_the_daemon_holds_an_open(op: str, timeouts: float) -> None:
    """Opening asks the daemon (LOOKUP, OPEN, GETATTR): none of it on the loop's thread.

    With entries cached (a timeout the daemon gave), the kernel's inline try
    of an ``openat`` finds the path at once and sends OPEN from inside
    ``io_uring_enter``; with a timeout of 0 the lookup goes to a worker.
    And finding out what the file system is must not ask it (``STATFS``).
    """
    with FuseFS(files={"f": DATA}, entry_timeout=timeouts, attr_timeout=timeouts) as fuse:
        if timeouts:  # cache the entry and the attributes first
            with open(fuse.path("f"), "rb"):
                pass
        if op == "lookup" and timeouts:
            pytest.skip("a cached entry needs no LOOKUP")
        if op == "getattr" and timeouts:
            pytest.skip("cached attributes need no GETATTR")
        stall = fuse.stall(op, "f")
        ticks = 0
        async with anyio.create_task_group() as tg:

            async def open_and_close() -> None:
                f = await trio_aio.open_file(fuse.path("f"), "rb")
                await f.aclose()

            tg.start_soon(open_and_close)
            await anyio.to_thread.run_sync(stall.wait_arrived)
            while ticks < 50:  # the loop runs while the daemon holds the request
                await anyio.lowlevel.checkpoint()
                ticks += 1
            assert not stall.replied.is_set()
            stall.release()
        assert not stall.timed_out
        assert fuse.count("statfs") == 0

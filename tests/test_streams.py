"""trio_aio.streams against anyio's stream interfaces, on trio and on asyncio."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.file import FileStreamAttribute
from anyio.streams.stapled import StapledByteStream
from anyio.streams.text import TextReceiveStream

import trio_aio
from trio_aio.streams import FileReadStream, FileWriteStream

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


async def test_the_streams_are_anyio_byte_streams(data_path: Path) -> None:
    async with await FileReadStream.from_path(data_path) as r:
        assert isinstance(r, ByteReceiveStream)
    async with await FileWriteStream.from_path(data_path.with_suffix(".out")) as w:
        assert isinstance(w, ByteSendStream)


async def test_receive_iterates_to_the_end(data_path: Path) -> None:
    expected = data_path.read_bytes()
    chunks = []
    async with await FileReadStream.from_path(data_path) as stream:
        async for chunk in stream:
            assert 0 < len(chunk) <= 65536
            chunks.append(chunk)
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
    assert b"".join(chunks) == expected


async def test_receive_honours_max_bytes_start_seek_and_tell(data_path: Path) -> None:
    expected = data_path.read_bytes()
    async with await FileReadStream.from_path(data_path, start=1000) as stream:
        assert await stream.tell() == 1000
        assert await stream.receive(10) == expected[1000:1010]
        assert await stream.seek(-5, os.SEEK_END) == len(expected) - 5
        assert await stream.receive() == expected[-5:]
        with pytest.raises(anyio.EndOfStream):
            await stream.receive()
        with pytest.raises(ValueError, match="max_bytes"):
            await stream.receive(0)
    with pytest.raises(ValueError, match="start"):
        await FileReadStream.from_path(data_path, start=-1)
    with pytest.raises(FileNotFoundError) as info:
        await FileReadStream.from_path(data_path.with_name("missing"))
    assert info.value.filename == str(data_path.with_name("missing"))


async def test_write_truncates_or_appends(tmp_path: Path) -> None:
    path = tmp_path / "out.txt"
    path.write_bytes(b"old contents")
    async with await FileWriteStream.from_path(path) as stream:
        await stream.send(b"hello ")
        await stream.send(memoryview(b"world"))
    assert path.read_bytes() == b"hello world"
    async with await FileWriteStream.from_path(path, append=True) as stream:
        await stream.send(b"!")
    assert path.read_bytes() == b"hello world!"


async def test_typed_attributes(data_path: Path) -> None:
    async with await FileReadStream.from_path(data_path) as stream:
        f = stream.extra(FileStreamAttribute.file)
        assert isinstance(f, trio_aio.AsyncFile)
        assert stream.extra(FileStreamAttribute.path) == data_path
        assert stream.extra(FileStreamAttribute.fileno) == f.fileno()


async def test_constructors_check_the_file(data_path: Path) -> None:
    with open(data_path, "rb") as sync_file, pytest.raises(TypeError, match="AsyncFile"):
        FileReadStream(sync_file)  # type: ignore[arg-type]
    async with await trio_aio.open_file(data_path, "rb") as f:
        with pytest.raises(ValueError, match="writing"):
            FileWriteStream(f)
        # a file's stream starts at the file's position
        await f.seek(10)
        assert await FileReadStream(f).receive(5) == data_path.read_bytes()[10:15]


async def test_errors_map_as_anyio_maps_them(tmp_path: Path, f_path: Path) -> None:
    stream = await FileReadStream.from_path(f_path)
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()
    out = await FileWriteStream.from_path(tmp_path / "g")
    await out.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await out.send(b"x")

    r, w = os.pipe()
    os.close(r)
    try:
        async with FileWriteStream(await trio_aio.open_file(w, "wb", closefd=False)) as broken:
            with pytest.raises(anyio.BrokenResourceError) as info:
                await broken.send(b"nobody reads this")
            assert isinstance(info.value.__cause__, BrokenPipeError)
    finally:
        os.close(w)


@pytest.fixture
def f_path(tmp_path: Path) -> Path:
    path = tmp_path / "f"
    path.write_bytes(b"")
    return path


async def test_buffered_and_text_wrappers(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    # multi-byte characters across the 64 KiB chunk boundaries
    text = "".join(f"line {i}: ünïcødé ✓\n" for i in range(10_000))
    path.write_text(text, encoding="utf-8")

    async with await FileReadStream.from_path(path) as stream:
        buffered = BufferedByteReceiveStream(stream)
        assert await buffered.receive_until(b"\n", 100) == "line 0: ünïcødé ✓".encode()
        assert await buffered.receive_exactly(8) == b"line 1: "

    async with await FileReadStream.from_path(path) as stream:
        decoded = "".join([chunk async for chunk in TextReceiveStream(stream)])
    assert decoded == text


async def test_stapled_file_streams(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.write_bytes(b"request")
    stapled = StapledByteStream(
        await FileWriteStream.from_path(tmp_path / "out"),
        await FileReadStream.from_path(source),
    )
    async with stapled:
        assert await stapled.receive() == b"request"
        await stapled.send(b"response")
        await stapled.send_eof()
    assert (tmp_path / "out").read_bytes() == b"response"


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


async def test_a_fifo_stream_nobody_writes_to_is_cancelled_at_once(fifo: Path) -> None:
    """The read waits for readiness: no ring operation, no thread, nothing lost."""
    # Open both ends so that opening the stream does not wait for a writer;
    # nobody writes through this fd until the read has been cancelled.
    keep = os.open(fifo, os.O_RDWR)
    try:
        async with await FileReadStream.from_path(fifo) as stream:
            before = trio_aio.statistics()
            outcome: list[str] = []
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def reader() -> None:
                        outcome.append(repr(await stream.receive()))

                    tg.start_soon(reader)
                    await anyio.wait_all_tasks_blocked()
                    waiting = trio_aio.statistics()
                    scope.cancel()
            assert scope.cancelled_caught
            assert outcome == []
            # While the reader waited, nothing was in flight and nothing was submitted.
            assert waiting.in_flight == 0 and waiting.queued == 0
            assert waiting.submitted == before.submitted
            # Nothing was consumed: data written now is read whole.
            os.write(keep, b"after")
            assert await stream.receive() == b"after"
    finally:
        os.close(keep)


async def test_streams_through_a_fifo(fifo: Path) -> None:
    keep = os.open(fifo, os.O_RDWR)  # lets both opens return at once
    try:
        reader = await FileReadStream.from_path(fifo)
        writer = await FileWriteStream.from_path(fifo)
        os.close(keep)
        keep = -1
        received = []
        async with anyio.create_task_group() as tg:

            async def drain() -> None:
                async for chunk in reader:
                    received.append(chunk)

            tg.start_soon(drain)
            payload = os.urandom(200_000)  # more than a pipe holds: the writer waits too
            await writer.send(payload)
            await writer.aclose()  # the last writer: the reader sees the end
        await reader.aclose()
        assert b"".join(received) == payload
    finally:
        if keep >= 0:
            os.close(keep)

"""Every async function of the API is a checkpoint, on every backend, even when it raises.

trio's rule for an async API: each call is a cancel point and a schedule
point, however it ends.  ``trio.testing.assert_checkpoints()`` checks a block
that ends normally, so a call expected to raise runs inside ``pytest.raises``
inside it.  The methods are found by introspection: a public async method
missing from the tables below fails ``test_every_async_method_has_a_call``.
"""

from __future__ import annotations

import inspect
import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trio
import trio.testing
from anyio.streams.file import FileStreamAttribute

import trio_aio
from trio_aio.streams import FileReadStream, FileWriteStream

Call = Callable[[Any], Awaitable[object]]
_PATH = FileStreamAttribute.path

# How to call each public async method of AsyncFile, on a file opened "r+b"
# on a file of 1 MiB.
FILE_CALLS: dict[str, Call] = {
    "read": lambda f: f.read(10),
    "read_at": lambda f: f.read_at(10, 0),
    "readinto": lambda f: f.readinto(bytearray(10)),
    "readinto_at": lambda f: f.readinto_at(bytearray(10), 0),
    "read_many": lambda f: f.read_many([(0, 10), (10, 10)]),
    "readinto_many": lambda f: f.readinto_many([(0, bytearray(10))]),
    "write": lambda f: f.write(b"x"),
    "write_at": lambda f: f.write_at(b"x", 0),
    "write_many": lambda f: f.write_many([(0, b"x"), (1, b"y")]),
    "seek": lambda f: f.seek(5),
    "tell": lambda f: f.tell(),
    "truncate": lambda f: f.truncate(1 << 20),
    "flush": lambda f: f.flush(),
    "sync": lambda f: f.sync(),
    "datasync": lambda f: f.datasync(),
    "allocate": lambda f: f.allocate(0, 10),
    "stat": lambda f: f.stat(),
    "aclose": lambda f: f.aclose(),
}

# A call with a bad argument, for each method that takes arguments.
FILE_BAD_ARGUMENTS: dict[str, tuple[type[BaseException], Call]] = {
    "read": (TypeError, lambda f: f.read("all")),
    "read_at": (ValueError, lambda f: f.read_at(-1, 0)),
    "readinto": (TypeError, lambda f: f.readinto(b"read-only")),
    "readinto_at": (TypeError, lambda f: f.readinto_at(b"read-only", 0)),
    "read_many": (ValueError, lambda f: f.read_many([(0, -1)])),
    "readinto_many": (TypeError, lambda f: f.readinto_many([(0, b"read-only")])),
    "write": (TypeError, lambda f: f.write("text")),
    "write_at": (ValueError, lambda f: f.write_at(b"x", -1)),
    "write_many": (TypeError, lambda f: f.write_many("not pairs")),
    "seek": (TypeError, lambda f: f.seek("0")),
    "truncate": (ValueError, lambda f: f.truncate(-1)),
    "allocate": (ValueError, lambda f: f.allocate(0, 0)),
}

# What a file opened for reading only, or writing only, refuses.
READS = ("read", "read_at", "readinto", "readinto_at", "read_many", "readinto_many")
WRITES = ("write", "write_at", "write_many", "truncate", "allocate")

# The streams: how to call each public async method (on a stream over the
# 1 MiB file, or a new file), and how each refuses.
READ_STREAM_CALLS: dict[str, Call] = {
    "receive": lambda s: s.receive(10),
    "seek": lambda s: s.seek(5),
    "tell": lambda s: s.tell(),
    "aclose": lambda s: s.aclose(),
    "from_path": lambda s: _opened(FileReadStream.from_path(s.extra(_PATH), start=3)),
}
WRITE_STREAM_CALLS: dict[str, Call] = {
    "send": lambda s: s.send(b"x"),
    "aclose": lambda s: s.aclose(),
    "from_path": lambda s: _opened(FileWriteStream.from_path(s.extra(_PATH), append=True)),
}
STREAM_BAD_ARGUMENTS: dict[tuple[type[Any], str], tuple[type[BaseException], Call]] = {
    (FileReadStream, "receive"): (ValueError, lambda s: s.receive(0)),
    (FileReadStream, "seek"): (TypeError, lambda s: s.seek("0")),
    (FileReadStream, "from_path"): (ValueError, lambda s: FileReadStream.from_path("x", start=-1)),
    (FileWriteStream, "send"): (TypeError, lambda s: s.send("text")),
    (FileWriteStream, "from_path"): (
        FileNotFoundError,
        lambda s: FileWriteStream.from_path("/nonexistent/trio_aio/x"),
    ),
}

# The tests that call the API run on every backend; the test of the tables, once.
CONTRACT = pytest.mark.usefixtures("backend")


async def _opened(stream: Awaitable[Any]) -> None:
    await (await stream).aclose()


def public_async_methods(cls: type) -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and inspect.iscoroutinefunction(member)
    }


def takes_arguments(cls: type, name: str) -> bool:
    parameters = inspect.signature(getattr(cls, name)).parameters
    return any(p not in ("self", "cls") for p in parameters)


@pytest.mark.parametrize(
    ("cls", "calls"),
    [
        (trio_aio.AsyncFile, FILE_CALLS),
        (FileReadStream, READ_STREAM_CALLS),
        (FileWriteStream, WRITE_STREAM_CALLS),
    ],
)
def test_every_async_method_has_a_call(cls: type, calls: dict[str, Call]) -> None:
    """Runs once, without a backend: a new async method must be added to the tables."""
    assert public_async_methods(cls) == set(calls)
    assert inspect.iscoroutinefunction(trio_aio.open_file)
    # Each method that takes arguments has a call that refuses them.
    with_arguments = {name for name in calls if takes_arguments(cls, name)}
    if cls is trio_aio.AsyncFile:
        assert with_arguments == set(FILE_BAD_ARGUMENTS)
    else:
        assert with_arguments == {name for c, name in STREAM_BAD_ARGUMENTS if c is cls}


async def assert_checkpoints_raising(
    exc_type: type[BaseException], call: Callable[[], Awaitable[object]]
) -> None:
    """``call()`` raises ``exc_type``, and is a checkpoint all the same."""
    with trio.testing.assert_checkpoints(), pytest.raises(exc_type):
        await call()


# -- AsyncFile ---------------------------------------------------------------------------


@CONTRACT
@pytest.mark.parametrize("name", sorted(FILE_CALLS))
async def test_each_method_is_a_checkpoint(data_path: Path, name: str) -> None:
    async with await trio_aio.open_file(data_path, "r+b") as f:
        with trio.testing.assert_checkpoints():
            await FILE_CALLS[name](f)


@CONTRACT
@pytest.mark.parametrize("name", sorted(FILE_CALLS))
async def test_each_method_is_a_checkpoint_on_a_closed_file(data_path: Path, name: str) -> None:
    f = await trio_aio.open_file(data_path, "r+b")
    await f.aclose()
    if name == "aclose":  # closing again does nothing, and is a checkpoint
        with trio.testing.assert_checkpoints():
            await f.aclose()
        return
    await assert_checkpoints_raising(anyio.ClosedResourceError, lambda: FILE_CALLS[name](f))


@CONTRACT
@pytest.mark.parametrize("name", sorted(FILE_BAD_ARGUMENTS))
async def test_each_method_is_a_checkpoint_when_its_arguments_are_refused(
    data_path: Path, name: str
) -> None:
    exc_type, call = FILE_BAD_ARGUMENTS[name]
    async with await trio_aio.open_file(data_path, "r+b") as f:
        await assert_checkpoints_raising(exc_type, lambda: call(f))


@CONTRACT
@pytest.mark.parametrize("name", READS + WRITES)
async def test_each_method_is_a_checkpoint_when_the_mode_refuses_it(
    data_path: Path, tmp_path: Path, name: str
) -> None:
    path, mode = (tmp_path / "w", "wb") if name in READS else (data_path, "rb")
    async with await trio_aio.open_file(path, mode) as f:
        await assert_checkpoints_raising(io.UnsupportedOperation, lambda: FILE_CALLS[name](f))


@CONTRACT
@pytest.mark.parametrize("name", ["read_at", "readinto_at", "write_at", "read_many", "seek"])
async def test_positional_calls_on_a_pipe_are_checkpoints(name: str) -> None:
    r, w = os.pipe()
    try:
        async with await trio_aio.open_file(r, "r+b", closefd=False) as f:
            await assert_checkpoints_raising(OSError, lambda: FILE_CALLS[name](f))  # ESPIPE
    finally:
        os.close(r)
        os.close(w)


# -- open_file -------------------------------------------------------------------------


@CONTRACT
async def test_open_file_is_a_checkpoint(data_path: Path, tmp_path: Path) -> None:
    with trio.testing.assert_checkpoints():
        f = await trio_aio.open_file(data_path)
    await f.aclose()
    await assert_checkpoints_raising(FileNotFoundError, lambda: trio_aio.open_file(tmp_path / "x"))
    await assert_checkpoints_raising(IsADirectoryError, lambda: trio_aio.open_file(tmp_path))
    await assert_checkpoints_raising(ValueError, lambda: trio_aio.open_file(data_path, "r"))
    await assert_checkpoints_raising(TypeError, lambda: trio_aio.open_file(None))  # type: ignore[arg-type]


# -- streams ---------------------------------------------------------------------------


@CONTRACT
@pytest.mark.parametrize(
    ("cls", "name"),
    [(FileReadStream, name) for name in sorted(READ_STREAM_CALLS)]
    + [(FileWriteStream, name) for name in sorted(WRITE_STREAM_CALLS)],
)
async def test_each_stream_method_is_a_checkpoint(
    data_path: Path, tmp_path: Path, cls: type[Any], name: str
) -> None:
    calls = READ_STREAM_CALLS if cls is FileReadStream else WRITE_STREAM_CALLS
    path = data_path if cls is FileReadStream else tmp_path / "out"
    async with await cls.from_path(path) as stream:
        with trio.testing.assert_checkpoints():
            await calls[name](stream)
        if name == "aclose":
            return
        await stream.aclose()
        if name != "from_path":  # a closed stream refuses, at a checkpoint
            await assert_checkpoints_raising(
                anyio.ClosedResourceError, lambda: calls[name](stream)
            )


@CONTRACT
@pytest.mark.parametrize(("cls", "name"), sorted(STREAM_BAD_ARGUMENTS, key=str))
async def test_each_stream_method_is_a_checkpoint_when_it_refuses(
    data_path: Path, tmp_path: Path, cls: type[Any], name: str
) -> None:
    exc_type, call = STREAM_BAD_ARGUMENTS[cls, name]
    path = data_path if cls is FileReadStream else tmp_path / "out"
    async with await cls.from_path(path) as stream:
        await assert_checkpoints_raising(exc_type, lambda: call(stream))


@CONTRACT
async def test_the_end_of_a_stream_is_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    async with await FileReadStream.from_path(path) as stream:
        await assert_checkpoints_raising(anyio.EndOfStream, stream.receive)

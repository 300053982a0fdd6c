"""Bad input fails before anything is submitted; kernel errors carry errno and filename."""

from __future__ import annotations

import errno
import gc
import io
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import ALLOCATE_REFUSALS

import trio_aio

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]


async def assert_rejected_before_submission(
    exc_type: type[BaseException], fn: Callable[[], Awaitable[Any]], match: str | None = None
) -> None:
    before = trio_aio.statistics().submitted
    with pytest.raises(exc_type, match=match):
        await fn()
    assert trio_aio.statistics().submitted == before


async def test_open_errors_are_builtin_open_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(FileNotFoundError) as info:
        await trio_aio.open_file(missing)
    assert info.value.errno == errno.ENOENT
    assert info.value.strerror == os.strerror(errno.ENOENT)
    assert info.value.filename == str(missing)
    with pytest.raises(FileNotFoundError):
        open(missing, "rb")  # noqa: SIM115 - the reference

    with pytest.raises(IsADirectoryError) as info2:
        await trio_aio.open_file(tmp_path)
    assert info2.value.errno == errno.EISDIR
    assert info2.value.filename == str(tmp_path)

    with pytest.raises(IsADirectoryError) as info3:
        await trio_aio.open_file(tmp_path, "wb")
    assert info3.value.filename == str(tmp_path)

    existing = tmp_path / "exists"
    existing.write_bytes(b"")
    with pytest.raises(FileExistsError) as info4:
        await trio_aio.open_file(existing, "xb")
    assert info4.value.filename == str(existing)

    with pytest.raises(NotADirectoryError):
        await trio_aio.open_file(existing / "child")


async def test_a_directory_fd_is_not_left_open(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        await trio_aio.open_file(tmp_path)  # the ring itself is an fd: create it first
    # Earlier tests' event loops (and their rings) are closed when collected.
    gc.collect()
    before = sorted(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with pytest.raises(IsADirectoryError):
            await trio_aio.open_file(tmp_path)
    gc.collect()
    assert sorted(os.listdir("/proc/self/fd")) == before


async def test_open_file_checks_its_arguments_before_submitting(data_path: Path) -> None:
    # Which arguments are refused, and how: tests/test_checks.py, once.
    reject = assert_rejected_before_submission
    await reject(ValueError, lambda: trio_aio.open_file(data_path, "r"), "binary modes only")
    await reject(ValueError, lambda: trio_aio.open_file(data_path, "rz"), "invalid mode")
    await reject(TypeError, lambda: trio_aio.open_file(data_path, buffering="big"), "buffering")  # type: ignore[arg-type]
    await reject(ValueError, lambda: trio_aio.open_file(data_path, closefd=False), "closefd")
    await reject(TypeError, lambda: trio_aio.open_file(None), "NoneType")  # type: ignore[arg-type]
    await reject(ValueError, lambda: trio_aio.open_file(-1), "negative file descriptor")
    await reject(ValueError, lambda: trio_aio.open_file("no\0pe"), "embedded null byte")


async def test_bad_fd_is_ebadf() -> None:
    fd = 1_000_000  # far above any fd this process has open
    with pytest.raises(OSError) as info:
        await trio_aio.open_file(fd)
    assert info.value.errno == errno.EBADF


async def test_bad_operation_arguments(data_path: Path) -> None:
    async with await trio_aio.open_file(data_path, "r+b") as f:
        cases: list[tuple[type[Exception], Callable[[], Awaitable[Any]]]] = [
            (ValueError, lambda: f.read_at(-1, 0)),
            (ValueError, lambda: f.read_at(1, -1)),
            (TypeError, lambda: f.read_at("1", 0)),  # type: ignore[arg-type]
            (TypeError, lambda: f.read_at(1, 0.5)),  # type: ignore[arg-type]
            (TypeError, lambda: f.read_at(1, None)),  # type: ignore[arg-type]
            (TypeError, lambda: f.readinto_at(b"read-only", 0)),
            (TypeError, lambda: f.readinto_at("text", 0)),  # type: ignore[arg-type]
            (ValueError, lambda: f.readinto_at(bytearray(4), -3)),
            (TypeError, lambda: f.write_at("text", 0)),  # type: ignore[arg-type]
            (TypeError, lambda: f.write_at(12, 0)),  # type: ignore[arg-type]
            (ValueError, lambda: f.write_at(b"x", -5)),
            (ValueError, lambda: f.write_at(memoryview(b"abcdef")[::2], 0)),
            (TypeError, lambda: f.write("text")),  # type: ignore[arg-type]
            (TypeError, lambda: f.readinto(b"ro")),
            (TypeError, lambda: f.read("all")),  # type: ignore[arg-type]
            (ValueError, lambda: f.truncate(-1)),
            (TypeError, lambda: f.seek("0")),  # type: ignore[arg-type]
            (ValueError, lambda: f.allocate(0, 0)),
            (ValueError, lambda: f.allocate(-1, 10)),
            (ValueError, lambda: f.read_at(1, 1 << 63)),
            (ValueError, lambda: f.write_at(b"x", 1 << 64)),
            (ValueError, lambda: f.readinto_at(bytearray(1), 1 << 70)),
            (ValueError, lambda: f.allocate(0, 1 << 63)),
            (ValueError, lambda: f.seek(1 << 63)),
            (ValueError, lambda: f.truncate(1 << 63)),
        ]
        for exc, fn in cases:
            await assert_rejected_before_submission(exc, fn)


async def test_wrong_direction(data_path: Path, tmp_path: Path) -> None:
    async with await trio_aio.open_file(data_path, "rb") as f:
        await assert_rejected_before_submission(io.UnsupportedOperation, lambda: f.write(b"x"))
        await assert_rejected_before_submission(
            io.UnsupportedOperation, lambda: f.write_at(b"x", 0)
        )
        await assert_rejected_before_submission(io.UnsupportedOperation, lambda: f.truncate(0))
    async with await trio_aio.open_file(tmp_path / "w", "wb") as g:
        await assert_rejected_before_submission(io.UnsupportedOperation, lambda: g.read(1))
        await assert_rejected_before_submission(io.UnsupportedOperation, lambda: g.read_at(1, 0))


async def test_kernel_errors_carry_filename(tmp_path: Path, pipe: tuple[int, int]) -> None:
    r, _ = pipe
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        with pytest.raises(OSError) as info:
            await f.read_at(1, 0)  # pread on a pipe
        assert info.value.errno == errno.ESPIPE
    path = tmp_path / "named"
    async with await trio_aio.open_file(path, "wb") as g:
        with pytest.raises(OSError) as info2:
            await g.allocate(0, 1 << 62)
        assert info2.value.errno in (errno.EFBIG, errno.ENOSPC, *ALLOCATE_REFUSALS)
        assert info2.value.filename == str(path)


async def test_every_operation_on_a_closed_file_raises_closed_resource_error(
    data_path: Path,
) -> None:
    f = await trio_aio.open_file(data_path, "r+b")
    await f.aclose()
    calls: list[Callable[[], Awaitable[Any]]] = [
        lambda: f.read(),
        lambda: f.read_at(1, 0),
        lambda: f.readinto(bytearray(1)),
        lambda: f.readinto_at(bytearray(1), 0),
        lambda: f.write(b"x"),
        lambda: f.write_at(b"x", 0),
        lambda: f.seek(0),
        lambda: f.tell(),
        lambda: f.truncate(0),
        lambda: f.flush(),
        lambda: f.sync(),
        lambda: f.datasync(),
        lambda: f.allocate(0, 1),
        lambda: f.stat(),
    ]
    for call in calls:
        await assert_rejected_before_submission(anyio.ClosedResourceError, call)
    with pytest.raises(anyio.ClosedResourceError):
        f.fileno()


@pytest.mark.parametrize(
    ("relative", "mode"),
    [
        ("missing", "rb"),
        ("missing/child", "wb"),
        (".", "rb"),
        (".", "wb"),
        (".", "r+b"),
        ("file", "xb"),
        ("file/child", "rb"),
        ("missing", "r+b"),
    ],
)
async def test_open_errors_match_builtin_open(tmp_path: Path, relative: str, mode: str) -> None:
    (tmp_path / "file").write_bytes(b"")
    path = str(tmp_path / relative)
    with pytest.raises(OSError) as builtin:
        open(path, mode)  # noqa: SIM115 - the reference
    with pytest.raises(OSError) as ours:
        await trio_aio.open_file(path, mode)
    assert type(ours.value) is type(builtin.value)
    assert ours.value.errno == builtin.value.errno
    assert ours.value.strerror == builtin.value.strerror
    assert ours.value.filename == builtin.value.filename


async def test_bad_vectored_arguments(tmp_path: Path) -> None:
    reject = assert_rejected_before_submission
    async with await trio_aio.open_file(tmp_path / "v", "w+b") as f:
        await reject(TypeError, lambda: f.readinto_at([bytearray(1), b"ro"], 0), "writable")
        await reject(TypeError, lambda: f.write_at([b"ok", "text"], 0), "not 'str'")  # type: ignore[list-item]
        await reject(TypeError, lambda: f.write_at([b"ok", 3], 0), "'int'")  # type: ignore[list-item]
        await reject(ValueError, lambda: f.write_at([memoryview(b"abcd")[::2]], 0), "contiguous")
        await reject(ValueError, lambda: f.readinto_at([bytearray(1)], -1), "non-negative")

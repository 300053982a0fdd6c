"""anyio byte streams over trio_aio files: a drop-in for ``anyio.streams.file``.

:class:`FileReadStream` and :class:`FileWriteStream` have the names,
constructors, methods and typed attributes of anyio's classes of the same
names, so code switches by changing one import::

    from trio_aio.streams import FileReadStream   # was: from anyio.streams.file import ...

    async with await FileReadStream.from_path("big.log") as stream:
        async for chunk in stream:
            ...

They implement :class:`anyio.abc.ByteReceiveStream` and
:class:`anyio.abc.ByteSendStream`, so anything that takes an anyio byte
stream (``BufferedByteReceiveStream``, ``TextReceiveStream``,
``StapledByteStream``...) takes them.  They work under trio and under asyncio
(through anyio or not).

The differences from anyio's, all in the kernel's favour: reads and writes go
to io_uring (or the thread backend's fast path) instead of a worker thread
each; a stream on a pipe, FIFO or tty waits for readiness and holds no thread;
a cancelled ``receive`` or ``send`` is cancelled in the kernel, and data the
kernel already read is returned, not dropped.  :meth:`FileReadStream.from_path`
also takes a ``start`` offset.  The constructors take a
:class:`trio_aio.AsyncFile` rather than a synchronous file object.

Errors are mapped as anyio's are: a closed stream raises
:class:`anyio.ClosedResourceError`, an ``OSError`` from the kernel raises
:class:`anyio.BrokenResourceError` (with the ``OSError`` as its
``__cause__``), and the end of the file raises :class:`anyio.EndOfStream`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from io import SEEK_SET
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.streams.file import FileStreamAttribute

from ._checks import check_max_bytes, check_start
from ._file import AsyncFile, _refused, open_file

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["FileReadStream", "FileStreamAttribute", "FileWriteStream"]


def _broken_or_closed(exc: BaseException) -> NoReturn:
    """Raise what anyio's file streams raise for ``exc``."""
    if isinstance(exc, anyio.ClosedResourceError):
        raise anyio.ClosedResourceError from None
    raise anyio.BrokenResourceError from exc


class _FileStream:
    """What both streams share: the file, closing, and the typed attributes."""

    def __init__(self, file: AsyncFile) -> None:
        if not isinstance(file, AsyncFile):
            raise TypeError(
                f"{type(self).__name__} needs a trio_aio.AsyncFile (from trio_aio.open_file), "
                f"not {type(file).__name__}; or use {type(self).__name__}.from_path()"
            )
        self._file = file

    async def aclose(self) -> None:
        """Close the file (cancelling what other tasks have in flight on it)."""
        await self._file.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """``FileStreamAttribute.file`` (an :class:`~trio_aio.AsyncFile`), ``path``, ``fileno``."""
        file = self._file
        attributes: dict[Any, Callable[[], Any]] = {FileStreamAttribute.file: lambda: file}
        name = file.name
        if isinstance(name, (str, bytes)):
            attributes[FileStreamAttribute.path] = lambda: Path(os.fsdecode(name))
        attributes[FileStreamAttribute.fileno] = file.fileno
        return attributes


class FileReadStream(_FileStream, ByteReceiveStream):
    """A byte stream that reads a file from its position onwards.

    Args:
      file: a :class:`trio_aio.AsyncFile` opened for reading.

    """

    def __init__(self, file: AsyncFile) -> None:
        super().__init__(file)
        if not file.readable():
            raise ValueError(f"FileReadStream needs a file opened for reading, not {file.mode!r}")

    @classmethod
    async def from_path(cls, path: str | os.PathLike[str], start: int = 0) -> FileReadStream:
        """Open ``path`` for reading, positioned at ``start``.

        Raises:
          OSError: as :func:`trio_aio.open_file` does (with the file name).
          ValueError: ``start`` is negative.

        """
        try:
            start = check_start(start)
        except Exception:
            await _refused()
            raise
        file = await open_file(path, "rb")
        if start:
            try:
                await file.seek(start)
            except BaseException:
                await file.aclose()
                raise
        return cls(file)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """Read at most ``max_bytes`` (one kernel read, or one readiness wait for a pipe).

        Raises:
          anyio.EndOfStream: at the end of the file.
          anyio.ClosedResourceError: the stream was closed.
          anyio.BrokenResourceError: the kernel reported an error.
          ValueError: ``max_bytes`` is less than 1.

        """
        try:
            max_bytes = check_max_bytes(max_bytes)
        except Exception:
            await _refused()
            raise
        try:
            data = await self._file.read(max_bytes)
        except (OSError, anyio.ClosedResourceError) as exc:
            _broken_or_closed(exc)
        if not data:
            raise anyio.EndOfStream
        return data

    async def seek(self, position: int, whence: int = SEEK_SET) -> int:
        """Move the read position; returns the new absolute position (``OSError`` on a pipe)."""
        return await self._file.seek(position, whence)

    async def tell(self) -> int:
        """The read position (``OSError`` on a pipe)."""
        return await self._file.tell()


class FileWriteStream(_FileStream, ByteSendStream):
    """A byte stream that writes a file from its position onwards.

    Args:
      file: a :class:`trio_aio.AsyncFile` opened for writing.

    """

    def __init__(self, file: AsyncFile) -> None:
        super().__init__(file)
        if not file.writable():
            raise ValueError(f"FileWriteStream needs a file opened for writing, not {file.mode!r}")

    @classmethod
    async def from_path(
        cls, path: str | os.PathLike[str], append: bool = False
    ) -> FileWriteStream:
        """Open ``path`` for writing: truncated, or for appending if ``append``."""
        return cls(await open_file(path, "ab" if append else "wb"))

    async def send(self, item: Buffer) -> None:
        """Write all of ``item``.

        Raises:
          anyio.ClosedResourceError: the stream was closed.
          anyio.BrokenResourceError: the kernel reported an error (a full
            disk, a pipe whose reader is gone).
          TypeError: ``item`` is not a bytes-like object.

        """
        try:
            await self._file.write(item)
        except (OSError, anyio.ClosedResourceError) as exc:
            _broken_or_closed(exc)

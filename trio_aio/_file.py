"""``open_file`` and ``AsyncFile``: the file API, above whichever backend runs.

This layer owns policy: argument checking (before anything is submitted;
the checks themselves are the pure functions of ``_checks.py``), loops over
short reads and writes, the cursor, and errors that carry the file's name.
A call that refuses its arguments or the file's state is still a checkpoint
(``_refused``).  It reaches the kernel only through a backend file object.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import itertools
import mmap
import os
import stat as stat_module
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn

from . import _loops, _workers
from ._backends import current_backend_impl
from ._backends._base import TaskQueue, fd_is_direct
from ._checks import (
    LIMIT,
    batch,
    check_aligned_buffer,
    check_allocate,
    check_direct,
    check_nonnegative,
    check_open_arguments,
    check_opener_result,
    check_read_size,
    check_seek,
    check_truncate_size,
    readable_of,
    readable_view,
    round_up,
    size_of,
    unsupported,
    views_of,
    writable_of,
    writable_view,
)
from ._statistics import FileStatistics

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

    from ._backends._base import BackendFile

__all__ = ["AsyncFile", "BatchError", "aligned_buffer", "open_file"]

# The kernel caps one read or write at 2 GiB - 4 KiB (MAX_RW_COUNT); we loop in
# chunks well below it.
_MAX_CHUNK = 1 << 30
_READALL_CHUNK = 1 << 16
# Buffers per preadv/pwritev (the kernel's UIO_MAXIOV).
_IOV_MAX = 1024
# Reads up to this size allocate what they are asked for; larger ones are
# sized by the file first (see AsyncFile._first_chunk).
_LARGE_READ = 1 << 20


async def _refused() -> None:
    """The checkpoint an async call still is when it refuses before doing anything.

    trio's rule: every async function of an async API is a checkpoint, however
    it ends. The checks run first (so a call that is refused does nothing);
    a refused call then checkpoints and raises the refusal.
    """
    await _loops.current().checkpoint()


class _Progress:
    """How far a transfer loop got, readable after it raised."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = 0


def aligned_buffer(size: int, alignment: int = 0) -> mmap.mmap:
    """A zero-filled, writable buffer of ``size`` bytes for direct I/O.

    It starts on a page boundary, which meets every device's memory
    alignment (see :attr:`AsyncFile.direct_alignment`); ``alignment``, if
    given, is checked against that. ``size`` must still be a multiple of the
    file's offset alignment for direct reads and writes. The buffer is an
    anonymous ``mmap``: ``close()`` it, or let it be collected, when done.

    Raises:
      ValueError: ``size`` is not positive, or ``alignment`` is larger than a page.

    """
    size, _ = check_aligned_buffer(size, alignment)
    return mmap.mmap(-1, size)


class BatchError(OSError):
    """An element of a batch (``read_many``, ``readinto_many``, ``write_many``) failed.

    Its ``errno`` and ``strerror`` are the first failed element's.

    Attributes:
      index: the position of the first failed element.
      results: every element's outcome, in order: its result (the data, or
        the byte count, possibly short for an element that was not finished)
        or its ``OSError`` (``ECANCELED`` for one a cancellation stopped).

    """

    def __init__(self, index: int, results: list[Any], error: OSError, name: object) -> None:
        super().__init__(
            error.errno,
            f"element {index} of the batch failed: {error.strerror}",
            name if isinstance(name, (str, bytes)) else None,
        )
        self.index = index
        self.results = results


def _with_filename(exc: OSError, name: object) -> OSError:
    if exc.filename is not None or not isinstance(name, (str, bytes)):
        return exc
    return OSError(exc.errno, exc.strerror, name)


class AsyncFile:
    """An open binary file whose I/O goes to the kernel asynchronously.

    Returned by :func:`open_file`; use it as an async context manager. Every
    ``async`` method is a checkpoint. It works under trio and under asyncio
    (directly or through anyio).

    The *positional* methods (:meth:`read_at`, :meth:`readinto_at`,
    :meth:`write_at`) share no state and may be called from any number of
    tasks at once. The *cursor* methods (:meth:`read`, :meth:`write`,
    :meth:`seek`, ...) use the file's position, kept in the kernel (so code
    using :meth:`fileno` sees it) but moved by trio_aio itself, past exactly
    what each call transferred; cursor calls from several tasks run one at a
    time, in the order they came.

    Once the file is closed every operation raises ``ClosedResourceError``:
    on trio an exception that is both :class:`trio.ClosedResourceError` and
    :class:`anyio.ClosedResourceError`, on asyncio anyio's.

    A file may be used by one ``trio.run`` (or asyncio event loop) at a time:
    each has its own ring or worker threads; use it from another only after
    the first is done with it.

    Pipes, FIFOs, ttys, sockets and character devices do not go to the ring
    or to a thread: their fd is made non-blocking (until the file is closed)
    and a read or write waits for the event loop to report it ready, so a
    read that waits forever holds nothing and is cancelled at once.

    The file keeps the backend it was opened with (see
    :func:`trio_aio.select_backend`). With the thread backend, an operation
    already running in a worker thread cannot be stopped: a cancelled task
    waits for it, gets its result, and sees the cancellation at its next
    checkpoint; :meth:`aclose` likewise waits for such operations.
    """

    def __init__(
        self, handle: BackendFile, name: object, mode: str, closefd: bool, backend: str = ""
    ) -> None:
        self._handle = handle
        self._backend = backend  # the name of the backend that opened it
        self._seekable = True
        self._name = name
        self._mode = mode
        self._closefd = closefd
        self._closed = False
        self._readable = "r" in mode or "+" in mode
        self._writable = mode[0] in "wax" or "+" in mode
        self._append = "a" in mode
        self._direct: tuple[int, int] | None = None  # (memory, offset) alignment
        self._regular = False  # a regular file (its size bounds large reads)
        # On a file system that may block (FUSE, NFS...): lseek(SEEK_END) and
        # fstat ask the server, so they do not run on the event loop's thread.
        self._may_block = handle.may_block
        self._cursor = TaskQueue()  # cursor calls, one at a time
        self._close_done: _loops.Event | None = None  # set once a close has finished
        self._update_fast_paths()

    def _update_fast_paths(self) -> None:
        # One flag each for the hot positional calls; the slow checks below
        # run only when one is off, to raise the right error (or, for direct
        # I/O, to check alignment).
        plain = not self._closed and self._seekable and self._direct is None
        self._pread_ok = plain and self._readable
        self._pwrite_ok = plain and self._writable

    # -- attributes -----------------------------------------------------------

    @property
    def name(self) -> object:
        """The path the file was opened with (``str`` or ``bytes``), or its fd."""
        return self._name

    @property
    def mode(self) -> str:
        """The mode, normalised as ``io.FileIO.mode`` is (``'rb'``, ``'rb+'``, ``'ab'``...)."""
        return self._mode

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` has been called."""
        return self._closed

    @property
    def direct_alignment(self) -> tuple[int, int] | None:
        """For a file opened for direct I/O, (memory, offset) alignment in bytes; else None.

        Buffers must start at a multiple of the first; offsets and sizes must
        be multiples of the second. Taken from ``statx``'s ``STATX_DIOALIGN``
        where the kernel reports it (Linux 6.1+, io_uring backend), else the
        page size, which every device accepts.
        """
        return self._direct

    def statistics(self) -> FileStatistics:
        """The counters of this one file: the operations in progress on it now.

        Operations in the kernel, in a worker thread or waiting for one, and
        reads waiting for a pipe's readiness; the run's counters are
        :func:`trio_aio.statistics`.
        """
        return FileStatistics(backend=self._backend, in_flight=self._handle.in_flight)

    def fileno(self) -> int:
        """The file descriptor."""
        self._check_open()
        return self._handle.fd

    def readable(self) -> bool:
        """Whether the file was opened for reading."""
        self._check_open()
        return self._readable

    def writable(self) -> bool:
        """Whether the file was opened for writing."""
        self._check_open()
        return self._writable

    def seekable(self) -> bool:
        """Whether the file supports positional I/O and seeking (pipes and ttys do not)."""
        self._check_open()
        return self._seekable

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._handle.fd}"
        return f"<trio_aio.AsyncFile name={self._name!r} mode={self._mode!r} {state}>"

    # -- helpers ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise _loops.closed_resource_error()("file is closed")

    async def _check_open_at_a_checkpoint(self) -> None:
        """Raise ``ClosedResourceError`` if closed, at a checkpoint (for the slower calls)."""
        if self._closed:
            await _refused()
            self._check_open()

    def _raise(self, exc: OSError, written: int | None = None) -> NoReturn:
        """Raise ``exc`` with the file's name; ``written``: what a failed write did first."""
        exc = _with_filename(exc, self._name)
        if written is not None:
            exc.bytes_written = written  # type: ignore[attr-defined]
        raise exc from None

    def _check_readable(self) -> None:
        self._check_open()
        if not self._readable:
            raise self._unsupported("not readable")

    def _check_writable(self) -> None:
        self._check_open()
        if not self._writable:
            raise self._unsupported("not writable")

    def _check_seekable(self) -> None:
        # io_uring ignores the offset on a pipe and just reads or writes it; os.pread
        # refuses with ESPIPE, and so do we, before submitting anything.
        if not self._seekable:
            self._raise(OSError(errno.ESPIPE, os.strerror(errno.ESPIPE)))

    def _unsupported(self, what: str) -> OSError:
        return unsupported(self._name, self._mode, what)

    # -- positional I/O -----------------------------------------------------------

    async def read_at(self, size: int, offset: int) -> bytes:
        """Read ``size`` bytes starting at ``offset``.

        Short only at end of file. Does not use or move the file position.
        """
        if (
            type(size) is int
            and type(offset) is int
            and 0 <= size <= _LARGE_READ
            and 0 <= offset < LIMIT
            and self._pread_ok  # (open, readable, seekable, not O_DIRECT)
        ):
            # The common case written out flat (a cached 4 KiB read costs a
            # few microseconds: each coroutine level is a tenth of that).
            try:
                data = await self._handle.pread(size, offset)
            except OSError as exc:
                self._raise(exc)
            n = len(data)
            if n == size or not n:
                return data
            return data + await self._read_upto(size - n, offset + n)
        try:
            size = check_nonnegative(size, "size")
            offset = check_nonnegative(offset, "offset")
            if not self._pread_ok:
                self._check_readable()
                self._check_seekable()
        except Exception:
            await _refused()
            raise
        return await self._read_at(size, offset)

    async def readinto_at(self, buffer: Buffer | Sequence[Buffer], offset: int) -> int:
        """Fill ``buffer`` from the file starting at ``offset``; returns the bytes read.

        ``buffer`` may also be a list or tuple of buffers, filled in order as
        ``os.preadv`` does, with one kernel operation (``IORING_OP_READV``)
        for up to 1024 of them. Fewer bytes than the buffers hold only at end
        of file. Every buffer stays exported (it cannot be resized) until the
        kernel has finished with it.
        """
        try:
            views = views_of(buffer, writable=True)
            offset = check_nonnegative(offset, "offset")
            if not self._pread_ok:
                self._check_readable()
                self._check_seekable()
                self._check_direct(views, offset)
        except Exception:
            await _refused()
            raise
        if type(views) is memoryview:
            return await self._readinto(views, offset)
        return await self._transfer_vectored(views, offset, writing=False)

    async def write_at(self, data: Buffer | Sequence[Buffer], offset: int) -> int:
        """Write all of ``data`` starting at ``offset``; returns the bytes written.

        ``data`` may also be a list or tuple of buffers, written in order as
        ``os.pwritev`` does, with one kernel operation (``IORING_OP_WRITEV``)
        for up to 1024 of them. Does not use or move the file position (except
        in append mode, where Linux appends, as ``os.pwrite`` does).
        """
        try:
            views = views_of(data, writable=False)
            offset = check_nonnegative(offset, "offset")
            if not self._pwrite_ok:
                self._check_writable()
                self._check_seekable()
                self._check_direct(views, offset)
        except Exception:
            await _refused()
            raise
        if type(views) is memoryview:
            return await self._write(views, offset)
        return await self._transfer_vectored(views, offset, writing=True)

    # -- batches ----------------------------------------------------------------------

    async def read_many(self, ranges: Iterable[tuple[int, int]]) -> list[bytes]:
        """Read each ``(offset, size)`` range; returns their data, in order.

        The whole batch is submitted at once (on io_uring, in as few
        ``io_uring_enter`` calls as the ring allows; batches larger than the
        ring work) and the task is woken once, when every element is done.
        Each element is short only at end of file.

        Raises:
          BatchError: if an element failed. Its ``index`` is the first failed
            element and its ``results`` holds every element's data or
            ``OSError``; nothing that was read is dropped.
          Cancelled: (``trio.Cancelled``, ``asyncio.CancelledError``) if
            cancelled before any element ran. If cancelled
            after some ran, you get their data, or a :class:`BatchError`
            whose ``results`` mark the others ``ECANCELED``, and the
            cancellation arrives at your next checkpoint.

        """
        try:
            requests = batch(ranges, "read_many", "(offset, size)", size_of)
            if not self._pread_ok:
                self._check_readable()
                self._check_seekable()
        except Exception:
            await _refused()
            raise
        wanted = [size for size, _ in requests]
        if any(size > _LARGE_READ for size in wanted):
            # Never allocate more than the file can give; if it grew, the
            # rest is read below.
            end = await self._file_size()
            if end is not None:
                align = 1 if self._direct is None else self._direct[1]
                requests = [
                    (size, offset)
                    if size <= _LARGE_READ
                    else (min(size, round_up(max(end - offset, 0), align)), offset)
                    for size, offset in requests
                ]
        if self._direct is not None:
            views = [memoryview(aligned_buffer(n) if n else bytearray()) for n, _ in requests]
            counts = await self.readinto_many(
                [(offset, view) for view, (_, offset) in zip(views, requests, strict=True)]
            )
            return [bytes(view[:n]) for view, n in zip(views, counts, strict=True)]
        try:
            results = await self._handle.pread_many(requests)
        except OSError as exc:
            self._raise(exc)
        self._check_batch(results)
        for i, (size, (_, offset)) in enumerate(zip(wanted, requests, strict=True)):
            data = results[i]
            assert isinstance(data, bytes)
            if 0 < len(data) < size:  # short, maybe not at end of file
                results[i] = data + await self._read_upto(size - len(data), offset + len(data))
        return results  # type: ignore[return-value]

    async def readinto_many(self, requests: Iterable[tuple[int, Buffer]]) -> list[int]:
        """Fill each buffer of ``(offset, buffer)`` pairs from its offset; returns the counts.

        Submitted together and woken once, as :meth:`read_many`; each count
        is short only at end of file. Raises as :meth:`read_many` does.
        """
        try:
            checked = batch(requests, "readinto_many", "(offset, buffer)", writable_of)
        except Exception:
            await _refused()
            raise
        return await self._transfer_many(checked, writing=False)

    async def write_many(self, requests: Iterable[tuple[int, Buffer]]) -> list[int]:
        """Write each ``(offset, data)`` pair; returns the bytes written for each (all of it).

        Submitted together and woken once, as :meth:`read_many`. Raises as
        :meth:`read_many` does; a :class:`BatchError`'s ``results`` tell which
        writes happened.
        """
        try:
            checked = batch(requests, "write_many", "(offset, data)", readable_of)
        except Exception:
            await _refused()
            raise
        return await self._transfer_many(checked, writing=True)

    async def _transfer_many(
        self, requests: list[tuple[memoryview, int]], writing: bool
    ) -> list[int]:
        try:
            if writing and not self._pwrite_ok:
                self._check_writable()
                self._check_seekable()
            elif not writing and not self._pread_ok:
                self._check_readable()
                self._check_seekable()
            for view, offset in requests:
                self._check_direct(view, offset)
        except Exception:
            await _refused()
            raise
        handle = self._handle
        try:
            if writing:
                results = await handle.pwrite_many(requests)
            else:
                results = await handle.preadinto_many(requests)
        except OSError as exc:
            self._raise(exc)
        self._check_batch(results)
        for i, (view, offset) in enumerate(requests):
            n = results[i]
            assert isinstance(n, int)
            if n < len(view) and (writing or n > 0):  # short: finish it
                rest = view[n:]
                n += await (
                    self._write(rest, offset + n) if writing else self._readinto(rest, offset + n)
                )
                results[i] = n
        return results  # type: ignore[return-value]

    def _check_batch(self, results: Sequence[object]) -> None:
        """Raise :class:`BatchError` if an element failed.

        If the file was closed during the batch and elements were stopped by
        it (``ECANCELED``), ``ClosedResourceError`` is raised instead, with the
        ``BatchError`` (every element's result) as its ``__cause__``.
        """
        errors = [i for i, res in enumerate(results) if isinstance(res, OSError)]
        if errors:
            first = results[errors[0]]
            assert isinstance(first, OSError)
            error = BatchError(errors[0], list(results), first, self._name)
            if self._closed and any(
                getattr(results[i], "errno", None) == errno.ECANCELED for i in errors
            ):
                raise _loops.closed_resource_error()(
                    "file was closed during the operation"
                ) from error
            raise error

    # -- cursor I/O -----------------------------------------------------------------
    #
    # A fact that decides how the cursor works: the kernel cannot be trusted to
    # move the file position for us.  An io_uring read or write at offset -1
    # that comes back short (a full disk, RLIMIT_FSIZE, a FUSE daemon) leaves
    # the position where it was on Linux 6.18, and so does every transfer on an
    # O_DIRECT file or a FUSE file in direct-I/O mode; the rest of a write then
    # lands on top of what was just written.  POSIX AIO has no position at all.
    # So the file layer does every cursor transfer on a seekable file as a
    # positional one: it reads the position (``lseek(SEEK_CUR)``, which never
    # waits for a device on any file system), transfers at it, and stores the
    # position past what was transferred, on every backend.  The position
    # stays in the kernel, so code that uses ``fileno()`` sees it.
    #
    # Cursor calls from several tasks are serialised by a lock, as the
    # kernel's own f_pos_lock serialises read(2) and write(2) on a regular
    # file: two writes never land on the same bytes.

    async def read(self, size: int = -1) -> bytes:
        """Read ``size`` bytes from the file position (all to end of file if negative).

        From a regular file, short only at end of file. From a pipe, tty or
        other stream (``seekable()`` is False) it returns what one read gives,
        as ``os.read`` does (``b""`` only at end of file): waiting on for more
        could lose the bytes already read to a cancellation. The position
        moves past what was returned; if the read fails or is cancelled, it
        does not move.
        """
        try:
            size = check_read_size(size)
            self._check_readable()
        except Exception:
            await _refused()
            raise
        if not self._seekable:
            return await self._read_stream(size)
        if size == 0:
            await _loops.current().checkpoint()
            return b""
        async with self._cursor:
            self._check_open()
            position = self._position()
            wanted = LIMIT - 1 - position if size < 0 else min(size, LIMIT - 1 - position)
            data = await self._read_at(wanted, position)
            self._move_to(position + len(data))
            return data

    async def readinto(self, buffer: Buffer) -> int:
        """Fill ``buffer`` from the file position; returns the bytes read.

        Short only at end of file, except from a stream, where it returns what
        one read gives (see :meth:`read`).
        """
        try:
            view = writable_view(buffer)
            self._check_readable()
        except Exception:
            await _refused()
            raise
        if not self._seekable:
            return await self._readinto(view, -1)
        async with self._cursor:
            self._check_open()
            try:
                position = self._position()
                self._check_direct(view, position)
            except Exception:
                await _refused()
                raise
            n = await self._readinto(view, position)
            self._move_to(position + n)
            return n

    async def write(self, data: Buffer) -> int:
        """Write all of ``data`` at the file position (the end, in append mode).

        Returns ``len(data)``. If the kernel fails part-way (a full disk, a
        file-size limit), the ``OSError`` says how much was written in its
        ``bytes_written`` attribute, and the position is just past those
        bytes; a cancellation that stops the write between two kernel
        operations leaves the position past what was written, too.
        """
        try:
            view = readable_view(data)
            self._check_writable()
        except Exception:
            await _refused()
            raise
        if not self._seekable:
            return await self._write(view, -1)
        async with self._cursor:
            self._check_open()
            try:
                position = await self._end() if self._append else self._position()
                self._check_direct(view, position)
            except Exception:
                await _refused()
                raise
            progress = _Progress()
            try:
                return await self._transfer(self._handle.pwrite, view, position, True, progress)
            finally:
                self._move_to(position + progress.done)

    async def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Move the file position; returns the new position."""
        try:
            offset, whence = check_seek(offset, whence)
            self._check_open()
        except Exception:
            await _refused()
            raise
        async with self._cursor:
            self._check_open()
            if whence in (os.SEEK_SET, os.SEEK_CUR) or (
                whence == os.SEEK_END and not self._may_block
            ):
                await _loops.current().checkpoint()
                try:
                    return os.lseek(self._handle.fd, offset, whence)
                except OSError as exc:
                    self._raise(exc)
            # SEEK_DATA and SEEK_HOLE may read extent maps from the device, and
            # SEEK_END asks a FUSE daemon or an NFS server for the size.
            return await self._in_thread(os.lseek, self._handle.fd, offset, whence)

    async def tell(self) -> int:
        """The file position."""
        return await self.seek(0, os.SEEK_CUR)

    async def truncate(self, size: int | None = None) -> int:
        """Resize the file to ``size`` bytes (default: the current position); returns it."""
        try:
            size = check_truncate_size(size)
            self._check_writable()
        except Exception:
            await _refused()
            raise
        if size is None:
            size = await self.tell()
        try:
            await self._handle.ftruncate(size)
        except OSError as exc:
            self._raise(exc)
        return size

    async def flush(self) -> None:
        """Nothing to flush: trio_aio does not buffer. A checkpoint, for compatibility."""
        await _loops.current().checkpoint()
        self._check_open()

    # -- durability and metadata ------------------------------------------------------

    async def sync(self) -> None:
        """Flush data and metadata to the device (``fsync``)."""
        await self._fsync(datasync=False)

    async def datasync(self) -> None:
        """Flush data, and the metadata needed to read it, to the device (``fdatasync``)."""
        await self._fsync(datasync=True)

    async def _fsync(self, datasync: bool) -> None:
        await self._check_open_at_a_checkpoint()
        try:
            await self._handle.fsync(datasync)
        except OSError as exc:
            self._raise(exc)

    async def allocate(self, offset: int, length: int) -> None:
        """Reserve disk space for ``length`` bytes from ``offset`` (``fallocate``, mode 0).

        The file grows if the range extends past its end.
        """
        try:
            offset, length = check_allocate(offset, length)
            self._check_writable()
        except Exception:
            await _refused()
            raise
        try:
            await self._handle.fallocate(0, offset, length)
        except OSError as exc:
            self._raise(exc)

    async def stat(self) -> os.stat_result:
        """The file's status, as ``os.fstat`` returns it."""
        await self._check_open_at_a_checkpoint()
        try:
            return await self._handle.stat()
        except OSError as exc:
            self._raise(exc)

    # -- closing ------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the file.

        Operations other tasks have in flight on it are cancelled in the
        kernel; each of those tasks gets ``ClosedResourceError`` once
        the kernel has given the operation up (or its result, if the kernel
        completed it first). Only then is the fd closed. A second ``aclose``
        while the first is at work waits until the fd is closed; after that,
        closing again is a no-op. Like every trio ``aclose``, it closes even
        when cancelled.
        """
        loop = _loops.current()
        if self._closed:
            closing = self._close_done
            if closing is not None:  # another task is closing it: wait until it is closed
                await closing.wait_shielded()
            await loop.checkpoint()
            return
        await self._close()
        await loop.checkpoint_if_cancelled()

    async def _close(self) -> None:
        """Close, however long the kernel takes (a cancellation is delivered later)."""
        self._closed = True
        self._update_fast_paths()
        done = self._close_done = _loops.Event()
        try:
            await self._handle.close(close_fd=self._closefd)
        except OSError as exc:
            self._raise(exc)
        finally:
            done.set()
            self._close_done = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        # A file dropped without aclose(): warn and close the fd, as io.FileIO
        # does.  Only reached when no operation holds the handle.
        if not getattr(self, "_closed", True) and self._closefd:
            message = f"unclosed file {self!r}"
            self._closed = True
            with contextlib.suppress(OSError):
                os.close(self._handle.fd)
            warnings.warn(message, ResourceWarning, stacklevel=2, source=self)

    # -- internals ---------------------------------------------------------------------

    def _position(self) -> int:
        try:
            return os.lseek(self._handle.fd, 0, os.SEEK_CUR)
        except OSError as exc:
            self._raise(exc)

    async def _end(self) -> int:
        """The end of the file, where an append-mode write goes."""
        if self._may_block:  # SEEK_END asks the FUSE daemon or NFS server for the size
            return await self._in_thread(os.lseek, self._handle.fd, 0, os.SEEK_END)
        try:
            return os.lseek(self._handle.fd, 0, os.SEEK_END)
        except OSError as exc:
            self._raise(exc)

    def _move_to(self, position: int) -> None:
        """Store the file position after a cursor transfer.

        Not once the file is closed: its fd number may already belong to
        another file.  (Closing sets ``_closed`` before the fd is closed, and
        nothing yields between the end of a transfer and this call.)
        """
        if self._closed:
            return
        try:
            os.lseek(self._handle.fd, position, os.SEEK_SET)
        except OSError as exc:
            self._raise(exc)

    def _check_direct(self, views: memoryview | list[memoryview], offset: int) -> None:
        """For direct I/O: refuse misaligned offsets, sizes and buffers before submitting."""
        if self._direct is not None:
            check_direct(views, offset, self._direct, self._name)

    async def _file_size(self) -> int | None:
        """The size of a regular file (None for anything else), to size a large read.

        ``fstat`` on a local file system reads the in-memory inode; on a
        file system that may block (FUSE, NFS) it asks the server, so it goes
        through the backend there.
        """
        if not self._regular:
            return None
        if self._may_block:
            st = await self._handle.stat()
        else:
            st = os.fstat(self._handle.fd)
        return st.st_size

    async def _first_chunk(self, size: int, offset: int) -> int:
        """How much of a read of ``size`` bytes at ``offset`` to allocate at first.

        A read never allocates more than the file can give: a large read of
        a regular file is sized by the file (the rest, if the file grew
        meanwhile, is read as it comes); of anything else, it starts at
        ``_LARGE_READ`` and grows as data arrives.
        """
        if size <= _LARGE_READ:
            return size
        end = await self._file_size()
        if end is None:
            return _LARGE_READ
        return min(size, max(end - offset, 0))

    async def _read_at(self, size: int, offset: int) -> bytes:
        """Read ``size`` bytes at ``offset``, short only at end of file (arguments checked)."""
        if self._direct is not None:
            return await self._read_direct(size, offset)
        return await self._read_upto(size, offset)

    async def _read_direct(self, size: int, offset: int) -> bytes:
        """``read_at``/``read`` for direct I/O: through an aligned buffer of our own."""
        assert self._direct is not None
        # (a size the file cannot give is cut to the file, rounded up to the alignment)
        size = min(size, round_up(await self._first_chunk(size, offset), self._direct[1]))
        if size == 0:
            await _loops.current().checkpoint()
            return b""
        # Freed when the last reference goes (the backend may still hold an
        # export of it for a moment after the kernel is done).
        view = memoryview(aligned_buffer(size))
        self._check_direct(view, offset)
        n = await self._readinto(view, offset)
        return bytes(view[:n])

    async def _read_stream(self, size: int) -> bytes:
        """``read`` from a pipe, tty or socket: one read, or everything until end of file."""
        if size >= 0:
            return await self._read_upto(size, -1)
        try:
            chunks: list[bytes] = []
            while True:
                data = await self._handle.pread(_READALL_CHUNK, -1)
                if not data:
                    return b"".join(chunks)
                chunks.append(data)
        except OSError as exc:
            self._raise(exc)

    async def _read_upto(self, size: int, offset: int) -> bytes:
        """Read ``size`` bytes at ``offset`` (-1: a stream), short only at EOF.

        From a stream, one read: waiting for more could lose what it gave to a
        cancellation.  Allocates no more than the file can give (see
        :meth:`_first_chunk`).
        """
        handle = self._handle
        try:
            first = await self._first_chunk(size, offset) if size > _LARGE_READ else size
            data = await handle.pread(min(first, _MAX_CHUNK), offset)
            if len(data) == size or not data or not self._seekable:
                return data
            parts = [data]
            got = len(data)
            step = _READALL_CHUNK  # past what the file held: grows as data comes
            while got < size:
                if got < first:  # a short read before the end the file had
                    wanted = first - got
                else:
                    wanted = min(size - got, step)
                    step = min(2 * step, _MAX_CHUNK)
                data = await handle.pread(min(wanted, _MAX_CHUNK), offset + got)
                if not data:
                    break
                parts.append(data)
                got += len(data)
            return b"".join(parts)
        except OSError as exc:
            self._raise(exc)

    async def _readinto(self, view: memoryview, offset: int) -> int:
        return await self._transfer(self._handle.preadinto, view, offset, writing=False)

    async def _write(self, view: memoryview, offset: int) -> int:
        return await self._transfer(self._handle.pwrite, view, offset, writing=True)

    async def _transfer(
        self,
        call: Callable[[memoryview, int], Awaitable[int]],
        view: memoryview,
        offset: int,
        writing: bool,
        progress: _Progress | None = None,
    ) -> int:
        """Repeat ``call`` over ``view`` until all of it is done (or, reading, end of file).

        ``offset`` -1 means a stream. A read from a stream stops after one
        call that gave something (see :meth:`_read_upto`). ``progress``, if
        given, counts what is done as it is done, for a caller that must know
        after an exception. A write that fails part-way raises the ``OSError``
        with ``bytes_written`` set.
        """
        size = len(view)
        done = 0
        try:
            while True:
                n = await call(view[done : done + _MAX_CHUNK], offset)
                done += n
                if progress is not None:
                    progress.done = done
                if done >= size or self._stops_after(n, writing):
                    return done
                if offset >= 0:
                    offset += n
        except OSError as exc:
            self._raise(exc, done if writing else None)

    def _stops_after(self, n: int, writing: bool) -> bool:
        """Whether a transfer loop ends after a call that moved ``n`` bytes of more wanted.

        A read ends at end of file (0), or after one read from a stream; a
        write that wrote nothing is an error.
        """
        if n == 0:
            if writing:
                raise OSError(errno.EIO, "the kernel wrote 0 bytes")
            return True
        return not (writing or self._seekable)

    async def _transfer_vectored(self, views: list[memoryview], offset: int, writing: bool) -> int:
        """Like :meth:`_transfer`, over a list of buffers, up to ``_IOV_MAX`` per operation."""
        call = self._handle.pwritev if writing else self._handle.preadv
        pending = collections.deque(view for view in views if len(view))
        if not pending:
            await _loops.current().checkpoint()
            return 0
        done = 0
        try:
            while pending:
                n = await call(list(itertools.islice(pending, _IOV_MAX)), offset)
                done += n
                if self._stops_after(n, writing):
                    return done
                if offset >= 0:
                    offset += n
                while n:  # drop what was transferred
                    head = pending[0]
                    if n < len(head):
                        pending[0] = head[n:]
                        break
                    n -= len(head)
                    pending.popleft()
            return done
        except OSError as exc:
            self._raise(exc, done if writing else None)

    async def _in_thread(self, fn: Callable[..., int], *args: Any) -> int:
        try:
            return await _workers.run(fn, *args)
        except OSError as exc:
            self._raise(exc)


# Tests turn this off to hold operations on a pipe in the kernel or a thread.
_STREAMS_BY_READINESS = sys.platform != "win32"


def _by_readiness(st_mode: int) -> bool:
    """Whether a file of this type waits for readiness instead of the backend."""
    return _STREAMS_BY_READINESS and (
        stat_module.S_ISFIFO(st_mode)
        or stat_module.S_ISCHR(st_mode)
        or stat_module.S_ISSOCK(st_mode)
    )


async def open_file(
    file: str | bytes | os.PathLike[str] | os.PathLike[bytes] | int,
    mode: str = "rb",
    buffering: int = -1,
    encoding: str | None = None,
    errors: str | None = None,
    newline: str | None = None,
    closefd: bool = True,
    opener: Callable[[str | bytes, int], int] | None = None,
    *,
    direct: bool = False,
) -> AsyncFile:
    """Open a file, with the signature of :func:`trio.open_file` (and built-in ``open``).

    Binary modes only for now (``r w a x``, each with ``b`` and optionally
    ``+``); text modes raise :class:`ValueError`. ``buffering`` is accepted
    for compatibility and ignored: trio_aio does not buffer. The open itself
    goes through the current backend (``IORING_OP_OPENAT`` on io_uring); a
    custom ``opener`` runs in a worker thread. Opening a FIFO waits for the
    other end, as ``open(2)`` does (cancellable on io_uring; on the thread
    backend the thread waits); its reads and writes then wait for readiness.

    Raises the ``OSError`` subclass built-in ``open`` would
    (:class:`FileNotFoundError`, :class:`IsADirectoryError`, ...) with
    ``errno``, ``strerror`` and ``filename``; :class:`TypeError` and
    :class:`ValueError` for bad arguments, before anything is submitted.
    """
    try:
        checked = check_open_arguments(
            file, mode, buffering, encoding, errors, newline, closefd, opener, direct
        )
        backend = current_backend_impl()
    except Exception:
        await _refused()
        raise
    name = checked.name
    if checked.fd is not None:
        handle = backend.wrap(checked.fd)
        owned = closefd
    else:
        assert checked.path is not None
        owned = True
        try:
            if opener is None:
                handle = await backend.open(checked.path, checked.flags, 0o666)
            else:
                fd = await _workers.run(opener, name, checked.flags)
                handle = backend.wrap(check_opener_result(fd))
        except OSError as exc:
            raise _with_filename(exc, name) from None

    f = AsyncFile(handle, name, checked.mode, owned, backend.name)
    try:
        try:
            st = await handle.stat()
        except OSError as exc:
            raise _with_filename(exc, name) from None
        if stat_module.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), name)
        f._regular = stat_module.S_ISREG(st.st_mode)
        try:
            os.lseek(handle.fd, 0, os.SEEK_CUR)  # never waits, on any file system
        except OSError:
            f._seekable = False
        else:
            if f._append:  # the position starts at the end, as io.FileIO puts it
                await f._end()
        if _by_readiness(st.st_mode) and sys.platform != "win32":
            from ._backends._readiness import ReadinessFile

            f._handle = ReadinessFile(handle)
        if direct or fd_is_direct(handle.fd):
            try:
                mem, align = await handle.dio_alignment()
            except OSError as exc:
                raise _with_filename(exc, name) from None
            f._direct = (mem or mmap.PAGESIZE, align or mmap.PAGESIZE)
        f._update_fast_paths()
    except BaseException:
        if owned:
            await f._close()
        else:
            f._closed = True
        raise
    return f

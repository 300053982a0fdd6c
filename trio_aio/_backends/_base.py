"""The interface between the file layer and a backend.

A backend turns file operations into kernel work.  The file layer
(``trio_aio/_file.py``) checks arguments, loops over short transfers, keeps
the cursor and adds file names to errors; a backend does exactly one kernel
operation per call and knows nothing of policy.  Nothing above this interface
knows which backend runs.

The contract every backend meets
--------------------------------

* Each ``async`` method is a checkpoint and performs one kernel operation
  (``pread`` with ``offset`` -1 uses and advances the file position).  The
  event loop is reached only through :func:`trio_aio._loops.current` (trio or
  asyncio), the ring through ``_ring/_driver.py`` and worker threads through
  ``_workers.py``; the FreeBSD backend (``_freebsd/``) is trio-only.
* Errors are ``OSError`` with ``errno`` and ``strerror``; the file layer adds
  the file name.  After :meth:`BackendFile.close` has begun, every new
  operation raises the loop's ``ClosedResourceError``.
* **Cancellation** comes through the loop's cancel scopes (or
  ``Task.cancel``).  An operation the kernel (or a worker thread) has not
  started is dropped and raises the cancellation.  One it has started is
  asked to stop where the
  mechanism allows it (``IORING_OP_ASYNC_CANCEL``, ``aio_cancel``) and waited
  for; if it completed anyway its result is returned and the cancellation is
  delivered at the next checkpoint.  A result is never thrown away, and every
  buffer stays alive until the kernel has let go of it.
* :meth:`BackendFile.close` is the other way to cancel: it cancels every
  operation in flight on the file, waits until the kernel has let go of all of
  them (their waiters get ``ClosedResourceError``, or their result),
  and only then closes the fd.  One :class:`InFlight` per file does this for
  every backend.
"""

from __future__ import annotations

import collections
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

import anyio

from .. import _loops

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .._statistics import BackendStatistics


class BackendUnavailableError(RuntimeError):
    """The backend asked for cannot work here; the message says why."""


class BackendFile(Protocol):
    """One open fd, as a backend sees it."""

    @property
    def fd(self) -> int:
        """The file descriptor."""
        ...

    @property
    def may_block(self) -> bool:
        """Whether the file system may block in submission, ``lseek(SEEK_END)`` or ``fstat``.

        (FUSE, NFS...: see ``_fs.py``.)  The file layer then makes those calls
        in a worker thread.
        """
        ...

    @property
    def in_flight(self) -> int:
        """How many operations are in progress on this file."""
        ...

    def pread(self, size: int, offset: int) -> Awaitable[bytes]:
        """Read up to ``size`` bytes at ``offset`` (-1: the file position).

        (An awaitable rather than an ``async def``: a backend may hand back
        the coroutine that does the read, saving a level on the hot path.)
        """
        ...

    async def preadinto(self, buffer: Buffer, offset: int) -> int:
        """Read into a writable buffer at ``offset`` (-1: the file position)."""
        ...

    async def pwrite(self, buffer: Buffer, offset: int) -> int:
        """Write from a buffer at ``offset`` (-1: the file position)."""
        ...

    async def preadv(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Scatter-read into ``buffers`` (at most IOV_MAX) at ``offset`` (-1: the position)."""
        ...

    async def pwritev(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Gather-write ``buffers`` (at most IOV_MAX) at ``offset`` (-1: the position)."""
        ...

    async def pread_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes | OSError]:
        """A batch of reads, one per (size, offset): submitted together, woken once.

        Each element's data, or its error.  Cancelled before any element ran:
        the cancellation is raised; after some ran: the results, with ``ECANCELED``
        for the others, and the cancellation at the next checkpoint.
        """
        ...

    async def preadinto_many(
        self, requests: Sequence[tuple[memoryview, int]]
    ) -> list[int | OSError]:
        """A batch of reads, one per (buffer, offset); as :meth:`pread_many`."""
        ...

    async def pwrite_many(self, requests: Sequence[tuple[memoryview, int]]) -> list[int | OSError]:
        """A batch of writes, one per (buffer, offset); as :meth:`pread_many`."""
        ...

    async def fsync(self, datasync: bool) -> None:
        """``fsync(2)``, or ``fdatasync(2)`` when ``datasync``."""
        ...

    async def fallocate(self, mode: int, offset: int, length: int) -> None:
        """``fallocate(2)``."""
        ...

    async def ftruncate(self, length: int) -> None:
        """``ftruncate(2)``."""
        ...

    async def stat(self) -> os.stat_result:
        """``fstat(2)``."""
        ...

    async def dio_alignment(self) -> tuple[int, int]:
        """(memory, offset) alignment for ``O_DIRECT`` I/O; (0, 0) if unknown."""
        ...

    async def close(self, close_fd: bool = True) -> None:
        """Cancel what is in flight, wait for the kernel to let go, close the fd."""
        ...


class Backend(Protocol):
    """A way of doing file I/O: opens files and reports its counters."""

    @property
    def name(self) -> str:
        """The name :func:`trio_aio.current_backend` reports."""
        ...

    async def open(self, path: bytes, flags: int, mode: int) -> BackendFile:
        """``open(2)`` relative to the current directory."""
        ...

    def wrap(self, fd: int) -> BackendFile:
        """Adopt an fd that is already open."""
        ...

    def statistics(self) -> BackendStatistics:
        """The current run's counters."""
        ...


def fd_is_direct(fd: int) -> bool:
    """Whether ``fd`` was opened with ``O_DIRECT`` (False where there is no such flag)."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct or sys.platform == "win32":
        return False
    import fcntl

    try:
        return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & direct)
    except OSError:
        return False


async def read_into_new(
    preadinto_many: Callable[[list[tuple[memoryview, int]]], Awaitable[list[int | OSError]]],
    requests: Sequence[tuple[int, int]],
) -> list[bytes | OSError]:
    """``pread_many`` from ``preadinto_many``: each read into a new buffer, as ``bytes``."""
    buffers = [bytearray(size) for size, _ in requests]
    results = await preadinto_many(
        [(memoryview(buf), offset) for buf, (_, offset) in zip(buffers, requests, strict=True)]
    )
    return [
        res if isinstance(res, OSError) else bytes(memoryview(buf)[:res])
        for buf, res in zip(buffers, results, strict=True)
    ]


class InFlight:
    """The operations in progress on one fd, and the one way to close it.

    Every backend file holds one.  An operation calls :meth:`begin` before
    it starts anything and :meth:`end` when it is over, however it ended;
    while it can be cancelled by someone else, the function that does so is
    in :attr:`cancels` (a ring operation's ``driver.cancel``, the drop of a
    call waiting for a thread, an ``aio_cancel``).  :meth:`close` refuses new
    operations, calls every one of those functions, waits until the kernel
    and every worker thread have let go of the fd, and only then closes it.
    """

    __slots__ = ("_busy", "_closing", "_drained", "cancels", "fd")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._busy = 0  # operations in progress, of every kind
        self._closing = False
        self._drained: _loops.Event | None = None
        self.cancels: set[Callable[[], object]] = set()

    @property
    def count(self) -> int:
        """How many operations are in progress."""
        return self._busy

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` has begun."""
        return self._closing

    def check_open(self) -> None:
        """Raise ``ClosedResourceError`` if closing has begun."""
        if self._closing:
            raise _loops.closed_resource_error()("file is closed")

    def begin(self) -> None:
        """Note that an operation starts; raises if the file is closing."""
        if self._closing:
            raise _loops.closed_resource_error()("file is closed")
        self._busy += 1

    def end(self) -> None:
        """Note that an operation is over (however it ended)."""
        self._busy -= 1
        if self._closing and not self._busy and self._drained is not None:
            self._drained.set()

    async def close(self, close_fd: Callable[[], Awaitable[object]] | None) -> None:
        """Cancel what is in progress, wait for it to let go, then ``await close_fd()``.

        Waits even if cancelled (shielded, as trio's ``aclose`` must): the fd
        cannot be closed while the kernel or a thread may still use it, and
        cancelled operations come back promptly.  A second call returns at
        once (the file layer makes later callers wait for the first).
        """
        if self._closing:
            return
        self._closing = True
        for cancel in list(self.cancels):
            cancel()
        if self._busy:
            self._drained = _loops.Event()
            await self._drained.wait_shielded()
        if close_fd is not None:
            await close_fd()


class ReadsApart:
    """One fd served by two backend files: reads by one, everything else by the other.

    The io_uring backend's FUSE files: reads in worker threads, the rest on
    the ring (``_uring.py``).  Each method says where it goes; closing closes
    the other side first (its operations are cancelled), then the readers'
    (reads waiting for a thread are dropped, running ones waited for), which
    closes the fd.
    """

    __slots__ = ("_reads", "_rest")

    def __init__(self, reads: BackendFile, rest: BackendFile) -> None:
        self._reads = reads
        self._rest = rest

    @property
    def fd(self) -> int:
        """The file descriptor."""
        return self._rest.fd

    @property
    def may_block(self) -> bool:
        """Whether the file system may block (see :class:`BackendFile`)."""
        return self._rest.may_block

    @property
    def in_flight(self) -> int:
        """How many operations are in progress on this file."""
        return self._reads.in_flight + self._rest.in_flight

    async def pread(self, size: int, offset: int) -> bytes:
        """Read (the readers' side)."""
        return await self._reads.pread(size, offset)

    async def preadinto(self, buffer: Buffer, offset: int) -> int:
        """Read (the readers' side)."""
        return await self._reads.preadinto(buffer, offset)

    async def preadv(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Read (the readers' side)."""
        return await self._reads.preadv(buffers, offset)

    async def pread_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes | OSError]:
        """Read (the readers' side)."""
        return await self._reads.pread_many(requests)

    async def preadinto_many(
        self, requests: Sequence[tuple[memoryview, int]]
    ) -> list[int | OSError]:
        """Read (the readers' side)."""
        return await self._reads.preadinto_many(requests)

    async def pwrite(self, buffer: Buffer, offset: int) -> int:
        """Write (the other side)."""
        return await self._rest.pwrite(buffer, offset)

    async def pwritev(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Write (the other side)."""
        return await self._rest.pwritev(buffers, offset)

    async def pwrite_many(self, requests: Sequence[tuple[memoryview, int]]) -> list[int | OSError]:
        """Write (the other side)."""
        return await self._rest.pwrite_many(requests)

    async def fsync(self, datasync: bool) -> None:
        """The other side."""
        await self._rest.fsync(datasync)

    async def fallocate(self, mode: int, offset: int, length: int) -> None:
        """The other side."""
        await self._rest.fallocate(mode, offset, length)

    async def ftruncate(self, length: int) -> None:
        """The other side."""
        await self._rest.ftruncate(length)

    async def stat(self) -> os.stat_result:
        """The other side."""
        return await self._rest.stat()

    async def dio_alignment(self) -> tuple[int, int]:
        """The other side."""
        return await self._rest.dio_alignment()

    async def close(self, close_fd: bool = True) -> None:
        """Close the other side, then the readers' side, which closes the fd."""
        await self._rest.close(close_fd=False)
        await self._reads.close(close_fd)


class TaskQueue:
    """One task at a time, in the order they came: ``async with queue: ...``.

    Held without yielding when nobody holds it (the operation inside is the
    checkpoint: an ``anyio.Lock`` or ``trio.Lock`` costs a scheduler pass or
    task-tracking bookkeeping on every call, about a third of a cached 4 KiB
    cursor read).  A task that must wait parks on an ``anyio.Event`` of its
    own, so it works on trio and on asyncio; the holder hands the queue to
    the first waiter when it leaves.  A waiter cancelled before its turn
    leaves the queue; one cancelled just as its turn came passes it on.
    """

    __slots__ = ("_held", "_waiters")

    def __init__(self) -> None:
        self._held = False
        self._waiters: collections.deque[anyio.Event] = collections.deque()

    def locked(self) -> bool:
        """Whether a task holds the queue."""
        return self._held

    async def __aenter__(self) -> None:
        if not self._held:
            self._held = True
            return
        turn = anyio.Event()
        self._waiters.append(turn)
        try:
            await turn.wait()
        except BaseException:
            if turn.is_set():  # it was our turn already: pass it on
                self._leave()
            else:
                self._waiters.remove(turn)
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._leave()

    def _leave(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # still held: now by that waiter
        else:
            self._held = False

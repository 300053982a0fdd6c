"""Pipes, FIFOs, ttys, sockets and character devices: readiness, not the ring or a thread.

A read from a pipe may wait forever.  Sent to io_uring it would sit in the
kernel (cancellable, but holding ring space and an io-wq worker for some file
types); sent to the thread backend it would hold a worker thread.  So the file
layer wraps every fd that is not a regular file or a block device in a
:class:`ReadinessFile`: the fd is made non-blocking, and a transfer that would
block waits for the event loop's readiness notification (``wait_readable`` /
``wait_writable``, that is epoll, kqueue or ``loop.add_reader``) and tries
again.  Nothing is ever in flight while the task waits, so cancelling it loses
nothing.

Some facts this relies on
-------------------------

* ``O_NONBLOCK`` belongs to the open file description, which other processes
  may share (a terminal, an inherited pipe).  Like trio's ``FdStream``, the
  original mode is restored when the file is closed.
* The other operations (``fstat``, ``fsync``...) never wait for readiness;
  they go to the backend the file was opened with.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from .. import _loops
from ._base import InFlight, TaskQueue

assert sys.platform != "win32"  # POSIX only: the file layer never imports it on Windows

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._base import BackendFile

T = TypeVar("T")
U = TypeVar("U")


class ReadinessFile:
    """A stream fd: non-blocking transfers that wait for readiness."""

    __slots__ = ("_inner", "_io", "_readers", "_was_blocking", "_writers", "fd")

    def __init__(self, inner: BackendFile) -> None:
        self.fd = inner.fd
        self._inner = inner
        self._io = InFlight(inner.fd)
        self._readers = TaskQueue()
        self._writers = TaskQueue()
        self._was_blocking = os.get_blocking(inner.fd)
        if self._was_blocking:
            os.set_blocking(inner.fd, False)

    async def _transfer(self, writing: bool, attempt: Callable[[], T]) -> T:
        """A checkpoint, then ``attempt()`` until it does not raise ``BlockingIOError``.

        One task at a time per direction: the event loops let one task wait
        for an fd's readiness in each direction (trio raises
        ``BusyResourceError`` for a second), so the others queue here, in
        order, and a cancelled one just leaves the queue.
        """
        loop = _loops.current()
        await loop.checkpoint()
        async with self._writers if writing else self._readers:
            self._io.begin()
            try:
                wait = loop.wait_writable if writing else loop.wait_readable
                while True:
                    try:
                        return attempt()
                    except BlockingIOError:
                        await wait(self.fd)
            finally:
                self._io.end()

    # Offsets: -1 is the stream itself; a character device that can seek
    # (/dev/zero) takes positional transfers too, and a pipe refuses them
    # with ESPIPE, as the system calls do.

    async def pread(self, size: int, offset: int) -> bytes:
        """``read(2)`` (``pread(2)`` at an offset) once data or end of file is there."""
        fd = self.fd
        if offset < 0:
            return await self._transfer(False, lambda: os.read(fd, size))
        return await self._transfer(False, lambda: os.pread(fd, size, offset))

    async def preadinto(self, buffer: Buffer, offset: int) -> int:
        """Read into one buffer once data or end of file is there."""
        return await self.preadv([buffer], offset)

    async def pwrite(self, buffer: Buffer, offset: int) -> int:
        """``write(2)`` (``pwrite(2)`` at an offset) once there is room."""
        fd = self.fd
        if offset < 0:
            return await self._transfer(True, lambda: os.write(fd, buffer))
        return await self._transfer(True, lambda: os.pwrite(fd, buffer, offset))

    async def preadv(self, buffers: Sequence[Buffer], offset: int) -> int:
        """``readv(2)`` (``preadv(2)`` at an offset) once data or end of file is there."""
        fd = self.fd
        if offset < 0:
            return await self._transfer(False, lambda: os.readv(fd, buffers))
        return await self._transfer(False, lambda: os.preadv(fd, buffers, offset))

    async def pwritev(self, buffers: Sequence[Buffer], offset: int) -> int:
        """``writev(2)`` (``pwritev(2)`` at an offset) once there is room."""
        fd = self.fd
        if offset < 0:
            return await self._transfer(True, lambda: os.writev(fd, buffers))
        return await self._transfer(True, lambda: os.pwritev(fd, buffers, offset))

    async def _each(
        self, call: Callable[[T, int], Awaitable[U]], requests: Sequence[tuple[T, int]]
    ) -> list[U | OSError]:
        results: list[U | OSError] = []
        for thing, offset in requests:
            try:
                results.append(await call(thing, offset))
            except OSError as exc:
                results.append(exc)
        return results

    async def pread_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes | OSError]:
        """One read after another (a seekable character device; pipes refuse offsets first)."""
        return await self._each(self.pread, requests)

    async def preadinto_many(
        self, requests: Sequence[tuple[memoryview, int]]
    ) -> list[int | OSError]:
        """One read after another, as :meth:`pread_many`."""
        return await self._each(self.preadinto, requests)

    async def pwrite_many(self, requests: Sequence[tuple[memoryview, int]]) -> list[int | OSError]:
        """One write after another, as :meth:`pread_many`."""
        return await self._each(self.pwrite, requests)

    async def fsync(self, datasync: bool) -> None:
        """``fsync(2)``, through the backend."""
        await self._inner.fsync(datasync)

    async def fallocate(self, mode: int, offset: int, length: int) -> None:
        """``fallocate(2)``, through the backend."""
        await self._inner.fallocate(mode, offset, length)

    async def ftruncate(self, length: int) -> None:
        """``ftruncate(2)``, through the backend."""
        await self._inner.ftruncate(length)

    async def stat(self) -> os.stat_result:
        """``fstat(2)``, through the backend."""
        return await self._inner.stat()

    async def dio_alignment(self) -> tuple[int, int]:
        """Direct I/O does not apply to streams."""
        return await self._inner.dio_alignment()

    @property
    def may_block(self) -> bool:
        """Whether the backend file's system may block (see :class:`BackendFile`)."""
        return self._inner.may_block

    @property
    def in_flight(self) -> int:
        """How many operations are in progress on this file."""
        return self._io.count + self._inner.in_flight

    async def close(self, close_fd: bool = True) -> None:
        """Wake the tasks waiting for readiness, restore blocking mode, close (backend)."""
        if self._io.closing:
            return
        fd = self.fd
        self._io.cancels.add(lambda: _loops.current().notify_closing(fd))
        await self._io.close(functools.partial(self._close_inner, close_fd))

    async def _close_inner(self, close_fd: bool) -> None:
        if self._was_blocking:
            with contextlib.suppress(OSError):  # the fd was closed under us
                os.set_blocking(self.fd, True)
        await self._inner.close(close_fd)

"""The thread backend: blocking system calls in worker threads, cached reads inline.

Used where io_uring is missing or refused (Docker's default seccomp profile,
``kernel.io_uring_disabled``, macOS, Windows), with the same API and contract.

Every operation that may wait for a device runs in one of the run's worker
threads (``trio_aio/_workers.py``: a limit of our own, so that file I/O does
not compete with the application's other threads, and the cancellation rule
of thread calls).

Some facts this relies on
-------------------------

* Reads of cached data are served on the event loop's thread with
  ``preadv2(..., RWF_NOWAIT)`` and go to a thread only when that would block
  (the facts are in ``_inline.py``); ``O_DIRECT`` files always use threads.
* A thread cannot be interrupted (``_workers.py``): :meth:`ThreadFile.close`
  drops the operations still waiting for a thread and waits for the running
  ones before it closes the fd.
* Windows has no ``pread``/``pwrite``: positional I/O there is emulated with
  ``lseek`` around ``read``/``write``, serialised per file by a lock.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .. import _loops, _workers
from .._statistics import Counters, ThreadsStatistics
from ._base import InFlight, read_into_new
from ._fs import classify
from ._inline import Inline, before

if TYPE_CHECKING:
    from typing_extensions import Buffer

T = TypeVar("T")

__all__ = ["ThreadBackend", "ThreadFile"]

_HAVE_PREADV = hasattr(os, "preadv")


# -- the blocking calls, run in worker threads -----------------------------------

# Windows has no pread/pwrite: seek, transfer, seek back, under the file's
# lock.  Defined everywhere so that it can be tested everywhere.


def _positional(lock: threading.Lock, fd: int, offset: int, call: Callable[[], T]) -> T:
    with lock:
        if offset < 0:
            return call()
        saved = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, offset, os.SEEK_SET)
        try:
            return call()
        finally:
            os.lseek(fd, saved, os.SEEK_SET)


def _emulated_pread(lock: threading.Lock, fd: int, size: int, offset: int) -> bytes:
    return _positional(lock, fd, offset, lambda: os.read(fd, size))


def _emulated_preadinto(lock: threading.Lock, fd: int, buffer: memoryview, offset: int) -> int:
    data = _emulated_pread(lock, fd, len(buffer), offset)
    buffer[: len(data)] = data
    return len(data)


def _emulated_pwrite(lock: threading.Lock, fd: int, buffer: memoryview, offset: int) -> int:
    return _positional(lock, fd, offset, lambda: os.write(fd, buffer))


def _one_at_a_time(
    transfer: Callable[[threading.Lock, int, memoryview, int], int],
    lock: threading.Lock,
    fd: int,
    buffers: Sequence[memoryview],
    offset: int,
) -> int:
    """preadv/pwritev from single transfers, stopping at the first short one."""
    done = 0
    for buffer in buffers:
        n = transfer(lock, fd, buffer, offset + done if offset >= 0 else -1)
        done += n
        if n < len(buffer):
            break
    return done


if sys.platform == "win32":
    _pread = _emulated_pread
    _preadinto = _emulated_preadinto
    _pwrite = _emulated_pwrite

    def _preadv(lock: threading.Lock, fd: int, buffers: Sequence[memoryview], offset: int) -> int:
        return _one_at_a_time(_emulated_preadinto, lock, fd, buffers, offset)

    def _pwritev(lock: threading.Lock, fd: int, buffers: Sequence[memoryview], offset: int) -> int:
        return _one_at_a_time(_emulated_pwrite, lock, fd, buffers, offset)

else:

    def _pread(lock: threading.Lock, fd: int, size: int, offset: int) -> bytes:
        return os.read(fd, size) if offset < 0 else os.pread(fd, size, offset)

    def _preadinto(lock: threading.Lock, fd: int, buffer: memoryview, offset: int) -> int:
        if offset < 0:
            return os.readv(fd, [buffer])
        if _HAVE_PREADV:
            return os.preadv(fd, [buffer], offset)
        data = os.pread(fd, len(buffer), offset)
        buffer[: len(data)] = data
        return len(data)

    def _pwrite(lock: threading.Lock, fd: int, buffer: memoryview, offset: int) -> int:
        return os.write(fd, buffer) if offset < 0 else os.pwrite(fd, buffer, offset)

    def _preadv(lock: threading.Lock, fd: int, buffers: Sequence[memoryview], offset: int) -> int:
        if offset < 0:
            return os.readv(fd, buffers)
        if _HAVE_PREADV:
            return os.preadv(fd, buffers, offset)
        return _one_at_a_time(_preadinto, lock, fd, buffers, offset)

    def _pwritev(lock: threading.Lock, fd: int, buffers: Sequence[memoryview], offset: int) -> int:
        if offset < 0:
            return os.writev(fd, buffers)
        if _HAVE_PREADV:
            return os.pwritev(fd, buffers, offset)
        return _one_at_a_time(_pwrite, lock, fd, buffers, offset)


def _fsync(fd: int, datasync: bool) -> None:
    if datasync and hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if mode != 0 or not hasattr(os, "posix_fallocate"):
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))
    os.posix_fallocate(fd, offset, length)


def _cancelled_error() -> OSError:
    return OSError(errno.ECANCELED, os.strerror(errno.ECANCELED))


# -- files -------------------------------------------------------------------------


class ThreadFile:
    """One open fd, as the thread backend sees it: inline when cached, else a worker thread."""

    __slots__ = ("_fast_path", "_inline", "_io", "_lock", "_may_block", "fd")

    def __init__(self, fd: int, nowait: bool = True, fs: tuple[bool, bool] | None = None) -> None:
        # ``nowait``: try RWF_NOWAIT first (where the file system allows it);
        # ``fs``: ``_fs.classify(fd)``, if the caller has it already.
        self.fd = fd
        # (loop, counters) of the run that first used the file inline: a file
        # belongs to the run that opened it, as trio's objects do
        self._fast_path: tuple[_loops.Loop, Counters] | None = None
        self._may_block = (classify(fd) if fs is None else fs)[0]
        self._io = InFlight(fd)
        self._inline = Inline(fd, nowait and not self._may_block)
        self._lock = threading.Lock()  # Windows: serialises seek-and-transfer

    @property
    def may_block(self) -> bool:
        """Whether the file system may block (``_fs.py``): then no ``RWF_NOWAIT`` either."""
        return self._may_block

    @property
    def in_flight(self) -> int:
        """How many operations are in progress on this file."""
        return self._io.count

    # -- the two ways an operation runs --------------------------------------------

    async def _transfer(
        self,
        buffers: Sequence[Buffer],
        offset: int,
        write: bool,
        blocking: Callable[..., int],
        *args: Any,
    ) -> int:
        """Inline if the data is cached (or the write needs no waiting), else in a thread."""
        inline = self._inline
        if inline.writes if write else inline.reads:
            self._io.check_open()
            n = await inline.transfer(*self._fast(), buffers, offset, write)
            if n is not None:
                return n
        return await self._in_thread(blocking, self._lock, self.fd, *args)

    def _fast(self) -> tuple[_loops.Loop, Counters]:
        """The loop and the counters of the inline path (looked up once)."""
        fast = self._fast_path
        if fast is None:
            loop = _loops.current()
            fast = self._fast_path = loop, _workers.current(loop).counters
        return fast

    async def _in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in a worker thread and wait for it, however long it takes."""
        io = self._io
        io.begin()
        try:
            return await _workers.current().run(fn, *args, waiting=io.cancels)
        finally:
            io.end()

    # -- operations ----------------------------------------------------------------------

    def pread(self, size: int, offset: int) -> Awaitable[bytes]:
        """Read up to ``size`` bytes at ``offset`` (-1: the file position).

        (Not a coroutine itself: it returns the one that reads, inline or in
        a thread, one level fewer on the hot path.)
        """
        if self._inline.reads and not self._io.closing:
            fast = self._fast_path or self._fast()
            return self._inline.read(fast[0], fast[1], size, offset, self._pread_thread)
        return self._pread_thread(size, offset)

    async def _pread_thread(self, size: int, offset: int) -> bytes:
        return await self._in_thread(_pread, self._lock, self.fd, size, offset)

    async def preadinto(self, buffer: Buffer, offset: int) -> int:
        """Read into a writable buffer at ``offset`` (-1: the file position)."""
        view = memoryview(buffer)
        return await self._transfer([view], offset, False, _preadinto, view, offset)

    async def pwrite(self, buffer: Buffer, offset: int) -> int:
        """Write from a buffer at ``offset`` (-1: the file position)."""
        view = memoryview(buffer)
        return await self._transfer([view], offset, True, _pwrite, view, offset)

    # -- batches ---------------------------------------------------------------------

    async def pread_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes | OSError]:
        """One read per (size, offset), as a batch."""
        return await read_into_new(self.preadinto_many, requests)

    async def preadinto_many(
        self, requests: Sequence[tuple[memoryview, int]]
    ) -> list[int | OSError]:
        """One read per (buffer, offset), as a batch."""
        return await self._transfer_many(requests, write=False)

    async def pwrite_many(self, requests: Sequence[tuple[memoryview, int]]) -> list[int | OSError]:
        """One write per (buffer, offset), as a batch."""
        return await self._transfer_many(requests, write=True)

    async def _transfer_many(
        self, requests: Sequence[tuple[memoryview, int]], write: bool
    ) -> list[int | OSError]:
        """Every cached element inline, then the rest in one trip to one worker thread.

        Woken once.  Cancelled before anything ran: the cancellation is raised.
        Cancelled while waiting for a thread after some elements were served
        inline: those results are returned, the others are ``ECANCELED``, and
        the cancellation arrives at the next checkpoint (the batch rule of
        ``_ring/_driver.py``).
        """
        self._io.check_open()
        loop, counters = self._fast()
        await before(loop, counters, len(requests))
        results: list[int | OSError] = [0] * len(requests)
        misses: list[int] = []
        inline = self._inline
        if inline.writes if write else inline.reads:
            for i, (buffer, offset) in enumerate(requests):
                res = inline.attempt([buffer], offset, write)
                if res is not None:
                    results[i] = res
                elif inline.writes if write else inline.reads:
                    misses.append(i)  # would block
                else:  # the file refuses the flag: the rest go to the thread too
                    misses.extend(range(i, len(requests)))
                    break
            counters.inline += len(requests) - len(misses)
        else:
            misses = list(range(len(requests)))
        if not misses:
            await loop.cancel_shielded_checkpoint()
            return results
        done = await self._thread_many(requests, misses, write, rest=len(misses) < len(requests))
        for i, res in zip(misses, done, strict=True):
            results[i] = res
        return results

    async def _thread_many(
        self,
        requests: Sequence[tuple[memoryview, int]],
        indexes: list[int],
        write: bool,
        rest: bool = False,
    ) -> list[int | OSError]:
        """The elements at ``indexes``, one after another in one worker thread.

        Each element's count or error.  Cancelled while waiting for the thread:
        none of them ran, and the cancellation is raised; or, for the ``rest``
        of a batch part of which ran, each is ``ECANCELED`` and the
        cancellation arrives at the next checkpoint (``_workers.run_rest``).
        """
        blocking = _pwrite if write else _preadinto
        lock = self._lock
        fd = self.fd

        def run() -> list[int | OSError]:
            out: list[int | OSError] = []
            for i in indexes:
                buffer, offset = requests[i]
                try:
                    out.append(blocking(lock, fd, buffer, offset))
                except OSError as exc:
                    out.append(exc)
            return out

        if not rest:
            return await self._in_thread(run)
        io = self._io
        io.begin()
        try:
            done = await _workers.current().run_rest(run, waiting=io.cancels)
        finally:
            io.end()
        return [_cancelled_error() for _ in indexes] if done is None else done

    async def preadv(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Scatter-read into ``buffers`` at ``offset`` (-1: the file position)."""
        return await self._transfer(buffers, offset, False, _preadv, buffers, offset)

    async def pwritev(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Gather-write ``buffers`` at ``offset`` (-1: the file position)."""
        return await self._transfer(buffers, offset, True, _pwritev, buffers, offset)

    async def fsync(self, datasync: bool) -> None:
        """``fsync(2)``, or ``fdatasync(2)`` when ``datasync`` (``fsync`` where it is missing)."""
        await self._in_thread(_fsync, self.fd, datasync)

    async def fallocate(self, mode: int, offset: int, length: int) -> None:
        """``posix_fallocate(3)`` (mode 0 only); ``EOPNOTSUPP`` where it is missing."""
        await self._in_thread(_fallocate, self.fd, mode, offset, length)

    async def ftruncate(self, length: int) -> None:
        """``ftruncate(2)``."""
        await self._in_thread(os.ftruncate, self.fd, length)

    async def stat(self) -> os.stat_result:
        """``fstat(2)``."""
        return await self._in_thread(os.fstat, self.fd)

    async def dio_alignment(self) -> tuple[int, int]:
        """Unknown here (no ``statx`` in Python's ``os``): the file layer assumes a page."""
        await _loops.current().checkpoint()
        return 0, 0

    async def close(self, close_fd: bool = True) -> None:
        """Drop operations waiting for a thread, wait for running ones, close the fd.

        A running thread cannot be stopped: this waits for it (shielded, as
        trio's ``aclose`` must), and its caller gets its result.
        """
        await self._io.close(self._close_fd if close_fd else None)

    async def _close_fd(self) -> None:
        await _workers.current().run_shielded(os.close, self.fd)


class ThreadBackend:
    """Opens files in worker threads; each open file is a :class:`ThreadFile`."""

    name = "threads"

    async def open(self, path: bytes, flags: int, mode: int) -> ThreadFile:
        """``open(2)`` in a worker thread."""
        return self.wrap(await self.open_fd(path, flags, mode))

    @staticmethod
    async def open_fd(path: bytes, flags: int, mode: int) -> int:
        """``open(2)`` in a worker thread; the fd (errors without the file name)."""
        try:
            return await _workers.run(os.open, path, flags, mode)
        except OSError as exc:
            # The file layer adds the name the caller gave (str or bytes).
            raise OSError(exc.errno, exc.strerror) from None

    def wrap(self, fd: int) -> ThreadFile:
        """Adopt an fd that is already open."""
        return ThreadFile(fd)

    def statistics(self) -> ThreadsStatistics:
        """The current run's counters (all zero before its first operation)."""
        workers = _workers.current_or_none()
        if workers is None:
            return ThreadsStatistics(max_threads=_workers.current_config().max_threads)
        return workers.statistics()

"""The io_uring backend: file operations as ring operations.

Each method builds an :class:`~trio_aio._ring._engine.Op`, keeps whatever the
kernel will read or write (buffers, paths, statx structs) alive inside it, and
waits for it through the current run's driver (``_ring/_driver.py``, where
the cancellation contract is).  Results come back as the
kernel's ``res``; negative values become ``OSError`` here, without a filename
(the file layer adds it).
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

from .. import _loops, _workers
from .._ring import _constants as C
from .._ring import _driver
from .._ring._driver import CANCELLED_RESULTS
from .._ring._engine import Op
from .._ring._ring import ffi, lib
from .._statistics import IoUringStatistics
from ._base import InFlight, ReadsApart
from ._fs import classify
from ._inline import Inline
from ._threads import ThreadFile

if TYPE_CHECKING:
    from .._loops import Loop
    from .._statistics import Counters
    from ._base import BackendFile

assert sys.platform == "linux"  # imported only where io_uring works (and mypy --platform)

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
STATX_BASIC_STATS = 0x7FF
STATX_DIOALIGN = 0x2000  # Linux 6.1

# Read buffers are filled by the kernel: no need to zero them first.
_new_uninitialised = ffi.new_allocator(should_clear_after_alloc=False)
_EMPTY_PATH = ffi.new("char[]", b"")


def _error(res: int) -> OSError:
    return OSError(-res, os.strerror(-res))


def _off(offset: int) -> int:
    """An SQE offset: -1 (the file position) is ``CURRENT_POSITION``."""
    return C.CURRENT_POSITION if offset < 0 else offset


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _bytes_of(data: bytearray, res: int | OSError) -> bytes | OSError:
    """The first ``res`` bytes of ``data`` (or the error)."""
    if isinstance(res, OSError):
        return res
    return bytes(data) if res == len(data) else bytes(memoryview(data)[:res])


def _iovecs(buffers: Sequence[Any], writable: bool) -> tuple[Any, list[Any]]:
    """A ``struct iovec`` array over ``buffers``, and the exports it points into."""
    iov = ffi.new("struct iovec[]", len(buffers))
    exports = []
    for i, buffer in enumerate(buffers):
        cbuf = ffi.from_buffer(buffer, require_writable=writable)
        exports.append(cbuf)
        iov[i].iov_base = cbuf
        iov[i].iov_len = len(cbuf)
    return iov, exports


def stat_result_from_statx(sx: Any) -> os.stat_result:
    """Build the ``os.stat_result`` that ``os.fstat`` would return from a ``struct statx``."""
    at, mt, ct = sx.stx_atime, sx.stx_mtime, sx.stx_ctime
    atime_ns = at.tv_sec * 1_000_000_000 + at.tv_nsec
    mtime_ns = mt.tv_sec * 1_000_000_000 + mt.tv_nsec
    ctime_ns = ct.tv_sec * 1_000_000_000 + ct.tv_nsec
    return os.stat_result(
        (
            sx.stx_mode,
            sx.stx_ino,
            os.makedev(sx.stx_dev_major, sx.stx_dev_minor),
            sx.stx_nlink,
            sx.stx_uid,
            sx.stx_gid,
            sx.stx_size,
            at.tv_sec,
            mt.tv_sec,
            ct.tv_sec,
        ),
        {
            # the same arithmetic as CPython's fill_time(), to the last bit
            "st_atime": at.tv_sec + at.tv_nsec * 1e-9,
            "st_mtime": mt.tv_sec + mt.tv_nsec * 1e-9,
            "st_ctime": ct.tv_sec + ct.tv_nsec * 1e-9,
            "st_atime_ns": atime_ns,
            "st_mtime_ns": mtime_ns,
            "st_ctime_ns": ctime_ns,
            "st_blksize": sx.stx_blksize,
            "st_blocks": sx.stx_blocks,
            "st_rdev": os.makedev(sx.stx_rdev_major, sx.stx_rdev_minor),
        },
    )


class UringFile:
    """One open fd, as the io_uring backend sees it.

    Every operation is a ring operation, and those in flight are registered
    with the file's :class:`~trio_aio._backends._base.InFlight`, so that
    closing can cancel them in the kernel and wait for the kernel to let go
    before the fd is closed.  Reads of cached data are served without the
    ring when the run's ring allows it (``RingConfig.inline_cached``):
    ``_inline.py`` says why.

    On a file system that may block in submission (FUSE, NFS, ...: see
    ``_fs.py``) every operation carries ``IOSQE_ASYNC``: the kernel hands it
    straight to an io-wq worker, so ``io_uring_enter`` never waits for the
    daemon or the server on the loop's thread, and none is tried inline with
    ``RWF_NOWAIT``.  (On FUSE, reads do not come here at all: see
    :meth:`UringBackend.wrap`.)
    """

    __slots__ = ("_driver", "_fast_path", "_inline", "_io", "_may_block", "_sqe_flags", "fd")

    def __init__(self, fd: int, fs: tuple[bool, bool] | None = None) -> None:
        # ``fs``: ``_fs.classify(fd)``, if the caller has it already.
        self.fd = fd
        # (loop, counters) of the run that first used the file, if it reads
        # inline: a file belongs to the run that opened it, as trio's objects do
        self._fast_path: tuple[Loop, Counters] | None = None
        self._driver: _driver.RingDriver | None = None  # that run's, looked up once
        self._may_block = (classify(fd) if fs is None else fs)[0]
        self._io = InFlight(fd)
        self._inline = Inline(fd, not self._may_block)
        self._sqe_flags = C.IOSQE_ASYNC if self._may_block else 0

    @property
    def may_block(self) -> bool:
        """Whether the file system may block (``_fs.py``): then every operation is async."""
        return self._may_block

    @property
    def in_flight(self) -> int:
        """How many operations are in progress on this file."""
        return self._io.count

    def _fast(self, write: bool) -> tuple[Loop, Counters] | None:
        """The loop and the counters, if this transfer should try ``RWF_NOWAIT`` first."""
        if not (self._inline.writes if write else self._inline.reads) or self._io.closing:
            return None  # (closing: the slow way raises ClosedResourceError)
        fast = self._fast_path
        if fast is None:
            loop = _loops.current()
            driver = self._ring(loop)
            if not driver.config.inline_cached:
                self._inline.reads = self._inline.writes = False
                return None
            fast = self._fast_path = loop, driver.engine.counters
        return fast

    def _ring(self, loop: Loop | None = None) -> _driver.RingDriver:
        """The driver of the run that first used the file (a file belongs to that run)."""
        driver = self._driver
        if driver is None:
            driver = self._driver = _driver.current(loop)
        return driver

    async def _try_inline(self, buffers: Sequence[Any], offset: int, write: bool) -> int | None:
        """The count of an ``RWF_NOWAIT`` transfer, or None: use the ring."""
        fast = self._fast(write)
        if fast is None:
            return None
        return await self._inline.transfer(*fast, buffers, offset, write)

    async def _run(self, op: Op) -> int:
        """Run one ring operation on this file; its result, or its error raised."""
        io = self._io
        try:
            io.begin()
        except BaseException:
            op.abandon()  # its exports, released before a traceback can hold them
            raise
        try:
            driver = self._ring()
            cancel = functools.partial(driver.cancel, op)
            io.cancels.add(cancel)
            op.sqe_flags |= self._sqe_flags
            try:
                res = await driver.run(op)
            finally:
                io.cancels.discard(cancel)
        finally:
            op.abandon()  # (only if it never reached the engine)
            io.end()
        if res < 0:
            if res in CANCELLED_RESULTS and io.closing:
                raise _loops.current().ClosedResourceError("file was closed during the operation")
            raise _error(res)
        return res

    def pread(self, size: int, offset: int) -> Awaitable[bytes]:
        """Read up to ``size`` bytes at ``offset`` (-1: the file position) in one operation.

        (Not a coroutine itself: it returns the one that reads, inline or
        through the ring, one level fewer on the hot path.)
        """
        fast = self._fast_path
        if fast is None or not self._inline.reads or self._io.closing:
            fast = self._fast(False)  # (the first time, and the refusals)
            if fast is None:
                return self._pread_ring(size, offset)
        return self._inline.read(fast[0], fast[1], size, offset, self._pread_ring)

    async def _pread_ring(self, size: int, offset: int) -> bytes:
        buf = _new_uninitialised("char[]", size)
        off = _off(offset)
        n = await self._run(Op(C.IORING_OP_READ, self.fd, _address(buf), size, off, 0, buf))
        return ffi.unpack(buf, n)  # type: ignore[no-any-return]

    async def preadinto(self, buffer: Any, offset: int) -> int:
        """Read into a writable buffer at ``offset`` (-1: the file position), one operation."""
        if (n := await self._try_inline([buffer], offset, False)) is not None:
            return n
        cbuf = ffi.from_buffer(buffer, require_writable=True)
        off = _off(offset)
        return await self._run(
            Op(C.IORING_OP_READ, self.fd, _address(cbuf), len(cbuf), off, exports=(cbuf,))
        )

    async def pwrite(self, buffer: Any, offset: int) -> int:
        """Write from a buffer at ``offset`` (-1: the file position), one operation."""
        if (n := await self._try_inline([buffer], offset, True)) is not None:
            return n
        cbuf = ffi.from_buffer(buffer)
        off = _off(offset)
        return await self._run(
            Op(C.IORING_OP_WRITE, self.fd, _address(cbuf), len(cbuf), off, exports=(cbuf,))
        )

    async def _run_many(self, ops: list[Op]) -> list[int | OSError]:
        """Run a batch: one submission, one wakeup; a result or an error per op."""
        io = self._io
        try:
            io.begin()
        except BaseException:
            for op in ops:
                op.abandon()
            raise
        try:
            driver = self._ring()

            def cancel() -> None:
                for op in ops:
                    driver.cancel(op)

            io.cancels.add(cancel)
            for op in ops:
                op.sqe_flags |= self._sqe_flags
            try:
                results = await driver.run_many(ops)
            finally:
                io.cancels.discard(cancel)
        finally:
            for op in ops:
                op.abandon()  # (only those that never reached the engine)
            io.end()
        if io.closing and all(res in CANCELLED_RESULTS for res in results):
            # (if some ran, their results are returned, the others as ECANCELED)
            raise _loops.current().ClosedResourceError("file was closed during the operation")
        return [res if res >= 0 else _error(res) for res in results]

    async def pread_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes | OSError]:
        """One read per (size, offset), as a batch."""
        if (fast := self._fast(False)) is not None:
            arrays = [bytearray(size) for size, _ in requests]
            served = await self._inline.transfer_many(
                *fast,
                [(data, offset) for data, (_, offset) in zip(arrays, requests, strict=True)],
                False,
            )
            if served is not None:
                return [_bytes_of(data, res) for data, res in zip(arrays, served, strict=True)]
        buffers = [_new_uninitialised("char[]", size) for size, _ in requests]
        fd = self.fd
        ops = [
            Op(C.IORING_OP_READ, fd, _address(buf), size, _off(offset), 0, buf)
            for buf, (size, offset) in zip(buffers, requests, strict=True)
        ]
        results = await self._run_many(ops)
        unpack = ffi.unpack
        return [
            res if isinstance(res, OSError) else unpack(buf, res)
            for buf, res in zip(buffers, results, strict=True)
        ]

    async def preadinto_many(
        self, requests: Sequence[tuple[memoryview, int]]
    ) -> list[int | OSError]:
        """One read per (buffer, offset), as a batch."""
        if (fast := self._fast(False)) is not None:
            served = await self._inline.transfer_many(*fast, requests, False)
            if served is not None:
                return served
        return await self._run_many(self._transfer_ops(C.IORING_OP_READ, requests, True))

    async def pwrite_many(self, requests: Sequence[tuple[memoryview, int]]) -> list[int | OSError]:
        """One write per (buffer, offset), as a batch."""
        return await self._run_many(self._transfer_ops(C.IORING_OP_WRITE, requests, False))

    def _transfer_ops(
        self, opcode: int, requests: Sequence[tuple[memoryview, int]], writable: bool
    ) -> list[Op]:
        ops = []
        for buffer, offset in requests:
            cbuf = ffi.from_buffer(buffer, require_writable=writable)
            ops.append(
                Op(opcode, self.fd, _address(cbuf), len(cbuf), _off(offset), exports=(cbuf,))
            )
        return ops

    def _vectored(self, opcode: int, buffers: Sequence[Any], offset: int) -> Op:
        """A ``READV``/``WRITEV`` over ``buffers`` (its iovec array kept, the buffers exported)."""
        iov, exports = _iovecs(buffers, writable=opcode == C.IORING_OP_READV)
        return Op(
            opcode, self.fd, _address(iov), len(buffers), _off(offset), 0, iov, exports=exports
        )

    async def preadv(self, buffers: Sequence[Any], offset: int) -> int:
        """preadv(2): one ``IORING_OP_READV`` over ``buffers`` (-1: the file position)."""
        if (n := await self._try_inline(buffers, offset, False)) is not None:
            return n
        return await self._run(self._vectored(C.IORING_OP_READV, buffers, offset))

    async def pwritev(self, buffers: Sequence[Any], offset: int) -> int:
        """pwritev(2): one ``IORING_OP_WRITEV`` over ``buffers`` (-1: the file position)."""
        if (n := await self._try_inline(buffers, offset, True)) is not None:
            return n
        return await self._run(self._vectored(C.IORING_OP_WRITEV, buffers, offset))

    async def fsync(self, datasync: bool) -> None:
        """fsync(2), or fdatasync(2) when ``datasync``."""
        flags = C.IORING_FSYNC_DATASYNC if datasync else 0
        await self._run(Op(C.IORING_OP_FSYNC, self.fd, op_flags=flags))

    async def fallocate(self, mode: int, offset: int, length: int) -> None:
        """fallocate(2)."""
        await self._run(Op(C.IORING_OP_FALLOCATE, self.fd, addr=length, length=mode, off=offset))

    async def ftruncate(self, length: int) -> None:
        """ftruncate(2): through the ring on Linux 6.9+, else in a worker thread."""
        if C.IORING_OP_FTRUNCATE in self._ring().supported:
            await self._run(Op(C.IORING_OP_FTRUNCATE, self.fd, off=length))
            return
        # A thread cannot be cancelled: close() waits for it.
        io = self._io
        io.begin()
        try:
            await _workers.run(os.ftruncate, self.fd, length)
        finally:
            io.end()

    async def stat(self) -> os.stat_result:
        """fstat(2), as statx(2) on the fd."""
        return stat_result_from_statx(await self._statx(STATX_BASIC_STATS))

    async def _statx(self, mask: int) -> Any:
        sx = ffi.new("struct statx *")
        await self._run(
            Op(
                C.IORING_OP_STATX,
                self.fd,
                addr=_address(_EMPTY_PATH),
                length=mask,
                off=_address(sx),
                op_flags=AT_EMPTY_PATH,
                keep=sx,
            )
        )
        return sx

    async def dio_alignment(self) -> tuple[int, int]:
        """(memory, offset) alignment for ``O_DIRECT`` from ``STATX_DIOALIGN``; (0, 0): unknown."""
        sx = await self._statx(STATX_DIOALIGN)
        mem = ffi.new("uint32_t *")
        off = ffi.new("uint32_t *")
        lib.tai_statx_dioalign(sx, mem, off)
        return mem[0], off[0]

    async def close(self, close_fd: bool = True) -> None:
        """Cancel what is in flight, wait for the kernel to let go, close the fd.

        Waits even if cancelled: the fd cannot be closed while the kernel may
        still use it, and cancelled operations come back promptly.  With
        ``close_fd=False`` the fd is left open (``closefd=False``).
        """
        await self._io.close(self._close_fd if close_fd else None)

    async def _close_fd(self) -> None:
        op = Op(C.IORING_OP_CLOSE, self.fd, sqe_flags=self._sqe_flags)
        res = await self._ring().run_shielded(op)
        # -EINTR: Linux has released the fd anyway (as os.close, PEP 475: not an error).
        if res < 0 and res != -errno.EINTR:
            raise _error(res)


class UringBackend:
    """Opens files through the ring; each open file is a :class:`UringFile`."""

    name = "io_uring"

    async def open(self, path: bytes, flags: int, mode: int) -> BackendFile:
        """openat(2) relative to the current directory.

        A fact worth knowing: io_uring first tries an open inline with
        ``O_NONBLOCK`` added and a cached-only path lookup (clearing
        ``O_NONBLOCK`` from the file afterwards), and hands it to an io-wq
        worker only if that fails (so, inline, opening a FIFO for reading
        would return at once without a writer, and in a worker wait for one).

        A fact that decides how we submit it: when the path is in the
        dentry cache, that inline try opens the file for real, and on FUSE
        the open sends the daemon its ``OPEN`` request from inside
        ``io_uring_enter``, on the loop's thread, before we know what file
        system the path is on (measured on Linux 6.18: a stalled daemon
        froze the loop).  So every open is sent straight to an io-wq worker
        (``IOSQE_ASYNC``).
        """
        cpath = ffi.new("char[]", path)
        op = Op(
            C.IORING_OP_OPENAT,
            AT_FDCWD,
            addr=_address(cpath),
            length=mode,
            op_flags=flags,
            keep=cpath,
            sqe_flags=C.IOSQE_ASYNC,
        )
        res = await _driver.current().run(op)
        if res < 0:
            raise _error(res)
        return self.wrap(res)

    def wrap(self, fd: int) -> BackendFile:
        """Adopt an fd that is already open.

        On FUSE the file's reads go to worker threads, and everything else
        to the ring (a short FUSE read through io_uring returns wrong bytes:
        ``_fs.py`` has the facts): a :class:`~trio_aio._backends._base.ReadsApart`
        of a thread-backend file and a ring file on the same fd.
        """
        fs = classify(fd)
        ring = UringFile(fd, fs)
        if fs[1]:
            return ReadsApart(ThreadFile(fd, nowait=False, fs=fs), ring)
        return ring

    def statistics(self) -> IoUringStatistics:
        """The current run's ring counters (all zero before its first operation)."""
        driver = _driver.current_or_none()
        if driver is None:
            return IoUringStatistics()
        return driver.engine.statistics()

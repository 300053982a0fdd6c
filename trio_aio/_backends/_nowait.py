"""Transfers served on the event loop's thread when they need not wait: ``RWF_NOWAIT``.

Shared by the thread backend and the io_uring backend: a read of data that is
already in the page cache costs a microsecond or two as a ``preadv2`` on the
loop's thread, and it costs a worker-thread round trip (about a hundred) or a
park and a reschedule of the task through the ring (about ten, in Python)
otherwise.  So both try it first.

Some facts this relies on
-------------------------

* ``preadv2(..., RWF_NOWAIT)`` (Linux 4.14+) copies data that is already in
  the page cache and fails with ``EAGAIN`` instead of waiting for a device
  (it may still start readahead, which helps whoever reads next).  It never
  waits for a device, so the event loop never blocks on disk.  It may return
  a short count when only part of the range is cached; the file layer asks
  again for the rest, which then waits for the device the normal way.
* Not every file supports it: ``EOPNOTSUPP`` comes back for files without
  ``FMODE_NOWAIT`` (ttys, many character devices, some file systems), and
  Linux 6.x ext4 refuses ``RWF_NOWAIT`` on *buffered writes* the same way;
  ``EINVAL`` from kernels older than 4.14.  The first such answer turns the
  fast path off for that file and direction.
* ``RWF_NOWAIT`` never applies to ``O_DIRECT`` files: a direct read cannot be
  served from the page cache, and ``preadv2`` with ``RWF_NOWAIT`` on one still
  waits for the device to complete the transfer (``NOWAIT`` only means "do not
  wait to *start* it").  Such files never take this path.
* Never on a file whose file system "may block" (``_fs.py``): FUSE refuses
  the flag at once (``EOPNOTSUPP``, ``tests/FUSE_FACTS.md``), and the other
  such file systems are not known to honour it.
* The transfer is synchronous, so cancellation is simple: it is taken before
  the system call (``checkpoint_if_cancelled``) or not at all
  (``cancel_shielded_checkpoint`` after it), and no result is ever lost.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ._base import Lifecycle, fd_is_direct
from ._fs import classify

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .._loops import Loop

# Answers that mean "RWF_NOWAIT cannot be used on this file"; whatever takes
# the operation next gives the real answer, if there is an error at all.
_NO_FAST_PATH = frozenset({errno.EOPNOTSUPP, errno.EINVAL})

if sys.platform == "linux":
    HAVE_NOWAIT = hasattr(os, "RWF_NOWAIT")

    def nowait_readv(fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        """``preadv2(fd, buffers, offset, RWF_NOWAIT)``."""
        return os.preadv(fd, buffers, offset, os.RWF_NOWAIT)

    def nowait_writev(fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        """``pwritev2(fd, buffers, offset, RWF_NOWAIT)``."""
        return os.pwritev(fd, buffers, offset, os.RWF_NOWAIT)

else:
    HAVE_NOWAIT = False

    def nowait_readv(fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        """Not available here: always ``EOPNOTSUPP``."""
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    nowait_writev = nowait_readv


class NowaitFile(Lifecycle):
    """A backend file with the ``RWF_NOWAIT`` fast path.

    Subclasses say how to count what it does (:meth:`_count_dropped`,
    :meth:`_count_inline`).
    """

    __slots__ = ("_may_block", "_nowait_read", "_nowait_write", "_threaded_reads")

    def __init__(
        self,
        fd: int,
        reads: bool = True,
        writes: bool = True,
        fs: tuple[bool, bool] | None = None,
    ) -> None:
        super().__init__(fd)
        # ``fs``: ``_fs.classify(fd)``, if the caller has it already.
        self._may_block, self._threaded_reads = classify(fd) if fs is None else fs
        fast = HAVE_NOWAIT and (reads or writes) and not self._may_block and not fd_is_direct(fd)
        self._nowait_read = fast and reads
        self._nowait_write = fast and writes

    @property
    def may_block(self) -> bool:
        """Whether the file system may block in submission, ``lseek(SEEK_END)`` or ``fstat``.

        True for FUSE, NFS, CIFS/SMB, 9p, overlayfs and any file system not
        verified local (``_fs.py``): the file layer then does those calls in
        a worker thread.
        """
        return self._may_block

    def _count_dropped(self, loop: Loop, n: int) -> None:
        """``n`` operations were cancelled before their system call."""

    def _count_inline(self, loop: Loop, n: int) -> None:
        """``n`` operations ran on the event loop's thread (with or without an error)."""

    def _try_nowait(
        self, buffers: Sequence[Buffer], offset: int, write: bool
    ) -> int | OSError | None:
        """One ``RWF_NOWAIT`` transfer on the event loop's thread: its count or its error.

        None when it would block, or when the file refuses the flag (which
        turns the fast path off for this file and direction).
        """
        try:
            return (nowait_writev if write else nowait_readv)(self.fd, buffers, offset)
        except BlockingIOError:
            return None
        except OSError as exc:
            return None if self._refused(exc, write) else exc

    def _refused(self, exc: OSError, write: bool) -> bool:
        """Whether ``exc`` says the file refuses ``RWF_NOWAIT`` (then stop trying)."""
        if exc.errno not in _NO_FAST_PATH:
            return False
        if write:
            self._nowait_write = False
        else:
            self._nowait_read = False
        return True

    async def _before_inline(self, loop: Loop, n: int) -> None:
        """Take a pending cancellation (``n`` operations dropped) before any system call."""
        try:
            await loop.checkpoint_if_cancelled()
        except loop.Cancelled:
            self._count_dropped(loop, n)
            raise
        if self._closing:
            raise loop.ClosedResourceError("file is closed")

    async def _inline(
        self, loop: Loop, buffers: Sequence[Buffer], offset: int, write: bool
    ) -> int | None:
        """Try a non-blocking transfer on the event loop's thread.

        Returns None when it would block (or cannot be done that way here);
        the caller then takes the slow way, which is the checkpoint.
        Otherwise this is the checkpoint, and loses no result: a cancellation
        is taken before the system call or not at all.
        """
        await self._before_inline(loop, 1)
        res = self._try_nowait(buffers, offset, write)
        if res is None:
            return None
        self._count_inline(loop, 1)
        await loop.cancel_shielded_checkpoint()
        if isinstance(res, OSError):
            raise res
        return res

    async def _inline_many(
        self, loop: Loop, requests: Sequence[tuple[Buffer, int]], write: bool
    ) -> list[int | OSError] | None:
        """A whole batch on the event loop's thread, or None if one element would block.

        All or nothing: on the first element that would block, None is
        returned and the caller runs the whole batch the slow way (for reads
        that means reading again what was read here; for writes do not use
        this).  A checkpoint when it returns results, as :meth:`_inline`.
        """
        await self._before_inline(loop, len(requests))
        results: list[int | OSError] = []
        append = results.append
        transfer = nowait_writev if write else nowait_readv
        fd = self.fd
        for buffer, offset in requests:
            try:
                append(transfer(fd, [buffer], offset))
            except BlockingIOError:
                return None
            except OSError as exc:
                if self._refused(exc, write):
                    return None
                append(exc)
        self._count_inline(loop, len(requests))
        await loop.cancel_shielded_checkpoint()
        return results

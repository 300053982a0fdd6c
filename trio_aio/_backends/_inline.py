"""Transfers served on the event loop's thread when they need not wait: ``RWF_NOWAIT``.

One :class:`Inline` per file, held by the thread backend's and the io_uring
backend's files alike: a read of data that is
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
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from .. import _loops
from ._base import fd_is_direct

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .._statistics import Counters

# Answers that mean "RWF_NOWAIT cannot be used on this file"; whatever takes
# the operation next gives the real answer, if there is an error at all.
_NO_FAST_PATH = frozenset({errno.EOPNOTSUPP, errno.EINVAL})

if sys.platform == "linux":
    HAVE_NOWAIT = hasattr(os, "RWF_NOWAIT")
    _NOWAIT = getattr(os, "RWF_NOWAIT", 0)

    def nowait_readv(
        fd: int, buffers: Sequence[Buffer], offset: int, _preadv: Any = os.preadv
    ) -> int:
        """``preadv2(fd, buffers, offset, RWF_NOWAIT)``."""
        return _preadv(fd, buffers, offset, _NOWAIT)  # type: ignore[no-any-return]

    def nowait_writev(
        fd: int, buffers: Sequence[Buffer], offset: int, _pwritev: Any = os.pwritev
    ) -> int:
        """``pwritev2(fd, buffers, offset, RWF_NOWAIT)``."""
        return _pwritev(fd, buffers, offset, _NOWAIT)  # type: ignore[no-any-return]

else:
    HAVE_NOWAIT = False

    def nowait_readv(fd: int, buffers: Sequence[Buffer], offset: int) -> int:
        """Not available here: always ``EOPNOTSUPP``."""
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    nowait_writev = nowait_readv


class Inline:
    """The ``RWF_NOWAIT`` path of one file: which directions still try it, and the tries.

    ``reads``/``writes`` say whether a transfer in that direction should be
    tried inline first; the first refusal of the flag turns its direction off.
    """

    __slots__ = ("fd", "reads", "writes")

    def __init__(self, fd: int, enabled: bool) -> None:
        # ``enabled``: the file's file system is local and the backend wants
        # it (see the module docstring for who does not).
        self.fd = fd
        self.reads = self.writes = HAVE_NOWAIT and enabled and not fd_is_direct(fd)

    def attempt(self, buffers: Sequence[Buffer], offset: int, write: bool) -> int | OSError | None:
        """One ``RWF_NOWAIT`` transfer: its count or its error.

        None when it would block, or when the file refuses the flag (which
        turns the fast path off for this file and direction).  Not a
        checkpoint: the callers take the cancellation around it.
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
            self.writes = False
        else:
            self.reads = False
        return True

    async def transfer(
        self,
        loop: _loops.Loop,
        counters: Counters,
        buffers: Sequence[Buffer],
        offset: int,
        write: bool,
    ) -> int | None:
        """Try a transfer on the event loop's thread.

        Returns None when it would block (or cannot be done that way here);
        the caller then takes the slow way, which is the checkpoint.
        Otherwise this is the checkpoint, and loses no result: a cancellation
        is taken before the system call (counted as dropped) or not at all.
        """
        await before(loop, counters, 1)
        res = self.attempt(buffers, offset, write)
        if res is None:
            return None
        counters.inline += 1
        await loop.cancel_shielded_checkpoint()
        if isinstance(res, OSError):
            raise res
        return res

    async def read(
        self,
        loop: _loops.Loop,
        counters: Counters,
        size: int,
        offset: int,
        otherwise: Callable[[int, int], Awaitable[bytes]],
    ) -> bytes:
        """A read of up to ``size`` bytes into a new ``bytes``: inline, or ``otherwise``.

        The hot path of a cached read: :meth:`transfer` written out flat, and
        the slow way (``otherwise(size, offset)``) taken from here, so that
        the backend's ``pread`` can return this coroutine without one of its
        own around it.
        """
        try:
            await loop.checkpoint_if_cancelled()
        except loop.Cancelled:
            counters.dropped += 1
            raise
        data = bytearray(size)
        try:
            n = nowait_readv(self.fd, (data,), offset)
        except BlockingIOError:
            return await otherwise(size, offset)
        except OSError as exc:
            if self._refused(exc, False):
                return await otherwise(size, offset)
            counters.inline += 1
            await loop.cancel_shielded_checkpoint()
            raise
        counters.inline += 1
        await loop.cancel_shielded_checkpoint()
        if n < size:
            del data[n:]
        return bytes(data)

    async def transfer_many(
        self,
        loop: _loops.Loop,
        counters: Counters,
        requests: Sequence[tuple[Buffer, int]],
        write: bool,
    ) -> list[int | OSError] | None:
        """A whole batch on the event loop's thread, or None if one element would block.

        All or nothing: on the first element that would block, None is
        returned and the caller runs the whole batch the slow way (for reads
        that means reading again what was read here; for writes do not use
        this).  A checkpoint when it returns results, as :meth:`transfer`.
        """
        await before(loop, counters, len(requests))
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
        counters.inline += len(requests)
        await loop.cancel_shielded_checkpoint()
        return results


async def before(loop: _loops.Loop, counters: Counters, n: int) -> None:
    """Take a pending cancellation before anything runs (``n`` operations dropped)."""
    try:
        await loop.checkpoint_if_cancelled()
    except loop.Cancelled:
        counters.dropped += n
        raise

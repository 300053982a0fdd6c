"""Which files sit on a file system that can block the event loop.

io_uring tries a read or write inline, inside ``io_uring_enter`` on the
event loop's thread, and hands it to an io-wq worker only when the file
system says it would block.  Some file systems block without saying so, and
some give wrong answers on the way (measured on Linux 6.18 with the FUSE file
system of the tests, ``tests/fusefs.py``; the measurements are in
``tests/FUSE_FACTS.md``):

* **FUSE** in direct-I/O mode sends the request to the daemon inline: the
  loop is frozen for the whole request.  A short READ reply makes io_uring
  retry the rest from a stale offset and return wrong bytes, *with or
  without* ``IOSQE_ASYNC``; and the position never moves for a transfer at
  offset -1.  ``RWF_NOWAIT`` fails at once with ``EOPNOTSUPP``.
  ``lseek(SEEK_END)``, ``fstat`` and ``fstatfs`` send the daemon a request
  and wait for its answer; ``lseek(SEEK_SET/SEEK_CUR)`` and
  ``fcntl(F_GETFL)`` do not.
* **NFS, CIFS/SMB, 9p** wait for a server; **overlayfs** forwards to an
  upper or lower file system that may be any of these.

So every file "may block" unless its file system is on a short allow-list
of local file systems that honour ``IOCB_NOWAIT`` (they set ``FMODE_NOWAIT``
and return ``EAGAIN`` instead of waiting for a device): ext2/3/4, xfs,
btrfs, tmpfs (devtmpfs is tmpfs); and pipes and sockets (io_uring polls
them; no file system is involved).  For a file that may block, the io_uring
backend sets ``IOSQE_ASYNC`` on every operation (straight to an io-wq
worker: ``io_uring_enter`` never runs it inline), neither backend tries
``RWF_NOWAIT`` on the loop's thread, and the file layer does its
``lseek(SEEK_END)`` and ``fstat`` in a worker thread.

FUSE reads (and reads on a file system we cannot name) go to worker
threads, even on io_uring: ``pread(2)`` returns a short count, and the file
layer asks again from the right offset.  We cannot tell a direct-I/O open
from a cached one, so every FUSE read takes a thread.  FUSE writes stay on
the ring with ``IOSQE_ASYNC``: a short WRITE reply is a short result, not
retried, and a cancel reaches the daemon as ``FUSE_INTERRUPT`` (a thread
could not be interrupted at all).

How we ask, without asking the file system
------------------------------------------

The obvious question, ``fstatfs(2)``'s ``f_type``, is the wrong one: FUSE
answers it by sending the daemon a ``FUSE_STATFS`` request (every time,
whatever the attribute timeouts), and NFS asks its server, so the check
itself would block the loop on exactly the files it is meant to find.
``fstat`` likewise sends ``GETATTR``.  Instead:

1. ``statx(fd, "", AT_EMPTY_PATH | AT_STATX_DONT_SYNC, 0)`` gives the file's
   type and device number from what the kernel has cached: with
   ``AT_STATX_DONT_SYNC`` and an empty mask, FUSE and NFS answer without a
   request.  (Through glibc's ``statx`` in cffi's ABI mode: Python's ``os``
   has no ``statx`` before 3.15, and ``struct statx`` is a fixed UAPI
   layout, so nothing needs compiling.)
2. The device number is looked up in ``/proc/self/mountinfo``, which names
   each mount's file system type (``fuse.sshfs``, ``nfs4``, ``ext4``...).
   Reading it asks no file system.  The answers are cached per device, and
   the cache is dropped whenever the mount table changes: the kernel marks
   an open ``mountinfo`` with ``POLLPRI`` after every mount and unmount, so
   a device number reused by a new mount is never answered from the old
   one.  A device that is not in the table (a btrfs subvolume has a device
   number of its own; an fd from another mount namespace) "may block".
"""

from __future__ import annotations

import os
import select
import stat
import struct
import sys
import threading
from collections.abc import Callable
from typing import Any

# Local file systems verified not to block in submission (see the docstring),
# as /proc/self/mountinfo names them.
LOCAL_FILESYSTEMS = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "devtmpfs"})

_AT_EMPTY_PATH = 0x1000
_AT_STATX_DONT_SYNC = 0x4000
# struct statx (<linux/stat.h>): stx_mode is a u16 at 28, stx_dev_major and
# stx_dev_minor are u32s at 136 and 140; the struct is 256 bytes.
_STATX_SIZE = 256
_MODE = struct.Struct("=H")
_DEV = struct.Struct("=II")


if sys.platform == "linux":  # (and mypy --platform checks the rest everywhere)

    class _Statx:
        """glibc's ``statx``, loaded on first use (None where it is missing)."""

        def __init__(self) -> None:
            import cffi

            self.ffi = cffi.FFI()
            self.ffi.cdef(
                "int statx(int dirfd, const char *path, int flags, unsigned int mask, void *buf);"
            )
            lib = self.ffi.dlopen(None)
            # AttributeError here if glibc is older than 2.28.
            self._call: Callable[..., int] = getattr(lib, "statx")  # noqa: B009 - cffi's Lib

        def type_and_device(self, fd: int) -> tuple[int, int] | None:
            """(st_mode, st_dev) from what the kernel has cached, or None."""
            buf = self.ffi.new("char[]", _STATX_SIZE)
            if self._call(fd, b"", _AT_EMPTY_PATH | _AT_STATX_DONT_SYNC, 0, buf) != 0:
                return None
            raw = self.ffi.buffer(buf)
            (mode,) = _MODE.unpack_from(raw, 28)
            major, minor = _DEV.unpack_from(raw, 136)
            return mode, os.makedev(major, minor)

    class _MountTable:
        """File system types by device number, from ``/proc/self/mountinfo``."""

        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._types: dict[int, str] | None = None
            # Kept open for the life of the process: its POLLPRI is the signal.
            self._fd = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            self._poll = select.poll()
            self._poll.register(self._fd, select.POLLPRI)

        def fstype(self, dev: int) -> str | None:
            """The type of the file system mounted from ``dev``, or None if it is not mounted."""
            with self._lock:
                if self._poll.poll(0):  # a mount or an unmount since we last looked
                    self._types = None
                if self._types is None:
                    self._types = self._read()
                return self._types.get(dev)

        def _read(self) -> dict[int, str]:
            os.lseek(self._fd, 0, os.SEEK_SET)
            chunks = []
            while chunk := os.read(self._fd, 1 << 16):
                chunks.append(chunk)
            types: dict[int, str] = {}
            for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
                # 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
                fields = line.split()
                try:
                    major, minor = fields[2].split(":")
                    fstype = fields[fields.index("-", 6) + 1]
                except (IndexError, ValueError):
                    continue
                types.setdefault(os.makedev(int(major), int(minor)), fstype)
            return types


_statx: Any = None  # _Statx, once loaded
_mounts: Any = None  # _MountTable, once loaded
_unavailable = False


def _lookups() -> tuple[Any, Any] | None:
    """The loaded (_Statx, _MountTable) pair, or None where they cannot work (Linux only)."""
    global _statx, _mounts, _unavailable
    if _statx is None or _mounts is None:
        if _unavailable or sys.platform != "linux":
            return None
        if sys.platform == "linux":  # (for mypy --platform)
            try:
                _statx, _mounts = _Statx(), _MountTable()
            except (OSError, AttributeError):
                _unavailable = True
                return None
    return _statx, _mounts


def _describe(fd: int) -> tuple[int, str | None] | None:
    """(st_mode, the file system's type or None if not mounted), or None if not known here."""
    lookups = _lookups()
    if lookups is None:
        return None
    found = lookups[0].type_and_device(fd)
    if found is None:
        return None
    mode, dev = found
    fstype: str | None = lookups[1].fstype(dev)
    return mode, fstype


def filesystem_type(fd: int) -> str | None:
    """The type of the file system holding ``fd``, as mountinfo names it; None if unknown.

    Never asks the file system itself (see the module docstring).
    """
    described = _describe(fd)
    return None if described is None else described[1]


def classify(fd: int) -> tuple[bool, bool]:
    """(may block in submission, reads need a worker thread): see the module docstring.

    Off Linux: (False, False): nothing is submitted inline there, and no
    file system has been measured.
    """
    if sys.platform != "linux":
        return False, False
    described = _describe(fd)
    if described is None:
        return True, True
    mode, fstype = described
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or fstype in LOCAL_FILESYSTEMS:
        return False, False
    return True, fstype is None or fstype.startswith("fuse")

"""Which files sit on a file system that can block the event loop.

io_uring tries a read or write inline, inside ``io_uring_enter`` on the
event loop's thread, and hands it to an io-wq worker only when the file
system says it would block.  Some file systems block without saying so, and
some give wrong answers on the way (facts measured in ``tests/fusefs.py``'s
tests and ``/work/shared/notes/FACTS.md``):

* **FUSE** in direct-I/O mode issues the request to the daemon inline: the
  loop is frozen for the whole request; a short read is retried by the
  kernel from a stale offset (wrong bytes); ``-EINTR`` comes back on reads
  nobody cancelled.
* **NFS, CIFS/SMB, 9p** wait for a server; **overlayfs** forwards to an
  upper or lower file system that may be any of these.

So every file is "may block" unless its file system is on a short allow-list
of local file systems that honour ``IOCB_NOWAIT`` (they set ``FMODE_NOWAIT``
and return ``EAGAIN`` instead of waiting for a device): ext2/3/4 (one
driver), xfs, btrfs and tmpfs; and pipefs and sockfs (anonymous pipes and
sockets: io_uring polls them, no file system is involved).  Anything else,
or an answer we cannot get, is "may block".  For such a file the io_uring
backend sets ``IOSQE_ASYNC`` on every operation (straight to an io-wq
worker: ``io_uring_enter`` never runs it inline), and neither backend tries
``RWF_NOWAIT`` on the loop's thread (useless on FUSE: it fails with
``EOPNOTSUPP`` at once; unknown elsewhere).  The file layer does its
``lseek(SEEK_END)`` and ``fstat`` in a worker thread (both may call the
daemon or the server).

FUSE reads go to worker threads, even on io_uring (measured on Linux 6.18,
``FUSE_FACTS.md`` of the FUSE test file system): on a direct-I/O FUSE file
a short READ reply makes io_uring retry the rest from a stale offset and
return wrong bytes, *with or without* ``IOSQE_ASYNC``; ``pread(2)`` returns
the short count, and the file layer asks again from the right offset.  We
cannot tell a direct-I/O open from a cached one, so every FUSE read takes a
thread.  FUSE writes stay on the ring with ``IOSQE_ASYNC``: a short WRITE
reply is a short result, not retried, and a cancel reaches the daemon as
``FUSE_INTERRUPT`` (a thread could not be interrupted at all).

How we ask: ``fstatfs(2)``'s ``f_type``, once per open, nothing cached (a
path can be mounted over, a mount id reused).  Python's ``os`` has
``fstatvfs`` but no ``fstatfs``, and ``struct statfs``'s layout differs
between architectures (``f_type`` is a ``long`` on most, an ``int`` on
s390x), so the call lives in the compiled ring extension (``ring.c``, API
mode: the compiler knows the layout) rather than in cffi's ABI mode.  Where
the extension is not built, every file is "may block".

A fact to know: ``fstatfs`` itself reaches the file system: FUSE sends the
daemon a ``FUSE_STATFS`` request and NFS asks its server.  So on those file
systems the check costs one round trip on the loop's thread at open (after
an ``open`` that already asked them).  Avoiding it would take
``statx(STATX_MNT_ID)`` and ``statmount`` (Linux 6.8) or parsing
``/proc/self/mountinfo`` (about 60 µs per open here); not done yet.
"""

from __future__ import annotations

import sys

# statfs.f_type values (<linux/magic.h>).
EXT4_SUPER_MAGIC = 0xEF53  # also ext2 and ext3: one driver
XFS_SUPER_MAGIC = 0x58465342
BTRFS_SUPER_MAGIC = 0x9123683E
TMPFS_MAGIC = 0x01021994
FUSE_SUPER_MAGIC = 0x65735546
NFS_SUPER_MAGIC = 0x6969
CIFS_SUPER_MAGIC = 0xFF534D42
SMB2_SUPER_MAGIC = 0xFE534D42
V9FS_MAGIC = 0x01021997
OVERLAYFS_SUPER_MAGIC = 0x794C7630
PIPEFS_MAGIC = 0x50495045
SOCKFS_MAGIC = 0x534F434B

# Local file systems verified not to block in submission (see the docstring).
LOCAL_MAGICS = frozenset(
    {
        EXT4_SUPER_MAGIC,
        XFS_SUPER_MAGIC,
        BTRFS_SUPER_MAGIC,
        TMPFS_MAGIC,
        PIPEFS_MAGIC,
        SOCKFS_MAGIC,
    }
)


def fs_magic(fd: int) -> int | None:
    """``fstatfs(fd).f_type``, or None if it cannot be had (no extension, an error)."""
    if sys.platform != "linux":
        return None
    try:
        from .._ring._cring import lib
    except ImportError:  # pragma: no cover - only where the build skipped the extension
        return None
    magic = int(lib.tai_fs_magic(fd))
    return None if magic < 0 else magic


def classify(fd: int) -> tuple[bool, bool]:
    """(may block in submission, reads need a worker thread): see the module docstring."""
    if sys.platform != "linux":
        return False, False
    magic = fs_magic(fd)
    return magic not in LOCAL_MAGICS, magic == FUSE_SUPER_MAGIC


def may_block(fd: int) -> bool:
    """Whether operations on ``fd`` may block in submission (see the module docstring).

    Off Linux: False (nothing is submitted inline there, and no file system
    has been measured).
    """
    return classify(fd)[0]

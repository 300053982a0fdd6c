"""FreeBSD's POSIX AIO control blocks, through cffi in ABI mode: layout, lifetime, results.

This module knows the memory of ``struct aiocb`` and the rules of FreeBSD's
``vfs_aio.c``, and nothing of trio: it fills control blocks, keeps what the
kernel will touch alive, and turns what ``aio_error``/``aio_return`` say into
results.  It calls libc only through a :class:`Libc` object, so every rule
here is tested on any system against a fake kernel (``tests/fake_freebsd.py``);
the backend that waits on trio's kqueue is ``_backend.py``.

Why cffi's ABI mode
-------------------

* The structures are written out below, field by field, from FreeBSD 14's
  ``<sys/aio.h>`` and ``<sys/signal.h>``, with no ``...``: cffi lays them out
  by the C rules of the host, so the layout is known (and tested, see
  ``tests/test_aiocb.py``) on any LP64 system, and checked against the real
  header by a test that compiles ``offsetof`` on FreeBSD.
* Nothing is compiled at install time: no C compiler, no FreeBSD headers, no
  second extension beside the io_uring one.  The functions are plain libc
  system-call wrappers, found with ``dlopen(NULL)``.
* The price is that a wrong field is not caught by a compiler; hence the
  layout tests and the FreeBSD CI job.

Some facts about FreeBSD's AIO (``sys/kern/vfs_aio.c``, FreeBSD 13 and 14)
--------------------------------------------------------------------------

* A job submitted with ``sigev_notify = SIGEV_KEVENT`` gets a knote on the
  named kqueue, registered at submission: ident = the control block's address
  (the user-space one), filter ``EVFILT_AIO``, flags ``EV_ADD | EV_ENABLE |``
  the ``sigev_notify_kevent_flags`` (only ``EV_ONESHOT``, ``EV_CLEAR`` and
  ``EV_DISPATCH`` are allowed; anything else is ``EINVAL``).  trio needs
  ``EV_ONESHOT`` (see ``_kqueue.py``).
* When the submission itself fails (``aio_read`` returns -1), the knote is
  deleted again: no event will come.
* ``_aiocb_private`` is the kernel's scratch space in *our* memory: the
  kernel writes ``status = -1``, ``error = 0`` there when it starts looking at
  a job, and ``error`` = the reason when it refuses it.  ``aio_error`` on a
  control block the kernel does not know answers from those fields ("hack
  for failure of aio_aqueue"), else ``EINVAL``.  So a block is zeroed before
  use, and its results are read only through ``aio_error``/``aio_return``.
* ``aio_return`` must be called exactly once per job the kernel took: it
  frees the kernel's job.  Until then the control block, its buffers and its
  ``iovec`` array must stay where they are.
* ``EOPNOTSUPP``: "unsafe" AIO.  Only regular files and directories on local
  file systems (UFS, ZFS, tmpfs), disks and sockets are safe; pipes, FIFOs,
  NFS files and the like are refused unless ``vfs.aio.enable_unsafe=1``.
* ``EAGAIN``: the queue is full (``vfs.aio.max_aio_queue_per_proc``, default
  256, and ``vfs.aio.max_aio_queue``, global).
* A negative offset is ``EINVAL`` except on character devices: AIO has no
  "current file position".
* ``lio_listio(LIO_NOWAIT, list, n, sigevent)``: with ``SIGEV_KEVENT`` the
  kernel registers an ``EVFILT_LIO`` knote, ident = the address of ``list``
  (the array of pointers, so it must stay put), before queueing any job.  It
  then queues each job as ``aio_read``/``aio_write`` would (in FreeBSD 14
  only ``LIO_READ``, ``LIO_WRITE`` and ``LIO_NOP`` are accepted in a list:
  vectored jobs are ``EINVAL`` there) and returns -1 with ``EAGAIN`` if some
  were refused for lack of room, ``EIO`` if some were refused for any other
  reason; each refused job's reason is then its ``aio_error``.  The list's
  event fires once every *queued* job has finished; it is level-triggered
  (no ``EV_ONESHOT``) and the knote goes away when the last queued job has
  been collected with ``aio_return``.  If no job was queued, no event ever
  comes.  Hence: collect whatever is finished, and wait for the event only
  while some job still says ``EINPROGRESS``.  A list longer than
  ``vfs.aio.max_aio_queue_per_proc`` is ``EINVAL`` as a whole (the default,
  256, is far above ``AIO_LISTIO_MAX``).
* ``aio_cancel(fd, cb)``: a job still queued is completed at once with
  ``ECANCELED`` (``AIO_CANCELED``) and its event is posted like any other; a
  job already running is ``AIO_NOTCANCELED`` and finishes normally;
  ``AIO_ALLDONE`` if it had finished.  Either way the event comes.
* ``aio_fsync(op, cb)`` takes ``O_SYNC`` (0x0080) or, since FreeBSD 13,
  ``O_DSYNC`` (0x01000000), and waits for the writes queued before it.
* ``aio_readv``/``aio_writev`` appeared in FreeBSD 13.0 (``aio_iov`` and
  ``aio_iovcnt`` share ``aio_buf`` and ``aio_nbytes``).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol

import cffi

__all__ = [
    "AIO_ALLDONE",
    "AIO_CANCELED",
    "AIO_LISTIO_MAX",
    "AIO_NOTCANCELED",
    "CDEF",
    "FALLBACK_ERRNOS",
    "LIO_NOWAIT",
    "LIO_READ",
    "LIO_WRITE",
    "Job",
    "JobList",
    "Libc",
    "ffi",
    "load_libc",
]

CDEF = """
union sigval {
    int sival_int;
    void *sival_ptr;
};

struct sigevent {
    int sigev_notify;
    int sigev_signo;                /* sigev_notify_kqueue for SIGEV_KEVENT */
    union sigval sigev_value;
    union {
        int32_t _threadid;          /* __lwpid_t */
        struct {
            void (*_function)(union sigval);
            void **_attribute;
        } _sigev_thread;
        unsigned short _kevent_flags;   /* sigev_notify_kevent_flags */
        long __spare__[8];
    } _sigev_un;
};

struct iovec {
    void *iov_base;
    size_t iov_len;
};

struct __aiocb_private {
    long status;
    long error;
    void *kernelinfo;
};

struct aiocb {
    int aio_fildes;
    int64_t aio_offset;             /* off_t: 64 bits on every FreeBSD */
    void *aio_buf;                  /* aio_iov for the vectored calls */
    size_t aio_nbytes;              /* aio_iovcnt for the vectored calls */
    int __spare__[2];
    void *__spare2__;
    int aio_lio_opcode;
    int aio_reqprio;
    struct __aiocb_private _aiocb_private;
    struct sigevent aio_sigevent;
};

int aio_read(struct aiocb *);
int aio_write(struct aiocb *);
int aio_readv(struct aiocb *);
int aio_writev(struct aiocb *);
int aio_fsync(int, struct aiocb *);
int aio_error(const struct aiocb *);
ssize_t aio_return(struct aiocb *);
int aio_cancel(int, struct aiocb *);
int lio_listio(int, struct aiocb * const *, int, struct sigevent *);
"""

# Typed as Any: cffi's stubs know nothing of the structs and functions above.
ffi: Any = cffi.FFI()
ffi.cdef(CDEF)

# <sys/signal.h>, <sys/aio.h>, <sys/fcntl.h>, <sys/event.h> (FreeBSD 14)
SIGEV_NONE = 0
SIGEV_KEVENT = 3
AIO_CANCELED = 1
AIO_NOTCANCELED = 2
AIO_ALLDONE = 3
LIO_NOP = 0
LIO_WRITE = 1
LIO_READ = 2
LIO_NOWAIT = 0
AIO_LISTIO_MAX = 16
O_SYNC = 0x0080
O_DSYNC = 0x01000000
EV_ONESHOT = 0x0010

# Refusals at submission that mean "not asynchronously, not now": the
# operation is done in a worker thread instead.
FALLBACK_ERRNOS = frozenset({errno.EAGAIN, errno.EOPNOTSUPP})


class Libc(Protocol):
    """The libc calls this module makes (``ffi.dlopen(None)`` on FreeBSD; a fake in tests).

    Each returns what the C function returns; after a -1, :attr:`errno`
    holds the reason.
    """

    def aio_read(self, cb: Any) -> int: ...
    def aio_write(self, cb: Any) -> int: ...
    def aio_readv(self, cb: Any) -> int: ...
    def aio_writev(self, cb: Any) -> int: ...
    def aio_fsync(self, op: int, cb: Any) -> int: ...
    def aio_error(self, cb: Any) -> int: ...
    def aio_return(self, cb: Any) -> int: ...
    def aio_cancel(self, fd: int, cb: Any) -> int: ...
    def lio_listio(self, mode: int, cbs: Any, n: int, sig: Any) -> int: ...

    @property
    def errno(self) -> int:
        """The C ``errno`` after the last call."""
        ...


class _CffiLibc:
    """The real libc, through cffi's ABI mode."""

    def __init__(self) -> None:
        lib = ffi.dlopen(None)
        self.aio_read = lib.aio_read
        self.aio_write = lib.aio_write
        self.aio_fsync = lib.aio_fsync
        self.aio_error = lib.aio_error
        self.aio_return = lib.aio_return
        self.aio_cancel = lib.aio_cancel
        self.lio_listio = lib.lio_listio
        self.aio_readv = lib.aio_readv  # FreeBSD 13+
        self.aio_writev = lib.aio_writev

    @property
    def errno(self) -> int:
        return int(ffi.errno)


_libc: Libc | None = None
_libc_problem: str | None = None


def load_libc() -> Libc:
    """The AIO functions of libc (FreeBSD only); raises ``OSError`` with the reason elsewhere."""
    global _libc, _libc_problem
    if _libc is None:
        if _libc_problem is None:
            if not sys.platform.startswith("freebsd"):
                _libc_problem = f"AIO with kqueue events is FreeBSD's; this is {sys.platform}"
            else:
                try:
                    _libc = _CffiLibc()
                except AttributeError:  # aio_readv, aio_writev and O_DSYNC came with 13.0
                    _libc_problem = "posix_aio needs FreeBSD 13 or newer (no aio_readv)"
                except OSError as exc:
                    _libc_problem = f"libc's AIO functions cannot be loaded: {exc}"
        if _libc is None:
            raise OSError(errno.ENOSYS, _libc_problem)
    return _libc


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


class Job:
    """One control block and everything the kernel may touch through it.

    An :class:`~trio_aio.lowlevel.AioSource`: its :attr:`ident` is the
    control block's address.  Create it, wrap it in ``Aio.for_aio`` (which
    calls :meth:`register`), :meth:`submit` it, wait, then :meth:`collect`.
    """

    __slots__ = ("_keep", "_libc", "cancel_requested", "cb", "fd", "submitted")

    def __init__(
        self,
        libc: Libc,
        fd: int,
        offset: int,
        address: int = 0,
        nbytes: int = 0,
        opcode: int = LIO_NOP,
        keep: object = None,
    ) -> None:
        self._libc = libc
        self.fd = fd
        self.cb = ffi.new("struct aiocb *")  # zeroed: see the facts above
        cb = self.cb
        cb.aio_fildes = fd
        cb.aio_offset = offset
        cb.aio_buf = ffi.cast("void *", address)
        cb.aio_nbytes = nbytes
        cb.aio_lio_opcode = opcode
        self._keep = keep  # the buffers (and iovec array) the kernel reads or fills
        self.submitted = False  # the kernel may hold it: aio_cancel means something
        self.cancel_requested = False

    @classmethod
    def transfer(cls, libc: Libc, fd: int, buffer: Any, offset: int, write: bool) -> Job:
        """A read into (or a write from) one buffer, also usable in a list."""
        cbuf = ffi.from_buffer(buffer, require_writable=not write)
        return cls(
            libc, fd, offset, _address(cbuf), len(cbuf), LIO_WRITE if write else LIO_READ, cbuf
        )

    @classmethod
    def vectored(
        cls, libc: Libc, fd: int, buffers: Sequence[Any], offset: int, write: bool
    ) -> Job:
        """An ``aio_readv``/``aio_writev`` over ``buffers``."""
        iov = ffi.new("struct iovec[]", len(buffers))
        keep: list[Any] = [iov]
        for i, buffer in enumerate(buffers):
            cbuf = ffi.from_buffer(buffer, require_writable=not write)
            keep.append(cbuf)
            iov[i].iov_base = cbuf
            iov[i].iov_len = len(cbuf)
        return cls(libc, fd, offset, _address(iov), len(buffers), LIO_NOP, keep)

    # -- AioSource -------------------------------------------------------------

    @property
    def ident(self) -> int:
        """The control block's address: the ident of its ``EVFILT_AIO`` event."""
        return _address(self.cb)

    def register(self, kqueue_fd: int, udata: int) -> None:
        """Ask for an ``EV_ONESHOT`` kevent on ``kqueue_fd`` when the job is done."""
        sig = self.cb.aio_sigevent
        sig.sigev_notify = SIGEV_KEVENT
        sig.sigev_signo = kqueue_fd  # sigev_notify_kqueue
        sig.sigev_value.sival_ptr = ffi.cast("void *", udata)
        sig._sigev_un._kevent_flags = EV_ONESHOT

    def deregister(self) -> None:
        """Nothing to undo: the kernel's knote went with the oneshot event."""

    def cancel(self) -> None:
        """``aio_cancel``: the job ends with ``ECANCELED`` if it had not started."""
        if self.submitted and not self.cancel_requested:
            self.cancel_requested = True
            self._libc.aio_cancel(self.fd, self.cb)

    # -- the job ---------------------------------------------------------------

    def submit(self, call: str, *args: int) -> OSError | None:
        """``aio_<call>(cb)``; the reason the kernel refused it, or None if it took it."""
        libc = self._libc
        if getattr(libc, f"aio_{call}")(*args, self.cb) == 0:
            self.submitted = True
            return None
        return _error(libc.errno)

    def release(self) -> None:
        """Let go of the buffers (the kernel has): a ``bytearray`` can be resized again."""
        keep, self._keep = self._keep, None
        for cdata in keep if isinstance(keep, list) else () if keep is None else (keep,):
            ffi.release(cdata)

    def done(self) -> bool:
        """Whether the kernel has finished with the job (``aio_error`` is not ``EINPROGRESS``)."""
        return self._libc.aio_error(self.cb) != errno.EINPROGRESS

    def collect(self) -> int | OSError:
        """The job's result, from ``aio_error`` and ``aio_return`` (call once, when done).

        ``aio_return`` frees the kernel's job; a job the kernel refused (in a
        list) has none, and ``aio_error``'s answer is its result.
        """
        libc = self._libc
        code = libc.aio_error(self.cb)
        if code == errno.EINPROGRESS:
            raise RuntimeError("trio_aio: an AIO job was collected before it finished")
        n = libc.aio_return(self.cb)
        self.submitted = False
        self.release()
        if code == 0 and n >= 0:
            return n
        return _error(code if code > 0 else libc.errno)


class JobList:
    """Up to ``AIO_LISTIO_MAX`` jobs submitted with one ``lio_listio(LIO_NOWAIT, ...)``.

    An :class:`~trio_aio.lowlevel.AioSource` for ``Aio.for_lio``: its
    :attr:`ident` is the address of the array of pointers, which stays put
    for the life of the list; its :meth:`register` fills the list's own
    ``sigevent``.  The jobs' own ``sigevent`` stays ``SIGEV_NONE``.
    """

    __slots__ = ("_libc", "array", "jobs", "sig")

    def __init__(self, libc: Libc, jobs: Sequence[Job]) -> None:
        if not 0 < len(jobs) <= AIO_LISTIO_MAX:
            raise ValueError(f"a list holds 1 to {AIO_LISTIO_MAX} jobs, not {len(jobs)}")
        self._libc = libc
        self.jobs = list(jobs)
        self.array = ffi.new("struct aiocb *[]", [job.cb for job in jobs])
        self.sig = ffi.new("struct sigevent *")

    @property
    def ident(self) -> int:
        """The address of the array of control-block pointers (``EVFILT_LIO``'s ident)."""
        return _address(self.array)

    def register(self, kqueue_fd: int, udata: int) -> None:
        """Ask for the list's kevent on ``kqueue_fd`` (level-triggered: no flags)."""
        sig = self.sig
        sig.sigev_notify = SIGEV_KEVENT
        sig.sigev_signo = kqueue_fd
        sig.sigev_value.sival_ptr = ffi.cast("void *", udata)

    def deregister(self) -> None:
        """Nothing to undo: the kernel deletes the knote when the jobs are collected."""

    def cancel(self) -> None:
        """``aio_cancel`` every job that may still be queued."""
        for job in self.jobs:
            job.cancel()

    def submit(self) -> OSError | None:
        """``lio_listio(LIO_NOWAIT, ...)``.

        None if every job was queued, or if some were refused one by one
        (``EAGAIN``, ``EIO``: each job's :meth:`Job.collect` says why); the
        error if the call failed as a whole and no job was queued.
        """
        libc = self._libc
        for job in self.jobs:
            job.submitted = True  # aio_cancel is harmless on a job the kernel refused
        if libc.lio_listio(LIO_NOWAIT, self.array, len(self.jobs), self.sig) == 0:
            return None
        code = libc.errno
        if code in (errno.EAGAIN, errno.EIO):
            return None
        for job in self.jobs:
            job.submitted = False
        return _error(code)

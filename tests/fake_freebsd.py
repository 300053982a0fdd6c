"""FreeBSD's AIO, as ``vfs_aio.c`` (FreeBSD 14) answers a process, on any OS, for tests.

:class:`FakeKernel` is a :class:`trio_aio._freebsd._aiocb.Libc`: it reads the
control blocks the backend filled in (fd, offset, buffer address, opcode,
``sigevent``), does the I/O on the real fd into and out of that memory, keeps
the job until ``aio_return``, and posts kevents to a :class:`FakeKqueue`
(trio's bookkeeping: an event nobody registered for is a ``KeyError``, as it
would crash trio's loop).  Events are posted with ``run_sync_soon``, i.e. after
the submitting task has gone to sleep, as the real kernel's arrive at trio's
next ``kevent()``.

The rules it follows are the ones written down in ``_aiocb.py``: refusals
leave their reason in ``_aiocb_private`` and post nothing; FIFOs are
"unsafe" (``EOPNOTSUPP``); a full queue is ``EAGAIN``; a list posts its
level-triggered ``EVFILT_LIO`` event once every queued job has finished and
forgets it when they have all been collected.

Jobs are done by "AIO daemons" at the next turn of trio's loop (a
``run_sync_soon`` callback), or before the submitting call returns with
:attr:`FakeKernel.synchronous`.  Slow jobs, deterministically: with
:attr:`FakeKernel.hold` set, jobs stay in progress until
:meth:`FakeKernel.release`; ``aio_cancel`` stops them
(``AIO_CANCELED``) unless :attr:`FakeKernel.running` says they have started.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any

import trio
from fake_kqueue import FakeKqueue

from trio_aio._freebsd import _aiocb as A
from trio_aio._freebsd._aiocb import ffi
from trio_aio._freebsd._kqueue import EV_CLEAR, EV_ONESHOT, EVFILT_AIO, EVFILT_LIO

EV_DISPATCH = 0x0080
EV_EOF = 0x8000
LIO_VECTORED = 4
LIO_READV = 6
LIO_WRITEV = 5
LIO_SYNC = 8
LIO_DSYNC = 0x18


def _addr(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


class FakeJob:
    def __init__(self, cb: Any, opcode: int, lio: FakeList | None) -> None:
        self.cb = cb
        self.address = _addr(cb)
        self.opcode = opcode
        self.lio = lio
        self.fd = int(cb.aio_fildes)
        self.offset = int(cb.aio_offset)
        self.buf = _addr(cb.aio_buf)
        self.nbytes = int(cb.aio_nbytes)
        sig = cb.aio_sigevent
        self.notify = int(sig.sigev_notify)
        self.kqueue_fd = int(sig.sigev_signo)
        self.kevent_flags = int(sig._sigev_un._kevent_flags)
        self.udata = _addr(sig.sigev_value.sival_ptr)
        self.done = False
        self.status = -1
        self.error = errno.EINPROGRESS


class FakeList:
    def __init__(self, ident: int, notify: int, kqueue_fd: int) -> None:
        self.ident = ident
        self.notify = notify
        self.kqueue_fd = kqueue_fd
        self.count = 0  # jobs queued and not yet collected
        self.finished = 0
        self.queueing = True
        self.posted = 0


class FakeKernel:
    """libc's AIO calls over real fds, with FreeBSD's answers (see the module docs)."""

    def __init__(self) -> None:
        self.kqueues: dict[int, FakeKqueue] = {}  # by fd: one per trio run
        self._run_kqueue: trio.lowlevel.RunVar[FakeKqueue] = trio.lowlevel.RunVar("fake kqueue")
        self.errno = 0
        self.jobs: dict[int, FakeJob] = {}  # by control-block address, until aio_return
        self.lists: dict[int, FakeList] = {}
        self.max_queue = 256  # vfs.aio.max_aio_queue_per_proc (also caps a list's length)
        self.max_queue_global = 1024  # vfs.aio.max_aio_queue
        self.hold = False  # jobs stay in progress until release()
        self.synchronous = False  # jobs are done before the submitting call returns
        self.running = False  # aio_cancel finds held jobs already started
        self.refuse: dict[int, int] = {}  # opcode -> errno for the next submissions
        self.calls: list[str] = []
        self.cancels = 0

    def current_kqueue(self) -> FakeKqueue:
        """The running trio run's kqueue (what the backend's ``kqueue()`` returns)."""
        try:
            return self._run_kqueue.get()
        except LookupError:
            kqueue = FakeKqueue(1000 + len(self.kqueues))
            self.kqueues[kqueue.fd] = kqueue
            self._run_kqueue.set(kqueue)
            return kqueue

    # -- libc ----------------------------------------------------------------------

    def _fail(self, code: int) -> int:
        self.errno = code
        return -1

    def aio_read(self, cb: Any) -> int:
        return self._submit(cb, A.LIO_READ)

    def aio_write(self, cb: Any) -> int:
        return self._submit(cb, A.LIO_WRITE)

    def aio_readv(self, cb: Any) -> int:
        return self._submit(cb, LIO_READV)

    def aio_writev(self, cb: Any) -> int:
        return self._submit(cb, LIO_WRITEV)

    def aio_fsync(self, op: int, cb: Any) -> int:
        if op == A.O_SYNC:
            return self._submit(cb, LIO_SYNC)
        if op == A.O_DSYNC:
            return self._submit(cb, LIO_DSYNC)
        return self._fail(errno.EINVAL)

    def _submit(self, cb: Any, opcode: int) -> int:
        self.calls.append(f"aio {opcode}")
        code = self._aqueue(cb, None, opcode)
        return 0 if code == 0 else self._fail(code)

    def aio_error(self, cb: Any) -> int:
        job = self.jobs.get(_addr(cb))
        if job is not None:
            return job.error if job.done else errno.EINPROGRESS
        if cb._aiocb_private.status == -1:  # "hack for failure of aio_aqueue"
            return int(cb._aiocb_private.error)
        return errno.EINVAL

    def aio_return(self, cb: Any) -> int:
        job = self.jobs.get(_addr(cb))
        if job is None or not job.done:
            return self._fail(errno.EINVAL)
        del self.jobs[job.address]
        if job.lio is not None:
            job.lio.count -= 1
            if job.lio.count == 0:
                del self.lists[job.lio.ident]  # the knote goes with it
        cb._aiocb_private.status = job.status
        cb._aiocb_private.error = job.error
        if job.error:
            return self._fail(job.error)
        return job.status

    def aio_cancel(self, fd: int, cb: Any) -> int:
        self.cancels += 1
        job = self.jobs.get(_addr(cb))
        if job is None or job.done:
            return A.AIO_ALLDONE
        if self.running:
            return A.AIO_NOTCANCELED
        self._complete(job, -1, errno.ECANCELED)
        return A.AIO_CANCELED

    def lio_listio(self, mode: int, array: Any, n: int, sig: Any) -> int:
        self.calls.append(f"lio {n}")
        if mode != A.LIO_NOWAIT or not 0 <= n <= self.max_queue:
            return self._fail(errno.EINVAL)
        notify = int(sig.sigev_notify)
        lio = FakeList(_addr(array), notify, int(sig.sigev_signo))
        if notify == A.SIGEV_KEVENT:
            if int(sig.sigev_signo) not in self.kqueues:
                return self._fail(errno.EBADF)
            assert lio.ident not in self.lists, (
                "a list array reused before its jobs were collected"
            )
            self.lists[lio.ident] = lio
        elif notify != A.SIGEV_NONE:
            return self._fail(errno.EINVAL)
        nagain = nerror = 0
        for i in range(n):
            code = self._aqueue(array[i], lio, A.LIO_NOP)
            if code == errno.EAGAIN:
                nagain += 1
            elif code:
                nerror += 1
        lio.queueing = False
        if lio.count == 0:
            self.lists.pop(lio.ident, None)  # knlist_delete: no event will come
        elif lio.finished == lio.count:
            self._post_list(lio)
        if nerror:
            return self._fail(errno.EIO)
        if nagain:
            return self._fail(errno.EAGAIN)
        return 0

    # -- the kernel's side -----------------------------------------------------------

    def _aqueue(self, cb: Any, lio: FakeList | None, opcode: int) -> int:
        cb._aiocb_private.status = -1
        cb._aiocb_private.error = 0
        code = self._check(cb, lio, opcode)
        if code:
            cb._aiocb_private.error = code
            return code
        if opcode == A.LIO_NOP:
            opcode = int(cb.aio_lio_opcode)
            if opcode == A.LIO_NOP:
                return 0
        job = FakeJob(cb, opcode, lio)
        self.jobs[job.address] = job
        cb._aiocb_private.error = errno.EINPROGRESS
        if lio is not None:
            lio.count += 1
        if self.synchronous:
            self._perform(job)
        elif not self.hold:
            # An AIO daemon picks it up later: until then aio_cancel can stop it.
            trio.lowlevel.current_trio_token().run_sync_soon(self._perform_queued, job)
        return 0

    def _perform_queued(self, job: FakeJob) -> None:
        if not job.done and not self.hold:
            self._perform(job)

    def _check(self, cb: Any, lio: FakeList | None, opcode: int) -> int:
        if len(self.jobs) >= min(self.max_queue, self.max_queue_global):
            return errno.EAGAIN
        if lio is not None and int(cb.aio_lio_opcode) not in (A.LIO_READ, A.LIO_WRITE, A.LIO_NOP):
            return errno.EINVAL  # FreeBSD 14: no vectored jobs in a list
        sig = cb.aio_sigevent
        if int(sig.sigev_notify) not in (A.SIGEV_NONE, A.SIGEV_KEVENT):
            return errno.EINVAL
        try:
            st = os.fstat(int(cb.aio_fildes))
        except OSError as exc:
            return exc.errno or errno.EBADF
        real = opcode if opcode != A.LIO_NOP else int(cb.aio_lio_opcode)
        if real in (A.LIO_READ, A.LIO_WRITE, LIO_READV, LIO_WRITEV) and cb.aio_offset < 0:
            return errno.EINVAL
        if int(sig.sigev_notify) == A.SIGEV_KEVENT:
            if int(sig._sigev_un._kevent_flags) & ~(EV_CLEAR | EV_DISPATCH | EV_ONESHOT):
                return errno.EINVAL
            if int(sig.sigev_signo) not in self.kqueues:
                return errno.EBADF
        if real in self.refuse:
            return self.refuse[real]
        if stat.S_ISFIFO(st.st_mode):
            return errno.EOPNOTSUPP  # "unsafe" AIO
        return 0

    def _perform(self, job: FakeJob) -> None:
        """Do the job's I/O now, into and out of the memory its control block names."""
        try:
            status = self._io(job)
        except OSError as exc:
            self._complete(job, -1, exc.errno or errno.EIO)
        else:
            self._complete(job, status, 0)

    def _io(self, job: FakeJob) -> int:
        fd, op = job.fd, job.opcode
        if op & LIO_SYNC:
            if op == LIO_DSYNC and hasattr(os, "fdatasync"):
                os.fdatasync(fd)
            else:
                os.fsync(fd)
            return 0
        if op & LIO_VECTORED:
            iov = ffi.cast("struct iovec *", job.buf)
            pieces = [(iov[i].iov_base, int(iov[i].iov_len)) for i in range(job.nbytes)]
        else:
            pieces = [(ffi.cast("void *", job.buf), job.nbytes)]
        done = 0
        for base, size in pieces:
            if op & A.LIO_READ and hasattr(os, "preadv"):  # into the memory itself (O_DIRECT)
                n = os.preadv(fd, [ffi.buffer(base, size)], job.offset + done)
            elif op & A.LIO_READ:
                data = os.pread(fd, size, job.offset + done)
                ffi.memmove(base, data, len(data))
                n = len(data)
            else:
                n = os.pwrite(fd, ffi.buffer(base, size), job.offset + done)
            done += n
            if n < size:
                break
        return done

    def _complete(self, job: FakeJob, status: int, error: int) -> None:
        job.done, job.status, job.error = True, status, error
        if job.notify == A.SIGEV_KEVENT:
            kqueue = self.kqueues[job.kqueue_fd]
            assert kqueue.token is not None
            kqueue.token.run_sync_soon(
                kqueue.post,
                job.address,
                EVFILT_AIO,
                job.kevent_flags | EV_EOF,
                error,
            )
        lio = job.lio
        if lio is not None:
            lio.finished += 1
            if not lio.queueing and lio.finished == lio.count:
                self._post_list(lio)

    def _post_list(self, lio: FakeList) -> None:
        if lio.notify != A.SIGEV_KEVENT:
            return
        kqueue = self.kqueues[lio.kqueue_fd]
        token = kqueue.token
        assert token is not None

        def post() -> None:
            # Level-triggered: delivered at every kevent() while the knote lives
            # (here: twice at most), and never once its jobs are collected.
            if self.lists.get(lio.ident) is lio:
                lio.posted += 1
                kqueue.post(lio.ident, EVFILT_LIO, 0)
                if lio.posted < 2:
                    token.run_sync_soon(post)

        token.run_sync_soon(post)

    # -- for tests -----------------------------------------------------------------------

    def release(self) -> None:
        """Finish every held job now (its I/O happens now)."""
        for job in list(self.jobs.values()):
            if not job.done:
                self._perform(job)

    @property
    def in_progress(self) -> int:
        return sum(not job.done for job in self.jobs.values())

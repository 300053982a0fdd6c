"""The posix_aio backend (FreeBSD): AIO control blocks completed on trio's own kqueue.

Reads, writes (plain and vectored) and fsyncs are submitted to the kernel
with ``aio_read``/``aio_write``/``aio_readv``/``aio_writev``/``aio_fsync``,
batches with ``lio_listio(LIO_NOWAIT)``, and the waiting task sleeps on the
run's kqueue through :class:`trio_aio.lowlevel.Aio` until the kernel posts
the job's event: no thread.  The control blocks and the rules of FreeBSD's
AIO are in ``_aiocb.py``; the kqueue calls in ``_kqueue.py``.

Trio-only, as this whole package (see its ``__init__.py``): the AIO path
uses trio directly, and is taken only by trio tasks.

The thread backend's file, held, not inherited
----------------------------------------------

A :class:`PosixAioFile` holds a thread-backend file on the same fd
(:class:`~trio_aio._backends._threads.ThreadFile`, without the
``RWF_NOWAIT`` path: FreeBSD has none) and hands it, explicitly:

* the operations AIO does not have (``fstat``, ``posix_fallocate``,
  ``ftruncate``, the ``O_DIRECT`` alignment) and transfers at the file
  position (offset -1: AIO has none);
* every operation of a caller that is not a trio task (asyncio has no kqueue
  AIO filter);
* an operation the kernel refuses with ``EAGAIN`` (its AIO queue is full) or
  ``EOPNOTSUPP`` ("unsafe" AIO: pipes, FIFOs, NFS): that one operation runs
  in a worker thread instead, and after ``EOPNOTSUPP`` every later one on the
  same file does.  In a batch, the refused elements go to one worker thread
  together.

:class:`PosixAioBackend` likewise holds a
:class:`~trio_aio._backends._threads.ThreadBackend`, whose counters
:meth:`PosixAioBackend.statistics` adds to the AIO ones; files are opened
in a worker thread (AIO has no open).

Cancellation and closing
------------------------

Cancellation follows the contract in ``_backends/_base.py``: a job not yet
submitted is dropped; a submitted one is asked to stop with ``aio_cancel``
and waited for.  If the kernel cancelled it (``ECANCELED``) the cancellation
is raised; if it had finished, its result is returned and the cancellation
arrives at the next checkpoint.  What runs in the held thread-backend file
follows that file's rules.

:meth:`PosixAioFile.close` is the one close of both: it cancels the AIO jobs
in flight, closes the thread-backend file without closing the fd (which drops
what waits for a thread and waits for what runs in one), waits for the
kernel's event of every AIO job, and then closes the fd, once.

Counting
--------

AIO jobs are counted in the run's :class:`AioCounters`
(:func:`run_counters`); what the held thread-backend file does, in the run's
thread counters, as the thread backend counts it.  A refused job was never
submitted: only its thread counts.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .. import _loops
from .._backends._base import InFlight, read_into_new
from .._backends._inline import before
from .._backends._threads import ThreadBackend, ThreadFile
from .._statistics import Counters, PosixAioStatistics
from . import _kqueue
from ._aio import Aio
from ._aiocb import (
    AIO_LISTIO_MAX,
    FALLBACK_ERRNOS,
    O_DSYNC,
    O_SYNC,
    Job,
    JobList,
    Libc,
    _error,
    load_libc,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from ._kqueue import Kqueue

__all__ = ["AioCounters", "PosixAioBackend", "PosixAioFile", "run_counters"]


@attrs.define(eq=False)
class AioCounters(Counters):
    """The posix_aio backend's own counters for one run: the shared ones, and jobs in flight."""

    in_flight: int = 0


def run_counters() -> AioCounters:
    """The current trio run's AIO counters, created on first use (in the run's storage)."""
    values = _loops.current().run().values
    counters: AioCounters | None = values.get("posix_aio_counters")
    if counters is None:
        counters = values["posix_aio_counters"] = AioCounters()
    return counters


def in_trio_task() -> bool:
    """Whether a trio task is calling: only trio tasks use AIO.

    trio is looked for among the modules already imported (as
    ``_loops.current`` does), so that an asyncio program never imports it.
    """
    trio = sys.modules.get("trio")
    return trio is not None and bool(trio.lowlevel.in_trio_task())


class PosixAioFile:
    """One open fd: AIO jobs where the kernel takes them, a thread-backend file for the rest."""

    __slots__ = ("_backend", "_jobs", "_life", "_threads", "_unsafe")

    def __init__(self, fd: int, backend: PosixAioBackend) -> None:
        self._backend = backend
        self._threads = ThreadFile(fd, nowait=False)  # the fallback (FreeBSD has no RWF_NOWAIT)
        self._life = InFlight(fd)  # the AIO operations in progress, for close()
        self._jobs: set[Job | JobList] = set()  # submitted, not yet finished: cancellable
        self._life.cancels.add(self._cancel_jobs)
        self._unsafe = False  # the kernel said EOPNOTSUPP: threads from now on

    @property
    def fd(self) -> int:
        """The file descriptor."""
        return self._life.fd

    @property
    def may_block(self) -> bool:
        """The thread-backend file's answer (``_backends/_fs.py``; always False off Linux)."""
        return self._threads.may_block

    @property
    def in_flight(self) -> int:
        """How many operations are in progress on this file (AIO jobs and threads)."""
        return self._life.count + self._threads.in_flight

    def _use_aio(self, offset: int) -> bool:
        """Whether an operation at ``offset`` goes to the kernel's AIO (else: to the threads)."""
        return not self._unsafe and offset >= 0 and in_trio_task()

    def _gives_up(self, exc: OSError) -> bool:
        """Whether a refusal sends the operation to a thread (and, later ones, for EOPNOTSUPP)."""
        if exc.errno not in FALLBACK_ERRNOS:
            return False
        if exc.errno == errno.EOPNOTSUPP:
            self._unsafe = True
        return True

    async def _run(self, job: Job, call: str, *args: int) -> int | None:
        """Submit one job and wait for its event; its result, or None: use a thread.

        A checkpoint.  The job's buffer exports are released whenever the
        kernel does not hold it (``Job.collect`` releases them after
        completion; here the paths where it never got them): an export left
        in a frame a traceback keeps alive crashes the garbage collector of
        Python 3.10-3.12 (see ``trio_aio/_ring/_engine.py``).
        """
        try:
            return await self._run_job(job, call, *args)
        finally:
            if not job.submitted:  # (a coroutine closed while the kernel has it keeps them)
                job.release()

    async def _run_job(self, job: Job, call: str, *args: int) -> int | None:
        import trio

        counters = run_counters()
        await before(_loops.current(), counters, 1)
        self._life.begin()
        try:
            aio = Aio.for_aio(job, kqueue=self._backend.kqueue())
            refused = job.submit(call, *args)
            if refused is not None:  # no event will come
                aio.into_inner()
                job.release()
                if self._gives_up(refused):
                    return None
                raise refused
            counters.submitted += 1
            counters.in_flight += 1
            self._jobs.add(job)
            try:
                await aio.wait_ready()  # a cancellation calls aio_cancel and keeps waiting
            finally:
                self._jobs.discard(job)
            aio.into_inner()
            res = job.collect()
            counters.in_flight -= 1
            counters.completed += 1
            counters.cancelled += job.cancel_requested
        finally:
            self._life.end()
        if isinstance(res, OSError):
            if res.errno == errno.ECANCELED:
                if self._life.closing:
                    raise _closed_error()
                await trio.lowlevel.checkpoint_if_cancelled()  # the kernel dropped it for us
            elif self._gives_up(res):
                return None
            raise res
        return res

    # -- single operations -----------------------------------------------------

    async def _aio_transfer(
        self, buffers: Sequence[Any], offset: int, write: bool, vectored: bool
    ) -> int | None:
        """The count of one AIO transfer, or None: the thread-backend file's turn."""
        if not self._use_aio(offset):
            return None
        libc = self._backend.libc
        if vectored:
            job = Job.vectored(libc, self.fd, buffers, offset, write)
            return await self._run(job, "writev" if write else "readv")
        job = Job.transfer(libc, self.fd, buffers[0], offset, write)
        return await self._run(job, "write" if write else "read")

    async def pread(self, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` with ``aio_read``."""
        buf = bytearray(size)
        n = await self._aio_transfer([buf], offset, write=False, vectored=False)
        if n is None:
            return await self._threads.pread(size, offset)
        del buf[n:]
        return bytes(buf)

    async def preadinto(self, buffer: Buffer, offset: int) -> int:
        """Read into a writable buffer at ``offset`` with ``aio_read``."""
        n = await self._aio_transfer([buffer], offset, write=False, vectored=False)
        return await self._threads.preadinto(buffer, offset) if n is None else n

    async def pwrite(self, buffer: Buffer, offset: int) -> int:
        """Write from a buffer at ``offset`` with ``aio_write``."""
        n = await self._aio_transfer([buffer], offset, write=True, vectored=False)
        return await self._threads.pwrite(buffer, offset) if n is None else n

    async def preadv(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Scatter-read with ``aio_readv`` (FreeBSD 13+)."""
        n = await self._aio_transfer(buffers, offset, write=False, vectored=True)
        return await self._threads.preadv(buffers, offset) if n is None else n

    async def pwritev(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Gather-write with ``aio_writev`` (FreeBSD 13+)."""
        n = await self._aio_transfer(buffers, offset, write=True, vectored=True)
        return await self._threads.pwritev(buffers, offset) if n is None else n

    async def fsync(self, datasync: bool) -> None:
        """``aio_fsync(O_DSYNC)`` when ``datasync``, else ``aio_fsync(O_SYNC)``."""
        if self._use_aio(0):
            job = Job(self._backend.libc, self.fd, 0)
            if await self._run(job, "fsync", O_DSYNC if datasync else O_SYNC) is not None:
                return
        await self._threads.fsync(datasync)

    # -- what AIO does not have ----------------------------------------------------

    async def fallocate(self, mode: int, offset: int, length: int) -> None:
        """``posix_fallocate(3)`` in a worker thread (the thread-backend file's)."""
        await self._threads.fallocate(mode, offset, length)

    async def ftruncate(self, length: int) -> None:
        """``ftruncate(2)`` in a worker thread (the thread-backend file's)."""
        await self._threads.ftruncate(length)

    async def stat(self) -> os.stat_result:
        """``fstat(2)`` in a worker thread (the thread-backend file's)."""
        return await self._threads.stat()

    async def dio_alignment(self) -> tuple[int, int]:
        """The thread-backend file's answer (unknown: the file layer assumes a page)."""
        return await self._threads.dio_alignment()

    # -- batches -----------------------------------------------------------------

    def _use_aio_many(self, requests: Sequence[tuple[Any, int]]) -> bool:
        """Whether a batch goes to the kernel's AIO (else: to the threads)."""
        return bool(requests) and self._use_aio(min(offset for _, offset in requests))

    async def pread_many(self, requests: Sequence[tuple[int, int]]) -> list[bytes | OSError]:
        """One read per (size, offset): ``lio_listio`` lists (see :meth:`_aio_many`)."""
        if not self._use_aio_many(requests):
            return await self._threads.pread_many(requests)
        return await read_into_new(functools.partial(self._aio_many, write=False), requests)

    async def preadinto_many(
        self, requests: Sequence[tuple[memoryview, int]]
    ) -> list[int | OSError]:
        """One read per (buffer, offset): ``lio_listio`` lists (see :meth:`_aio_many`)."""
        if not self._use_aio_many(requests):
            return await self._threads.preadinto_many(requests)
        return await self._aio_many(requests, write=False)

    async def pwrite_many(self, requests: Sequence[tuple[memoryview, int]]) -> list[int | OSError]:
        """One write per (buffer, offset): ``lio_listio`` lists (see :meth:`_aio_many`)."""
        if not self._use_aio_many(requests):
            return await self._threads.pwrite_many(requests)
        return await self._aio_many(requests, write=True)

    async def _aio_many(
        self, requests: Sequence[tuple[memoryview, int]], write: bool
    ) -> list[int | OSError]:
        """``lio_listio`` in lists of ``AIO_LISTIO_MAX``, woken once per list.

        Elements the kernel refuses with ``EAGAIN``/``EOPNOTSUPP`` then run in
        one trip to a worker thread of the thread-backend file.  Cancelled
        before anything was submitted, or with every element cancelled by the
        kernel: the cancellation is raised.  Otherwise the results,
        ``ECANCELED`` for the elements that did not run, and the cancellation
        at the next checkpoint.
        """
        await before(_loops.current(), run_counters(), len(requests))
        self._life.begin()
        try:
            results, cancelled = await self._run_lists(requests, write)
        finally:
            self._life.end()
        misses = [
            i for i, res in enumerate(results) if isinstance(res, OSError) and self._gives_up(res)
        ]
        skipped = set(misses)
        ran = any(not _is_cancelled(res) for i, res in enumerate(results) if i not in skipped)
        if self._life.closing:  # the refused elements do not go to a thread now
            if not ran:
                raise _closed_error()
            for i in misses:
                results[i] = _error(errno.ECANCELED)
            return results
        if cancelled is not None:
            if not ran:
                try:
                    raise cancelled
                finally:
                    del cancelled  # no cycle: this frame -> the exception -> its traceback
            for i in misses:
                results[i] = _error(errno.ECANCELED)
            return results
        if misses:
            done = await self._threads._thread_many(requests, misses, write, rest=ran)
            for i, res in zip(misses, done, strict=True):
                results[i] = res
        return results

    async def _run_lists(
        self, requests: Sequence[tuple[memoryview, int]], write: bool
    ) -> tuple[list[int | OSError], BaseException | None]:
        """Submit the lists, wait for every job, collect; (results, the cancellation if any)."""
        import trio

        backend = self._backend
        libc, fd, counters = backend.libc, self.fd, run_counters()
        jobs = [Job.transfer(libc, fd, buf, offset, write) for buf, offset in requests]
        kqueue = backend.kqueue()
        waiting: list[tuple[Aio[JobList], JobList]] = []
        failure: OSError | None = None
        for start in range(0, len(jobs), AIO_LISTIO_MAX):
            jobs_list = JobList(libc, jobs[start : start + AIO_LISTIO_MAX])
            aio = Aio.for_lio(jobs_list, kqueue=kqueue)  # registered before submission
            failure = jobs_list.submit()
            if failure is not None:  # nothing of this list was queued: no event will come
                aio.into_inner()
                break
            waiting.append((aio, jobs_list))
            self._jobs.add(jobs_list)
            counters.submitted += len(jobs_list.jobs)
            counters.in_flight += len(jobs_list.jobs)

        async def wait_all() -> None:
            for aio, jobs_list in waiting:
                while not all(job.done() for job in jobs_list.jobs):
                    aio.clear_ready(await aio.wait_ready())

        cancelled: BaseException | None = None
        try:
            await wait_all()
        except trio.Cancelled as exc:
            cancelled = exc
            for _, jobs_list in waiting:
                jobs_list.cancel()
            with trio.CancelScope(shield=True):
                await wait_all()
        results: list[int | OSError] = []
        for aio, jobs_list in waiting:
            self._jobs.discard(jobs_list)
            for job in jobs_list.jobs:
                results.append(job.collect())
                counters.cancelled += job.cancel_requested
            aio.into_inner()  # after the last aio_return: the kernel's knote is gone
            counters.in_flight -= len(jobs_list.jobs)
            counters.completed += len(jobs_list.jobs)
        for job in jobs[len(results) :]:
            job.release()  # in a list the kernel refused as a whole, or never submitted
        if failure is not None:
            if not waiting:
                try:
                    raise failure
                finally:
                    del failure  # no cycle through this frame
            results.extend(failure for _ in range(len(jobs) - len(results)))
        try:
            return results, cancelled
        finally:
            del cancelled  # no cycle: this frame -> the exception -> its traceback

    # -- closing -------------------------------------------------------------------

    async def close(self, close_fd: bool = True) -> None:
        """Cancel the AIO jobs, close the thread-backend file, wait for both, close the fd once.

        Every AIO job in flight is asked to stop (``aio_cancel``; its waiter
        gets ``ClosedResourceError`` if the kernel gave it up, else its
        result); the thread-backend file is closed without its fd (it drops
        what waits for a thread and waits for what runs in one); then this
        waits, shielded, for the kernel's event of every AIO job.  Only then
        is the fd closed (unless ``close_fd`` is False).  A second call
        returns at once.
        """
        await self._life.close(functools.partial(self._threads.close, close_fd))

    def _cancel_jobs(self) -> None:
        """``aio_cancel`` every job in flight (a closing file)."""
        for source in list(self._jobs):
            source.cancel()


def _closed_error() -> Exception:
    return _loops.closed_resource_error()("file was closed during the operation")


def _is_cancelled(res: int | OSError) -> bool:
    return isinstance(res, OSError) and res.errno == errno.ECANCELED


class PosixAioBackend:
    """The posix_aio backend: each open file is a :class:`PosixAioFile`.

    ``libc`` and ``kqueue`` (a function returning the running trio run's
    kqueue) are the kernel's (FreeBSD) unless given: tests give a fake kernel
    and a fake kqueue.  It holds a thread backend, whose counters
    :meth:`statistics` reports with the AIO ones.
    """

    name = "posix_aio"

    def __init__(
        self, libc: Libc | None = None, kqueue: Callable[[], Kqueue] | None = None
    ) -> None:
        self.libc = libc if libc is not None else load_libc()
        self.kqueue = kqueue if kqueue is not None else _kqueue.current
        self._threads = ThreadBackend()

    async def open(self, path: bytes, flags: int, mode: int) -> PosixAioFile:
        """``open(2)`` in a worker thread: AIO has no open."""
        return self.wrap(await self._threads.open_fd(path, flags, mode))

    def wrap(self, fd: int) -> PosixAioFile:
        """Adopt an fd that is already open."""
        return PosixAioFile(fd, self)

    def statistics(self) -> PosixAioStatistics:
        """The run's AIO counters, with its worker threads' (fallbacks, opens, stats)."""
        threads = self._threads.statistics()
        aio = run_counters() if in_trio_task() else AioCounters()
        return PosixAioStatistics(
            in_flight=threads.in_flight + aio.in_flight,
            queued=threads.queued,
            submitted=threads.submitted + aio.submitted,
            completed=threads.completed + aio.completed,
            cancelled=threads.cancelled + aio.cancelled,
            dropped=threads.dropped + aio.dropped,
            inline=threads.inline,
            threaded=threads.submitted,
            max_threads=threads.max_threads,
        )

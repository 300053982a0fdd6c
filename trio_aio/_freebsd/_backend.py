"""The posix_aio backend (FreeBSD): AIO control blocks completed on trio's own kqueue.

Reads, writes (plain and vectored) and fsyncs are submitted to the kernel
with ``aio_read``/``aio_write``/``aio_readv``/``aio_writev``/``aio_fsync``,
batches with ``lio_listio(LIO_NOWAIT)``, and the waiting task sleeps on the
run's kqueue through :class:`trio_aio.lowlevel.Aio` until the kernel posts
the job's event: no thread.  The control blocks and the rules of FreeBSD's
AIO are in ``_aiocb.py``; the kqueue calls in ``_kqueue.py``.

Everything else is the thread backend's, which this one extends:

* operations AIO does not have (open, stat, fallocate, ftruncate, close) and
  transfers at the file position (offset -1: AIO has none);
* any run that is not trio's (asyncio has no kqueue AIO filter);
* an operation the kernel refuses with ``EAGAIN`` (its AIO queue is full) or
  ``EOPNOTSUPP`` ("unsafe" AIO: pipes, FIFOs, NFS): that one operation runs
  in a worker thread instead, and after ``EOPNOTSUPP`` every later one on the
  same file does.

Cancellation follows the contract in ``_base.py``: a job not yet submitted is
dropped; a submitted one is asked to stop with ``aio_cancel`` and waited for.
If the kernel cancelled it (``ECANCELED``) the cancellation is raised; if it
had finished, its result is returned and the cancellation arrives at the next
checkpoint.  Closing a file cancels its jobs the same way and waits for their
events before the fd is closed.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from .. import _loops
from .._backends._threads import ThreadBackend, ThreadFile, _cancelled_error
from .._statistics import Statistics
from . import _kqueue
from ._aio import Aio
from ._aiocb import AIO_LISTIO_MAX, FALLBACK_ERRNOS, O_DSYNC, O_SYNC, Job, JobList, Libc, load_libc

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from .._loops import Loop
    from ._kqueue import Kqueue

__all__ = ["AioCounters", "PosixAioBackend", "PosixAioFile"]


@attrs.define(eq=False)
class AioCounters:
    """The posix_aio backend's own counters for one run."""

    in_flight: int = 0
    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    dropped: int = 0


class PosixAioFile(ThreadFile):
    """One open fd: AIO where the kernel can, the thread backend's way elsewhere."""

    __slots__ = ("_backend", "_jobs", "_unsafe")

    def __init__(self, fd: int, backend: PosixAioBackend) -> None:
        super().__init__(fd, nowait=False)  # (FreeBSD has no RWF_NOWAIT)
        self._backend = backend
        self._jobs: set[Job | JobList] = set()  # submitted, not yet finished: cancellable
        self._unsafe = False  # the kernel said EOPNOTSUPP: threads from now on

    def _aio_loop(self, offset: int) -> Loop | None:
        """The loop, if an operation at ``offset`` should go to the kernel's AIO."""
        if self._unsafe or offset < 0:
            return None
        loop = _loops.current()
        return loop if loop.name == "trio" else None

    def _gives_up(self, exc: OSError) -> bool:
        """Whether a refusal sends the operation to a thread (and, later ones, for EOPNOTSUPP)."""
        if exc.errno not in FALLBACK_ERRNOS:
            return False
        if exc.errno == errno.EOPNOTSUPP:
            self._unsafe = True
        return True

    async def _run(self, loop: Loop, job: Job, call: str, *args: int) -> int | None:
        """Submit one job and wait for its event; its result, or None: use a thread.

        A checkpoint.  The job's buffer exports are released whenever the
        kernel does not hold it (``Job.collect`` releases them after
        completion; here the paths where it never got them): an export left
        in a frame a traceback keeps alive crashes the garbage collector of
        Python 3.10-3.12 (see ``trio_aio/_ring/_engine.py``).
        """
        try:
            return await self._run_job(loop, job, call, *args)
        finally:
            if not job.submitted:  # (a coroutine closed while the kernel has it keeps them)
                job.release()

    async def _run_job(self, loop: Loop, job: Job, call: str, *args: int) -> int | None:
        counters = self._backend.counters()
        await _before_submission(loop, counters, 1)
        self.begin()
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
            self.end()
        if isinstance(res, OSError):
            if res.errno == errno.ECANCELED:
                if self.closing:
                    raise loop.ClosedResourceError("file was closed during the operation")
                await loop.checkpoint_if_cancelled()  # the kernel dropped it for us
            elif self._gives_up(res):
                return None
            raise res
        return res

    # -- single operations -----------------------------------------------------

    async def _aio_transfer(
        self, buffers: Sequence[Any], offset: int, write: bool, vectored: bool
    ) -> int | None:
        """The count of one AIO transfer, or None: do it the thread backend's way."""
        loop = self._aio_loop(offset)
        if loop is None:
            return None
        libc = self._backend.libc
        if vectored:
            job = Job.vectored(libc, self.fd, buffers, offset, write)
            return await self._run(loop, job, "writev" if write else "readv")
        job = Job.transfer(libc, self.fd, buffers[0], offset, write)
        return await self._run(loop, job, "write" if write else "read")

    async def pread(self, size: int, offset: int) -> bytes:
        """Read up to ``size`` bytes at ``offset`` with ``aio_read``."""
        buf = bytearray(size)
        n = await self._aio_transfer([buf], offset, write=False, vectored=False)
        if n is None:
            return await super().pread(size, offset)
        del buf[n:]
        return bytes(buf)

    async def preadinto(self, buffer: Buffer, offset: int) -> int:
        """Read into a writable buffer at ``offset`` with ``aio_read``."""
        n = await self._aio_transfer([buffer], offset, write=False, vectored=False)
        return await super().preadinto(buffer, offset) if n is None else n

    async def pwrite(self, buffer: Buffer, offset: int) -> int:
        """Write from a buffer at ``offset`` with ``aio_write``."""
        n = await self._aio_transfer([buffer], offset, write=True, vectored=False)
        return await super().pwrite(buffer, offset) if n is None else n

    async def preadv(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Scatter-read with ``aio_readv`` (FreeBSD 13+)."""
        n = await self._aio_transfer(buffers, offset, write=False, vectored=True)
        return await super().preadv(buffers, offset) if n is None else n

    async def pwritev(self, buffers: Sequence[memoryview], offset: int) -> int:
        """Gather-write with ``aio_writev`` (FreeBSD 13+)."""
        n = await self._aio_transfer(buffers, offset, write=True, vectored=True)
        return await super().pwritev(buffers, offset) if n is None else n

    async def fsync(self, datasync: bool) -> None:
        """``aio_fsync(O_DSYNC)`` when ``datasync``, else ``aio_fsync(O_SYNC)``."""
        loop = self._aio_loop(0)
        if loop is not None:
            job = Job(self._backend.libc, self.fd, 0)
            if await self._run(loop, job, "fsync", O_DSYNC if datasync else O_SYNC) is not None:
                return
        await super().fsync(datasync)

    # -- batches -----------------------------------------------------------------

    async def _transfer_many(
        self, requests: Sequence[tuple[memoryview, int]], write: bool
    ) -> list[int | OSError]:
        """``lio_listio`` in lists of ``AIO_LISTIO_MAX``, woken once per list.

        Elements the kernel refuses with ``EAGAIN``/``EOPNOTSUPP`` then run in
        one trip to a worker thread.  Cancelled before anything was
        submitted, or with every element cancelled by the kernel: the
        cancellation is raised.  Otherwise the results, ``ECANCELED`` for the
        elements that did not run, and the cancellation at the next checkpoint.
        """
        loop = self._aio_loop(min((offset for _, offset in requests), default=0))
        if loop is None or not requests:
            return await super()._transfer_many(requests, write)
        await _before_submission(loop, self._backend.counters(), len(requests))
        self.begin()
        try:
            results, cancelled = await self._run_lists(loop, requests, write)
        finally:
            self.end()
        if self.closing and all(_is_cancelled(res) for res in results):
            raise loop.ClosedResourceError("file was closed during the operation")
        misses = [
            i for i, res in enumerate(results) if isinstance(res, OSError) and self._gives_up(res)
        ]
        skipped = set(misses)
        ran = any(not _is_cancelled(res) for i, res in enumerate(results) if i not in skipped)
        if cancelled is not None:
            if not ran:
                try:
                    raise cancelled
                finally:
                    del cancelled  # no cycle: this frame -> the exception -> its traceback
            for i in misses:
                results[i] = _cancelled_error()
            return results
        if misses:
            try:
                done = await self._thread_many(requests, misses, write)
            except loop.Cancelled:
                if not ran:
                    raise
                done = [_cancelled_error() for _ in misses]
            for i, res in zip(misses, done, strict=True):
                results[i] = res
        return results

    async def _run_lists(
        self, loop: Loop, requests: Sequence[tuple[memoryview, int]], write: bool
    ) -> tuple[list[int | OSError], BaseException | None]:
        """Submit the lists, wait for every job, collect; (results, the cancellation if any)."""
        import trio

        backend = self._backend
        libc, fd, counters = backend.libc, self.fd, backend.counters()
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
        except loop.Cancelled as exc:
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

    def _cancel_all(self) -> None:
        """``aio_cancel`` every job in flight, and drop what waits for a thread."""
        super()._cancel_all()
        for source in list(self._jobs):
            source.cancel()


async def _before_submission(loop: Loop, counters: AioCounters, n: int) -> None:
    """Take a pending cancellation before anything reaches the kernel (counted as dropped)."""
    try:
        await loop.checkpoint_if_cancelled()
    except loop.Cancelled:
        counters.dropped += n
        raise


def _is_cancelled(res: int | OSError) -> bool:
    return isinstance(res, OSError) and res.errno == errno.ECANCELED


class PosixAioBackend(ThreadBackend):
    """Opens files in worker threads; each open file is a :class:`PosixAioFile`.

    ``libc`` and ``kqueue`` are the kernel's (FreeBSD) unless given: tests
    give a fake kernel and a fake kqueue.
    """

    name = "posix_aio"

    def __init__(
        self, libc: Libc | None = None, kqueue: Callable[[], Kqueue] | None = None
    ) -> None:
        self.libc = libc if libc is not None else load_libc()
        self.kqueue = kqueue if kqueue is not None else _kqueue.current
        self._counters: Any = None  # a trio RunVar, made on first use

    def counters(self) -> AioCounters:
        """The current trio run's AIO counters."""
        if self._counters is None:
            import trio

            self._counters = trio.lowlevel.RunVar("trio_aio.posix_aio")
        try:
            counters: AioCounters = self._counters.get()
        except LookupError:
            counters = AioCounters()
            self._counters.set(counters)
        return counters

    def wrap(self, fd: int) -> PosixAioFile:
        """Adopt an fd that is already open."""
        return PosixAioFile(fd, self)

    def statistics(self) -> Statistics:
        """The run's AIO counters, with its worker threads' (fallbacks, opens, stats)."""
        threads = super().statistics()
        if _loops.current().name != "trio":
            return attrs.evolve(threads, backend=self.name)
        aio = self.counters()
        return attrs.evolve(
            threads,
            backend=self.name,
            in_flight=threads.in_flight + aio.in_flight,
            submitted=threads.submitted + aio.submitted,
            completed=threads.completed + aio.completed,
            cancelled=threads.cancelled + aio.cancelled,
            dropped=threads.dropped + aio.dropped,
        )

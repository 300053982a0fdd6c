"""The introspection objects returned by :func:`trio_aio.statistics` and ``AsyncFile.statistics``.

One frozen class per backend, told apart by its ``backend`` field (a
``Literal``), as trio does for its I/O managers.  The counters they share are
in :class:`Statistics` and mean the same on every backend.
"""

from __future__ import annotations

from typing import Literal

import attrs


@attrs.define(eq=False)
class Counters:
    """The shared counters of one backend in one run, as they are being counted."""

    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    dropped: int = 0
    inline: int = 0


@attrs.frozen(kw_only=True)
class Statistics:
    """What every backend counts for the current run (the base of the per-backend classes).

    Attributes:
      backend: which backend runs (``"io_uring"``, ``"posix_aio"`` or ``"threads"``).
      in_flight: operations the kernel or a worker thread holds now.
      queued: operations started but not yet handed to the kernel or a thread
        (waiting for room in the ring, or for a free thread).
      submitted: operations handed to the kernel or to a worker thread so far.
      completed: of those, the ones finished so far.
      cancelled: of those, the ones a cancellation reached while the kernel or
        the thread held them (io_uring sent ``IORING_OP_ASYNC_CANCEL``,
        posix_aio called ``aio_cancel``, a thread was waited for).  Each was
        waited for: its result was returned if it completed anyway.
      dropped: operations cancelled before they were submitted (nothing ran).
      inline: operations served on the event loop's thread without waiting
        (``RWF_NOWAIT`` transfers of cached data): never submitted.

    """

    backend: str
    in_flight: int = 0
    queued: int = 0
    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    dropped: int = 0
    inline: int = 0


@attrs.frozen(kw_only=True)
class IoUringStatistics(Statistics):
    """The io_uring backend's counters.

    Attributes:
      enter_calls: ``io_uring_enter`` system calls made so far.
      cq_overflows: times completions did not fit in the completion ring and
        the kernel was asked for the ones it kept aside.
      interrupted: operations the kernel ended with ``EINTR`` although nobody
        cancelled them, and that were therefore submitted again.
      sq_entries: the submission ring's size.
      cq_entries: the completion ring's size.

    """

    backend: Literal["io_uring"] = "io_uring"
    enter_calls: int = 0
    cq_overflows: int = 0
    interrupted: int = 0
    sq_entries: int = 0
    cq_entries: int = 0


@attrs.frozen(kw_only=True)
class ThreadsStatistics(Statistics):
    """The thread backend's counters.

    Attributes:
      max_threads: how many worker threads may run at once.

    """

    backend: Literal["threads"] = "threads"
    max_threads: int = 0


@attrs.frozen(kw_only=True)
class PosixAioStatistics(Statistics):
    """The posix_aio backend's counters: its AIO jobs and its worker threads together.

    Attributes:
      threaded: of ``submitted``, the operations that went to worker threads
        (those AIO does not have, and those the kernel refused).
      max_threads: how many worker threads may run at once.

    """

    backend: Literal["posix_aio"] = "posix_aio"
    threaded: int = 0
    max_threads: int = 0


@attrs.frozen(kw_only=True)
class FileStatistics:
    """One open file's counters (:meth:`trio_aio.AsyncFile.statistics`).

    Attributes:
      backend: the backend the file was opened with.
      in_flight: operations in progress on this file now (in the kernel, in a
        worker thread, or waiting for one).

    """

    backend: str
    in_flight: int = 0


#: What :func:`trio_aio.statistics` returns: one of the per-backend classes.
BackendStatistics = IoUringStatistics | ThreadsStatistics | PosixAioStatistics

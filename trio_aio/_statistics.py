"""The introspection object returned by :func:`trio_aio.statistics`."""

from __future__ import annotations

import attrs


@attrs.frozen
class Statistics:
    """Counters of the current run's backend, as :func:`trio_aio.statistics` reports them.

    Counters a backend does not have stay 0.

    Attributes:
      backend: which backend runs (``"io_uring"``, ``"posix_aio"`` or ``"threads"``).
      in_flight: operations the kernel (or a worker thread) holds now; for
        io_uring, cancel requests included.
      queued: operations started but not yet handed to the kernel (io_uring)
        or to a worker thread (threads).
      submitted: operations handed to the kernel so far (threads: handed to a
        worker thread or served inline).
      completed: operations finished so far (io_uring: completions reaped,
        cancel requests included).
      cancelled: io_uring: cancel requests sent to the kernel so far.
        posix_aio: jobs ``aio_cancel`` was called for, plus the threads' count.
        threads: operations a cancellation reached while they ran in a
        thread; each was waited for and its result returned.
      dropped: operations cancelled before they reached the kernel or a thread.
      enter_calls: ``io_uring_enter`` system calls made so far.
      cq_overflows: times completions did not fit in the completion ring and
        the kernel was asked for the ones it kept aside.
      sq_entries: the submission ring's size.
      cq_entries: the completion ring's size.
      inline: threads: operations served on the event loop's thread without
        waiting (``RWF_NOWAIT`` reads of cached data).
      threaded: threads: operations handed to a worker thread.
      max_threads: threads: how many worker threads may run at once.

    """

    backend: str
    in_flight: int = 0
    queued: int = 0
    submitted: int = 0
    completed: int = 0
    cancelled: int = 0
    dropped: int = 0
    enter_calls: int = 0
    cq_overflows: int = 0
    sq_entries: int = 0
    cq_entries: int = 0
    inline: int = 0
    threaded: int = 0
    max_threads: int = 0

"""The introspection object returned by :func:`trio_aio.statistics`."""

from __future__ import annotations

import attrs


@attrs.frozen
class Statistics:
    """Counters of the current run's I/O engine, as :func:`trio_aio.statistics` reports them.

    Attributes:
      backend: which backend runs (``"io_uring"``).
      in_flight: operations the kernel holds now (cancel requests included).
      queued: operations started but not yet handed to the kernel.
      submitted: operations handed to the kernel so far.
      completed: completions reaped so far (cancel requests included).
      cancelled: cancel requests sent to the kernel so far.
      dropped: operations cancelled before they reached the kernel.
      enter_calls: ``io_uring_enter`` system calls made so far.
      cq_overflows: times completions did not fit in the completion ring and
        the kernel was asked for the ones it kept aside.
      sq_entries: the submission ring's size.
      cq_entries: the completion ring's size.

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

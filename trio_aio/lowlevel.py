"""Low-level controls of trio_aio's backends.

Most code never needs these: the ring (or the thread backend's workers) is
created on first use with sensible defaults and let go when the run (or the
asyncio event loop) ends. Each trio run and each asyncio event loop has its
own; these functions configure the one of the calling task's loop.
"""

from __future__ import annotations

from . import _workers
from ._freebsd._aio import EV_ONESHOT, EVFILT_AIO, EVFILT_LIO, Aio, AioEvent, AioSource
from ._loops import DEFAULT_MAX_THREADS, RingConfig, ThreadsConfig

__all__ = [
    "EVFILT_AIO",
    "EVFILT_LIO",
    "EV_ONESHOT",
    "Aio",
    "AioEvent",
    "AioSource",
    "RingConfig",
    "ThreadsConfig",
    "configure_ring",
    "configure_threads",
]


def configure_ring(
    entries: int = 256,
    cq_entries: int = 0,
    max_in_flight: int = 0,
    *,
    inline_cached: bool = True,
) -> None:
    """Set up the current run's ring; call before its first file operation.

    Args:
      entries: submission-ring entries (rounded up to a power of two, clamped
        to the kernel's maximum). More operations than this may be in flight:
        the rest are submitted in further ``io_uring_enter`` calls.
      cq_entries: completion-ring entries; 0 means twice ``entries``.
      max_in_flight: how many operations the kernel may hold at once before
        further ones wait in trio_aio's queue (where cancelling them is free);
        0 means four times the completion ring. Completions beyond the
        completion ring's size are kept by the kernel (``IORING_FEAT_NODROP``)
        and collected, so none is lost.
      inline_cached: serve reads of data already in the page cache (and
        writes the file system can take without waiting) with one
        ``preadv2``/``pwritev2(..., RWF_NOWAIT)`` on the event loop's thread,
        which never waits for a device, and use the ring only for the rest.
        This saves parking and rescheduling the task for each such read
        (about three times the rate for 4 KiB cached reads here); the
        results and the cancellation contract are the same. ``False`` sends
        every operation through the ring.

    Raises:
      RuntimeError: if the current run has already used its ring.
      ValueError: for a size that is not positive.

    """
    for value, what in (
        (entries, "entries"),
        (cq_entries, "cq_entries"),
        (max_in_flight, "max_in_flight"),
    ):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if not isinstance(inline_cached, bool):
        raise TypeError(f"inline_cached must be a bool, not {type(inline_cached).__name__}")
    if entries < 1 or cq_entries < 0 or max_in_flight < 0:
        raise ValueError("ring sizes must be positive")
    if cq_entries and cq_entries < entries:
        raise ValueError("cq_entries must be at least entries")
    from ._ring import _driver  # (Linux only; only its configuration is used elsewhere)

    _driver.configure(RingConfig(entries, cq_entries, max_in_flight, inline_cached))


def configure_threads(max_threads: int = DEFAULT_MAX_THREADS) -> None:
    """Choose how many worker threads the thread backend may use at once in the current run.

    Call before the run's first operation on the thread backend. The thread
    backend has its own limit (a :class:`trio.CapacityLimiter` on trio, a
    ``ThreadPoolExecutor`` on asyncio), so file I/O neither waits for nor
    starves the application's other thread users. Operations beyond the
    limit wait for a thread, in order; cancelling them there is free.

    Raises:
      RuntimeError: if the thread backend has already run an operation in this run.
      ValueError: if ``max_threads`` is not positive.

    """
    if isinstance(max_threads, bool) or not isinstance(max_threads, int):
        raise TypeError(f"max_threads must be an integer, not {type(max_threads).__name__}")
    if max_threads < 1:
        raise ValueError(f"max_threads must be positive, got {max_threads}")
    _workers.configure(ThreadsConfig(max_threads))

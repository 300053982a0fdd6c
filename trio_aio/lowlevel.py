"""Low-level controls of trio_aio's io_uring engine.

Most code never needs these: the ring is created on first use with sensible
defaults and closed when the run ends.
"""

from __future__ import annotations

from ._loops._trio import RingConfig
from ._loops._trio import configure as _configure

__all__ = ["RingConfig", "configure_ring"]


def configure_ring(entries: int = 256, cq_entries: int = 0, max_in_flight: int = 0) -> None:
    """Choose the size of the current run's ring; call before its first file operation.

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
    if entries < 1 or cq_entries < 0 or max_in_flight < 0:
        raise ValueError("ring sizes must be positive")
    if cq_entries and cq_entries < entries:
        raise ValueError("cq_entries must be at least entries")
    _configure(RingConfig(entries, cq_entries, max_in_flight))

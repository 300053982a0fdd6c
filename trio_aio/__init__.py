"""trio_aio: file I/O that the kernel completes asynchronously, for trio.

On Linux every operation goes through an io_uring ring watched by trio's own
event loop; cancellation is real (the kernel is asked for the operation back,
and nothing it produced is lost). Start with :func:`open_file`.
"""

from __future__ import annotations

from . import lowlevel
from ._file import AsyncFile, open_file
from ._loops._trio import current_driver_or_none as _current_driver_or_none
from ._statistics import Statistics

__all__ = ["AsyncFile", "Statistics", "current_backend", "lowlevel", "open_file", "statistics"]

__version__ = "0.1.0.dev0"


def current_backend() -> str:
    """The name of the backend that serves file operations here: ``"io_uring"``."""
    return "io_uring"


def statistics() -> Statistics:
    """Counters of the current run's engine (all zero before its first operation).

    Must be called inside ``trio.run``.
    """
    driver = _current_driver_or_none()
    if driver is None:
        return Statistics(backend=current_backend())
    return driver.engine.statistics()

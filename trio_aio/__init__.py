"""trio_aio: file I/O that the kernel completes asynchronously, for trio and anyio.

On Linux the kernel does the file I/O through an io_uring ring watched by the
running event loop (trio's, or asyncio's under anyio), and reads of cached
data are served at once with ``RWF_NOWAIT``; cancellation is real (the
kernel is asked for the operation back, and nothing it produced is lost).
Where io_uring is missing or refused, a thread backend gives the same API and
contract. Start with :func:`open_file`, or :mod:`trio_aio.streams` for anyio
byte streams.
"""

from __future__ import annotations

from . import lowlevel, streams
from ._backends import BackendUnavailableError, current_backend_impl
from ._backends import available_backends as _available_backends
from ._backends import select_backend as _select_backend
from ._file import AsyncFile, BatchError, aligned_buffer, open_file
from ._statistics import (
    FileStatistics,
    IoUringStatistics,
    PosixAioStatistics,
    Statistics,
    ThreadsStatistics,
)

__all__ = [
    "AsyncFile",
    "BackendUnavailableError",
    "BatchError",
    "FileStatistics",
    "IoUringStatistics",
    "PosixAioStatistics",
    "Statistics",
    "ThreadsStatistics",
    "aligned_buffer",
    "available_backends",
    "current_backend",
    "lowlevel",
    "open_file",
    "select_backend",
    "statistics",
    "streams",
]

__version__ = "0.1.0.dev0"

BackendUnavailableError.__module__ = __name__
BatchError.__module__ = __name__


def current_backend() -> str:
    """The name of the backend serving files opened now (``"io_uring"``, ``"posix_aio"``, ...).

    Chosen on first use (see :func:`select_backend`). Raises
    :class:`BackendUnavailableError` if ``TRIO_AIO_BACKEND`` asks for a backend
    that cannot work here, and :class:`ValueError` if it names none.
    """
    return current_backend_impl().name


def select_backend(name: str) -> str:
    """Choose the backend for the files this process opens from now on.

    Args:
      name: ``"io_uring"`` (Linux 5.6+, where ``io_uring_setup`` is allowed),
        ``"posix_aio"`` (FreeBSD 13+, on trio; under asyncio its files use
        threads), ``"threads"`` (everywhere), or ``"auto"``: the first of
        those that works here. This overrides the ``TRIO_AIO_BACKEND`` environment
        variable, which takes the same names; without either, ``"auto"``.

    Returns:
      The name of the backend chosen (``"auto"`` resolves to one of the others).

    Raises:
      BackendUnavailableError: the backend cannot work here; the message says
        why (for example ``io_uring_setup`` failed with ``EPERM``).
      ValueError: no backend has that name.

    Files already open keep their backend. Every backend meets the same
    contract, except that an operation already running in a worker thread
    cannot be stopped: a cancelled task waits for it and gets its result.

    """
    return _select_backend(name)


def available_backends() -> tuple[str, ...]:
    """The names of the backends that work in this process, best first.

    Why one is missing (and, for io_uring, what to install to get it):
    ``python -m trio_aio``, or the error of :func:`select_backend`.
    """
    return _available_backends()


def statistics() -> IoUringStatistics | ThreadsStatistics | PosixAioStatistics:
    """Counters of the current run's backend (all zero before its first operation).

    An :class:`IoUringStatistics`, :class:`ThreadsStatistics` or
    :class:`PosixAioStatistics` (tell them apart by ``backend``); the counters
    of :class:`Statistics` mean the same on every backend.  Must be called
    from a trio or asyncio task; each trio run and each asyncio event loop
    has its own counters.
    """
    return current_backend_impl().statistics()

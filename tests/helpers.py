"""Helpers shared by the tests."""

from __future__ import annotations

import asyncio
import errno
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import anyio
import pytest

import trio_aio
from trio_aio._backends._inline import HAVE_NOWAIT
from trio_aio._ring import _constants as C
from trio_aio._ring import _driver

F = TypeVar("F", bound=Callable[..., Any])

URING_ONLY = pytest.mark.backends("io_uring")
THREADS_ONLY = pytest.mark.backends("threads")
POSIX_AIO_ONLY = pytest.mark.backends("posix_aio")
# A subprocess has only the backends that really work here (no simulated kernel).
REAL_BACKENDS = pytest.mark.backends(*trio_aio.available_backends())


def needs_nowait(test: F) -> F:
    """Marks a test of the ``RWF_NOWAIT`` inline path: Linux, io_uring and threads only."""
    marked: F = pytest.mark.backends("io_uring", "threads")(test)
    skipped: F = pytest.mark.skipif(not HAVE_NOWAIT, reason="RWF_NOWAIT is Linux's")(marked)
    return skipped


# The asyncio modes anyio-marked tests also run in (as anyio's own test suite
# does): debug mode, the eager task factory (3.12+) and uvloop (where it is
# installed: not on Windows or PyPy).  Plain "trio" and "asyncio" keep their ids.
_uvloop_loop: Callable[[], asyncio.AbstractEventLoop] | None
try:
    from uvloop import new_event_loop as _uvloop_loop
except ImportError:  # pragma: no cover - uvloop is in the test extras where it exists
    _uvloop_loop = None


def _eager_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    return loop


ASYNCIO_MODES: list[Any] = [
    pytest.param(("asyncio", {"debug": True}), id="asyncio+debug"),
    pytest.param(
        ("asyncio", {"loop_factory": _uvloop_loop}),
        id="asyncio+uvloop",
        marks=[pytest.mark.skipif(_uvloop_loop is None, reason="uvloop is not installed")],
    ),
]
if sys.version_info >= (3, 12):
    ASYNCIO_MODES.append(
        pytest.param(("asyncio", {"loop_factory": _eager_loop}), id="asyncio+eager")
    )
# Every way an anyio-marked test runs on asyncio.
ASYNCIO_BACKENDS: list[Any] = ["asyncio", *ASYNCIO_MODES]


# posix_fallocate is missing on macOS and Windows (trio_aio says EOPNOTSUPP there),
# and FreeBSD's refuses on ZFS (EINVAL).  On Linux allocate() must work.
ALLOCATE_REFUSALS = (
    ()
    if sys.platform == "linux" and hasattr(os, "posix_fallocate")
    else (errno.EOPNOTSUPP, errno.EINVAL)
)
O_DIRECT: int = getattr(os, "O_DIRECT", 0)


# Where conftest keeps a posix_aio test's simulated FreeBSD kernel.
KERNEL = pytest.StashKey[Any]()


def simulated_kernel(request: pytest.FixtureRequest) -> Any:
    """The simulated FreeBSD kernel (``fake_freebsd.FakeKernel``) of this test, or None."""
    return request.node.stash.get(KERNEL, None)


async def drop_a_read_and_a_batch(f: trio_aio.AsyncFile) -> int:
    """Cancel a read and a batch of two before they start; how many were counted dropped."""
    import trio

    before = trio_aio.statistics()
    with trio.CancelScope() as scope:
        scope.cancel()
        await f.read_at(4096, 4096)
    assert scope.cancelled_caught
    with trio.CancelScope() as scope:
        scope.cancel()
        await f.read_many([(0, 10), (10, 10)])
    assert scope.cancelled_caught
    return trio_aio.statistics().dropped - before.dropped


def pipes_use_threads(backend: str) -> bool:
    """Whether a read from a pipe runs in a worker thread rather than in the kernel.

    True for the thread backend, and for posix_aio: FreeBSD refuses AIO on
    pipes ("unsafe", ``EOPNOTSUPP``) and the operation goes to a thread.
    """
    return backend != "io_uring"


# Operations that io_uring always hands to an io-wq worker thread: in flight
# with nothing in the completion ring, yet bound to complete on their own.
_WORKER_OPCODES = frozenset(
    {
        C.IORING_OP_OPENAT,
        C.IORING_OP_STATX,
        C.IORING_OP_CLOSE,
        C.IORING_OP_FSYNC,
        C.IORING_OP_FALLOCATE,
        C.IORING_OP_FTRUNCATE,
    }
)


async def wait_blocked_in_kernel() -> None:
    """Wait until every task is blocked on something that will not finish by itself.

    ``trio.testing.wait_all_tasks_blocked`` alone is not enough: a task
    waiting for an operation the kernel has already completed looks blocked
    until the reaper sees the ring's fd become readable, and one waiting for
    an io-wq worker looks blocked until the worker is done. So also wait
    until nothing is left to submit, nothing to reap, and no worker-bound
    operation is in flight (the loop yields to trio's I/O poll each time).

    On the thread backend a task waiting for a worker thread looks blocked;
    tests that use this there hold their operations on pipes, which block.
    """
    while True:
        await anyio.wait_all_tasks_blocked()
        if trio_aio.current_backend() != "io_uring":
            # asyncio: a job waits briefly in the executor's queue before a
            # worker thread takes it, even when one is free.
            stats = thread_statistics()
            if stats.queued == 0 or stats.in_flight >= stats.max_threads:
                return
            await anyio.sleep(0)
            continue
        driver = _driver.current_or_none()
        if driver is None:
            return
        engine = driver.engine
        if (
            not engine.needs_flush
            and engine.ring.cq_ready() == 0
            and not any(op.opcode in _WORKER_OPCODES for op in engine._in_flight.values())
        ):
            return
        await anyio.sleep(0)


async def read_one_noting_closed(f: trio_aio.AsyncFile, outcomes: list[str]) -> None:
    """Read one byte; note "read", or "closed" if the file was closed meanwhile."""
    try:
        await f.read(1)
        outcomes.append("read")
    except anyio.ClosedResourceError:
        outcomes.append("closed")


class Cancellable(Protocol):
    def cancel(self) -> None: ...


async def cancel_when_in_flight(scope: Cancellable, in_flight: int = 1) -> None:
    """Cancel ``scope`` once the kernel holds ``in_flight`` operations and nothing moves."""
    await wait_blocked_in_kernel()
    assert trio_aio.statistics().in_flight == in_flight
    scope.cancel()


def uring_statistics() -> trio_aio.IoUringStatistics:
    """The current run's statistics, on the io_uring backend."""
    stats = trio_aio.statistics()
    assert stats.backend == "io_uring", stats
    return stats


def thread_statistics() -> trio_aio.ThreadsStatistics | trio_aio.PosixAioStatistics:
    """The current run's statistics, on a backend with worker threads."""
    stats = trio_aio.statistics()
    assert stats.backend != "io_uring", stats
    return stats

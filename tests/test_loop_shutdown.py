"""What remains of an asyncio loop's trio_aio state after the loop shuts down,
and what a plain-asyncio task cancelled during its last operation ends with."""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import trio_aio
from trio_aio import _workers
from trio_aio._ring import _driver
from trio_aio._ring._engine import Engine
from trio_aio._ring._ring import Ring

THREAD_PREFIX = "trio_aio"


def our_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)}


@pytest.fixture
def no_gc() -> Iterator[None]:
    """Nothing is collected during the test: whatever is closed, was closed on purpose."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class Boom(Exception):
    pass


@pytest.mark.backends("threads")
@pytest.mark.usefixtures("no_gc")
def test_a_failed_asyncio_run_leaves_no_worker_threads(data_path: Path) -> None:
    before = our_threads()

    async def main() -> None:
        async with await trio_aio.open_file(data_path, "rb") as f:
            # fsync and stat always take a worker thread (no inline path)
            await asyncio.gather(*(f.stat() for _ in range(8)), f.sync())
            assert our_threads() - before  # some were started
        raise Boom

    with pytest.raises(Boom):
        asyncio.run(main())
    assert our_threads() - before == set()  # before the fix: up to 64, until the next gc


@pytest.mark.backends("io_uring")
@pytest.mark.usefixtures("no_gc")
def test_a_failed_asyncio_run_closes_its_ring(data_path: Path) -> None:
    engines: list[Engine[Ring]] = []

    async def main() -> None:
        async with await trio_aio.open_file(data_path, "rb") as f:
            await f.read_at(10, 0)
        engines.append(_driver.current().engine)
        raise Boom

    with pytest.raises(Boom):
        asyncio.run(main())
    assert engines[0].closed


@pytest.mark.backends("io_uring")
@pytest.mark.usefixtures("ring_only")
def test_a_cancelled_tasks_last_operation_completes_but_its_value_is_lost(
    tmp_path: Path,
) -> None:
    """Plain asyncio: ``Task.cancel()`` while the task's last ``await`` is a write
    the kernel has already completed.

    The write happened (the file has the data) and the ``await`` returned its
    result inside the coroutine, which then returned; but ``Task`` had been
    cancelled again (trio_aio re-delivers the cancellation for the task's next
    ``await``, and there is none), so the task ends cancelled and the return
    value is discarded: ``task.result()`` raises ``CancelledError`` and
    ``task.cancelling()`` (3.11+) is 1.
    """
    path = tmp_path / "out"
    outcome: dict[str, object] = {}

    async def main() -> None:
        async with await trio_aio.open_file(path, "wb") as f:
            reached: list[str] = []

            async def write() -> int:
                n = await f.write_at(b"data", 0)
                reached.append("returned")
                return n

            task = asyncio.ensure_future(write())
            await asyncio.sleep(0)  # the task queues its write ...
            await asyncio.sleep(0)  # ... and the loop's flush submits it
            engine = _driver.current().engine
            assert len(engine._in_flight) == 1
            # Wait (blocking the loop, so nothing reaps) until an io-wq worker has done it.
            deadline = time.monotonic() + 10
            while engine.ring.cq_ready() == 0 and time.monotonic() < deadline:
                time.sleep(0.001)
            assert engine.ring.cq_ready() == 1  # done, not yet reaped
            task.cancel("stop")
            try:
                await task
            except asyncio.CancelledError as exc:
                outcome["raised"] = exc.args
            outcome["reached"] = reached
            outcome["cancelled"] = task.cancelled()
            if sys.version_info >= (3, 11):
                outcome["cancelling"] = task.cancelling()
            try:
                task.result()
            except asyncio.CancelledError as exc:
                outcome["result"] = ("CancelledError", exc.args)

    asyncio.run(main())
    assert path.read_bytes() == b"data"
    assert outcome["reached"] == ["returned"]
    assert outcome["cancelled"] is True
    assert outcome["raised"] == ("stop",)
    assert outcome["result"] == ("CancelledError", ("stop",))
    if sys.version_info >= (3, 11):
        assert outcome["cancelling"] == 1


def test_an_event_loop_that_used_trio_aio_is_collected(data_path: Path, backend: str) -> None:
    """Nothing of trio_aio keeps a finished loop alive (its run is a weak dictionary's value)."""
    import weakref

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        async with await trio_aio.open_file(data_path, "rb") as f:
            await f.read_at(10, 0)
            await f.read_at(4096, 8192)
        await _workers.run(len, "abc")

    asyncio.run(main())
    gc.collect()
    assert loops[0]() is None

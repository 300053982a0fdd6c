"""Helpers shared by the tests."""

from __future__ import annotations

import trio
import trio.testing

from trio_aio._loops._trio import current_driver_or_none


async def wait_blocked_in_kernel() -> None:
    """Wait until every task is blocked and trio_aio has nothing left to submit or reap.

    ``trio.testing.wait_all_tasks_blocked`` alone is not enough: a task
    waiting for an operation the kernel has already completed looks blocked
    until the reaper sees the ring's fd become readable.
    """
    while True:
        await trio.testing.wait_all_tasks_blocked()
        driver = current_driver_or_none()
        if driver is None:
            return
        engine = driver.engine
        if not engine.needs_flush and engine.ring.cq_ready() == 0:
            return

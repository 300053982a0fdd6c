"""One ring per trio.run: guest mode, threads, fork, and the end of a run."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import URING_ONLY, uring_statistics, wait_blocked_in_kernel

import trio_aio
from trio_aio._ring._driver import current_or_none as current_driver_or_none

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("backend")


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def _exercise(path: Path, r: int, w: int) -> tuple[int, int]:
    """Read, write, and cancel a pipe read in flight; returns (ring fd, enter calls).

    Where a pipe read runs in a thread (the thread backend, and posix_aio: AIO
    refuses pipes) it is not cancelled (its thread could not be stopped) but
    released by a write; the result is (-1, 0).
    """
    async with await trio_aio.open_file(path, "r+b") as f:
        await f.write_at(b"guest", 0)
        assert await f.read_at(5, 0) == b"guest"
    async with await trio_aio.open_file(r, "rb", closefd=False) as p:
        if trio_aio.current_backend() != "io_uring":
            got: list[bytes] = []
            async with trio.open_nursery() as nursery:

                async def reader() -> None:
                    got.append(await p.read(1))

                nursery.start_soon(reader)
                await trio.testing.wait_all_tasks_blocked()
                os.write(w, b"!")
            assert got == [b"!"]
            return -1, 0
        with trio.move_on_after(0.05):
            await p.read(1)
        os.write(w, b"!")
        assert await p.read(1) == b"!"
    driver = current_driver_or_none()
    assert driver is not None
    return driver.engine.ring.fd, uring_statistics().enter_calls


@URING_ONLY
def test_the_ring_is_closed_when_the_run_ends(tmp_path: Path, pipe: tuple[int, int]) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 10)
    before = _fd_count()
    ring_fd, _ = trio.run(_exercise, path, *pipe)
    assert _fd_count() == before
    with pytest.raises(OSError):
        os.fstat(ring_fd)


@URING_ONLY
def test_run_end_waits_for_in_flight_operations(pipe: tuple[int, int]) -> None:
    """A system task with a read in flight when the run ends: the kernel answers first."""
    r, _ = pipe
    states: list[str] = []

    async def stuck_reader() -> None:
        async with await trio_aio.open_file(r, "rb", closefd=False) as f:
            try:
                await f.read(1)
            except trio.Cancelled:
                states.append(f"cancelled, in flight: {trio_aio.statistics().in_flight}")
                raise

    async def main() -> None:
        trio.lowlevel.spawn_system_task(stuck_reader)
        await wait_blocked_in_kernel()
        assert trio_aio.statistics().in_flight == 1

    before = _fd_count()
    trio.run(main)
    assert states == ["cancelled, in flight: 0"]
    assert _fd_count() == before


def test_guest_mode(tmp_path: Path, pipe: tuple[int, int], backend: str) -> None:
    """trio as a guest on asyncio (as anyio's pytest plugin runs it)."""
    path = tmp_path / "g"
    path.write_bytes(b"x" * 10)

    async def host() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int]] = loop.create_future()

        def finished(result: object) -> None:
            done.set_result(result.unwrap())  # type: ignore[attr-defined]

        trio.lowlevel.start_guest_run(
            _exercise,
            path,
            *pipe,
            run_sync_soon_threadsafe=loop.call_soon_threadsafe,
            done_callback=finished,
        )
        return await done

    ring_fd, enters = asyncio.run(host())
    if backend == "io_uring":
        assert enters > 0
        with pytest.raises(OSError):
            os.fstat(ring_fd)


def test_runs_in_several_threads_at_once(tmp_path: Path, backend: str) -> None:
    results: dict[int, tuple[int, int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def thread_main(k: int) -> None:
        async def main() -> None:
            path = tmp_path / f"t{k}"
            path.write_bytes(b"x" * 10)
            r, w = os.pipe()
            try:
                async with await trio_aio.open_file(path, "r+b"):
                    pass
                # every thread's ring exists at the same time
                await trio.to_thread.run_sync(barrier.wait)
                results[k] = await _exercise(path, r, w)
            finally:
                os.close(r)
                os.close(w)

        try:
            trio.run(main)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread_main, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 4
    if backend == "io_uring":
        assert len({ring_fd for ring_fd, _ in results.values()}) == 4


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")
@URING_ONLY
def test_fork_child_gets_a_fresh_ring(tmp_path: Path, pipe: tuple[int, int]) -> None:
    """A child forked while the parent's ring holds an operation never touches that ring."""
    r, w = pipe
    path = tmp_path / "fork"
    path.write_bytes(b"parent")
    in_flight = threading.Event()
    release = threading.Event()
    parent: dict[str, object] = {}

    def parent_run() -> None:
        async def main() -> None:
            f = await trio_aio.open_file(r, "rb", closefd=False)
            async with f, trio.open_nursery() as nursery:

                async def read() -> None:
                    parent["data"] = await f.read(5)

                nursery.start_soon(read)
                await wait_blocked_in_kernel()
                in_flight.set()
                await trio.to_thread.run_sync(release.wait)
            parent["stats"] = trio_aio.statistics()

        trio.run(main)

    t = threading.Thread(target=parent_run)
    t.start()
    in_flight.wait()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        code = 1
        try:

            async def child() -> int:
                async with await trio_aio.open_file(path, "r+b") as f:
                    assert await f.read_at(6, 0) == b"parent"
                    await f.write_at(b"child!", 0)
                driver = current_driver_or_none()
                assert driver is not None and driver.pid == os.getpid()
                return trio_aio.statistics().submitted

            # the child's ring served exactly its own five operations
            code = 0 if trio.run(child) == 5 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert path.read_bytes() == b"child!"
    # The parent's ring still works, and its in-flight read completes normally.
    os.write(w, b"hello")
    release.set()
    t.join()
    assert parent["data"] == b"hello"


def test_io_in_a_shielded_cleanup_during_teardown(tmp_path: Path) -> None:
    """A system task that writes in its shielded cleanup, after the run began to end."""
    path = tmp_path / "late"

    async def logger() -> None:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await wait_blocked_in_kernel()  # the reaper has drained and exited
                async with await trio_aio.open_file(path, "wb") as f:
                    await f.write(b"last words")

    async def main() -> None:
        async with await trio_aio.open_file(path, "wb"):
            pass
        trio.lowlevel.spawn_system_task(logger)
        await wait_blocked_in_kernel()

    before = _fd_count()
    trio.run(main)
    assert path.read_bytes() == b"last words"
    assert _fd_count() == before

"""The cancellation contract on asyncio (plain ``Task.cancel`` and anyio scopes), and isolation.

Operations are held in flight on a pipe nobody writes to, opened so that it
goes to the backend (the ring, or a worker thread) instead of a readiness
wait: see the ``pipe`` fixture.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest
from helpers import (
    ASYNCIO_BACKENDS,
    REAL_BACKENDS,
    THREADS_ONLY,
    URING_ONLY,
    pipes_use_threads,
    uring_statistics,
    wait_blocked_in_kernel,
)

import trio_aio
from trio_aio._ring import _driver
from trio_aio._ring._engine import Op

# Contract tests: each runs on every backend (tests/conftest.py).
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("backend")]

ASYNCIO_ONLY = pytest.mark.parametrize("anyio_backend", ASYNCIO_BACKENDS)


@pytest.fixture
def after_next_flush(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Callable[[], object]], None]]:
    """Run a callback right after the ring's next submission, before any completion is reaped."""
    hooks: list[Callable[[], object]] = []

    def arm(hook: Callable[[], object]) -> None:
        engine = _driver.current().engine
        original = engine.flush

        def flush() -> list[Op]:
            failed = original()
            if hooks and engine.statistics().in_flight:
                hooks.pop()()
            return failed

        monkeypatch.setattr(engine, "flush", flush)
        hooks.append(hook)

    yield arm
    assert not hooks, "the hook never ran"


# -- plain asyncio: Task.cancel ---------------------------------------------------------


@URING_ONLY
@ASYNCIO_ONLY
async def test_task_cancel_cancels_in_the_kernel(pipe: tuple[int, int]) -> None:
    r, w = pipe
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        task = asyncio.ensure_future(f.read(5))
        await wait_blocked_in_kernel()
        assert trio_aio.statistics().in_flight == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        stats = trio_aio.statistics()
        assert (stats.in_flight, stats.cancelled) == (0, 1)
        os.write(w, b"hello")  # the cancelled read took nothing
        assert await f.read(5) == b"hello"


@THREADS_ONLY
@ASYNCIO_ONLY
async def test_task_cancel_waits_for_a_thread_and_keeps_its_result(pipe: tuple[int, int]) -> None:
    r, w = pipe
    kept: list[bytes] = []
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:

        async def reader() -> None:
            kept.append(await f.read(5))
            await asyncio.sleep(0)  # the cancellation arrives here
            kept.append(b"not reached")

        task = asyncio.ensure_future(reader())
        await wait_blocked_in_kernel()
        assert trio_aio.statistics().in_flight == 1
        task.cancel()
        await wait_blocked_in_kernel()
        assert not task.done()  # a thread cannot be interrupted: the task waits for it
        os.write(w, b"hello")
        with pytest.raises(asyncio.CancelledError):
            await task
    assert kept == [b"hello"]
    assert trio_aio.statistics().cancelled == 1


@URING_ONLY
@ASYNCIO_ONLY
async def test_task_cancel_keeps_a_result_the_kernel_produced(
    pipe: tuple[int, int], after_next_flush: Callable[[Callable[[], object]], None]
) -> None:
    """Cancelled after the kernel completed the read but before we reaped it."""
    r, w = pipe
    os.write(w, b"hello")
    got: list[bytes] = []
    reached: list[bool] = []
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:

        async def reader() -> None:
            got.append(await f.read(5))
            await asyncio.sleep(0)  # the cancellation arrives here
            reached.append(True)

        # Armed before the task exists: with the eager task factory the task
        # runs (and submits its read) inside ensure_future().
        after_next_flush(lambda: task.cancel("stop"))
        task = asyncio.ensure_future(reader())
        with pytest.raises(asyncio.CancelledError) as info:
            await task
    assert got == [b"hello"]  # returned, not thrown away
    assert reached == []
    if sys.version_info >= (3, 11):  # (3.10 drops the message of an awaited task's cancel)
        assert info.value.args == ("stop",)  # re-delivered with its message
        assert task.cancelling() == 1  # one request, counted once


@URING_ONLY
@ASYNCIO_ONLY
async def test_asyncio_timeout_over_a_kernel_held_read(pipe: tuple[int, int]) -> None:
    if sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout is new in 3.11")
    r, w = pipe
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0):
                await f.read(5)
        assert trio_aio.statistics().in_flight == 0
        os.write(w, b"hello")
        assert await f.read(5) == b"hello"


@URING_ONLY
@ASYNCIO_ONLY
async def test_one_submission_per_loop_iteration(data_path: Path, ring_only: None) -> None:
    async with await trio_aio.open_file(data_path) as f:
        await f.read_at(1, 0)  # the ring exists
        before = uring_statistics().enter_calls
        results = await asyncio.gather(*(f.read_at(4096, i * 4096) for i in range(32)))
        assert uring_statistics().enter_calls - before == 1
    data = data_path.read_bytes()
    assert results == [data[i * 4096 : (i + 1) * 4096] for i in range(32)]


# -- anyio scopes, on both loops ------------------------------------------------------------


@URING_ONLY
async def test_a_scope_cancelled_after_the_kernel_completed_keeps_the_result(
    pipe: tuple[int, int], after_next_flush: Callable[[Callable[[], object]], None]
) -> None:
    """The result is returned; the cancellation stays inside its scope."""
    r, w = pipe
    os.write(w, b"hello")
    got: list[bytes] = []
    reached: list[bool] = []
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        with anyio.CancelScope() as scope:
            after_next_flush(scope.cancel)
            got.append(await f.read(5))
            await anyio.sleep(0)  # the cancellation arrives here
            reached.append(True)
        assert scope.cancelled_caught
        await anyio.sleep(0)  # and not after the scope
    assert got == [b"hello"]
    assert reached == []


async def test_a_scope_cancels_a_read_in_flight(pipe: tuple[int, int], backend: str) -> None:
    r, w = pipe
    async with await trio_aio.open_file(r, "rb", closefd=False) as f:
        got: list[bytes] = []
        scope = anyio.CancelScope()

        async def reader() -> None:
            with scope:
                got.append(await f.read(5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await wait_blocked_in_kernel()
            assert trio_aio.statistics().in_flight == 1
            scope.cancel()
            if pipes_use_threads(backend):
                await wait_blocked_in_kernel()
                os.write(w, b"kept!")  # the thread's result is not thrown away
        if pipes_use_threads(backend):
            assert got == [b"kept!"]
        else:
            assert scope.cancelled_caught
            assert got == []
            os.write(w, b"hello")
            assert await f.read(5) == b"hello"
        assert trio_aio.statistics().in_flight == 0


async def test_aclose_wakes_a_reader_with_closed_resource_error(pipe: tuple[int, int]) -> None:
    r, w = pipe
    f = await trio_aio.open_file(r, "rb", closefd=False)
    outcome: list[str] = []
    async with anyio.create_task_group() as tg:

        async def reader() -> None:
            try:
                await f.read(1)
                outcome.append("read")
            except anyio.ClosedResourceError:
                outcome.append("closed")

        tg.start_soon(reader)
        await wait_blocked_in_kernel()
        async with anyio.create_task_group() as closer:
            closer.start_soon(f.aclose)
            await wait_blocked_in_kernel()
            os.write(w, b"x")  # for the thread backend, whose read cannot be stopped
    assert outcome in (["closed"], ["read"])
    if trio_aio.current_backend() == "io_uring":
        assert outcome == ["closed"]


# -- isolation -------------------------------------------------------------------------------


_EXERCISE = textwrap.dedent(
    """
    import os, sys, tempfile
    import trio_aio
    from trio_aio.streams import FileReadStream, FileWriteStream

    async def main():
        path = os.path.join(tempfile.mkdtemp(), "f")
        async with await FileWriteStream.from_path(path) as w:
            await w.send(b"0123456789" * 1000)
        async with await trio_aio.open_file(path, "rb+") as f:
            assert await f.read_many([(0, 3), (10, 3)]) == [b"012", b"012"]
            await f.write_at([b"ab", b"cd"], 0)
            await f.sync()
        async with await FileReadStream.from_path(path, start=2) as r:
            assert await r.receive(4) == b"cd45"
        r_fd, w_fd = os.pipe()
        async with await trio_aio.open_file(r_fd, "rb") as p:
            os.write(w_fd, b"pipe")
            assert await p.read(4) == b"pipe"
        os.close(w_fd)
        print(trio_aio.current_backend(), trio_aio.statistics().completed > 0)

    LOOP
    """
)


@REAL_BACKENDS
@pytest.mark.parametrize(
    ("runner", "absent"),
    [
        ("import asyncio; asyncio.run(main())", ["trio", "trio_aio._loops._trio"]),
        ("import trio; trio.run(main)", ["asyncio", "trio_aio._loops._asyncio"]),
    ],
)
def test_one_loop_never_imports_the_other(runner: str, absent: list[str], backend: str) -> None:
    code = _EXERCISE.replace("LOOP", runner)
    code += f"\nimported = {absent!r}\nassert not [m for m in imported if m in sys.modules]\n"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "TRIO_AIO_BACKEND": backend},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [backend, "True"]


@REAL_BACKENDS
@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_the_anyio_example_runs_on_both_loops(loop: str, backend: str) -> None:
    example = Path(__file__).parent.parent / "examples" / "file_server.py"
    done = subprocess.run(
        [sys.executable, str(example), "--loop", loop],
        capture_output=True,
        text=True,
        env={**os.environ, "TRIO_AIO_BACKEND": backend},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"loop: {loop}, backend: {backend}" in done.stdout
    assert done.stdout.count("sha256 matches: True") == 3
    assert "outside the root: ../etc/passwd: HTTP/1.0 404 Not Found" in done.stdout

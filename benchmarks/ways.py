"""The ways the suite measures: trio_aio's and its peers', one function each.

Every way takes a :class:`Job` (a file, a case, a time budget) and returns a
:class:`Tally`: operations done and the seconds they took, timed around the
work alone (not the opening and closing of files or event loops).

A way keeps ``case.depth`` operations in flight: ``depth`` tasks, one
operation each, for the per-task ways; one task submitting ``depth`` at a time
for the batch ways; the synchronous loops and the ceiling are what they say.
Reads return ``bytes`` where the peer's natural call does (``read_at``,
``read``, ``os.pread``) and fill a preallocated page-aligned buffer where
``O_DIRECT`` needs one or the block is 1 MiB (``readinto``, ``os.preadv``).
Peers' files are opened unbuffered, so every call is one system call.
"""

from __future__ import annotations

import asyncio
import json
import mmap
import os
import random
import shutil
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import attrs
import trio

import trio_aio

Kind = Literal["trio", "asyncio", "sync", "process"]


@attrs.frozen
class Case:
    """One workload: what each way does, how big, how many at once."""

    key: str
    title: str
    op: Literal["read", "write", "fsync"]
    block: int
    depth: int
    direct: bool = False
    sequential: bool = False


@attrs.frozen
class Job:
    """One measurement: a case on a file for about ``seconds``."""

    path: str
    size: int
    case: Case
    seconds: float

    def offsets(self, seed: int) -> list[int]:
        """Offsets for one task: random blocks, or consecutive blocks from a random start."""
        blocks = self.size // self.case.block
        rng = random.Random(seed)
        if self.case.sequential:
            start = rng.randrange(blocks)
            return [((start + i) % blocks) * self.case.block for i in range(blocks)]
        return [rng.randrange(blocks) * self.case.block for _ in range(4096)]

    def flags(self) -> int:
        """``os.open`` flags for this case."""
        flags = os.O_RDONLY if self.case.op == "read" else os.O_RDWR
        return flags | (os.O_DIRECT if self.case.direct else 0)

    def opener(self, path: str, flags: int) -> int:
        """An ``opener=`` for ``open()``-like peers that adds ``O_DIRECT`` where needed."""
        return os.open(path, flags | (os.O_DIRECT if self.case.direct else 0))

    @property
    def mode(self) -> str:
        return "rb" if self.case.op == "read" else "r+b"

    def uses_buffer(self) -> bool:
        """Whether reads fill a preallocated buffer instead of returning bytes."""
        return self.case.direct or self.case.block >= 1 << 20


@attrs.define
class Tally:
    """Operations done, and the seconds they took."""

    ops: int
    seconds: float


@attrs.frozen
class Way:
    """A named way to do a case, and which cases it can do."""

    name: str
    kind: Kind
    run: Callable[[Job], Any]
    applies: Callable[[Case], bool] = lambda case: True
    group: Literal["trio_aio", "peer", "limit"] = "peer"


def buffer(size: int) -> mmap.mmap:
    """A page-aligned buffer, good for ``O_DIRECT`` on every device."""
    return mmap.mmap(-1, size)


class Clock:
    """When to stop, shared by every worker of a measurement."""

    def __init__(self, seconds: float) -> None:
        self.start = time.perf_counter()
        self.deadline = self.start + seconds

    def more(self) -> bool:
        return time.perf_counter() < self.deadline

    def tally(self, ops: int) -> Tally:
        return Tally(ops, time.perf_counter() - self.start)


# How many operations a worker does between looks at the clock.
def _chunk(job: Job) -> int:
    return 4 if job.case.block >= 1 << 20 or job.case.op == "fsync" else 16


Worker = Callable[[int, Clock], Awaitable[int]]


async def trio_workers(job: Job, tasks: int, worker: Worker) -> Tally:
    """Run ``tasks`` workers on trio until the clock runs out."""
    counts: list[int] = []
    clock = Clock(job.seconds)

    async def one(i: int) -> None:
        counts.append(await worker(i, clock))

    async with trio.open_nursery() as nursery:
        for i in range(tasks):
            nursery.start_soon(one, i)
    return clock.tally(sum(counts))


async def asyncio_workers(job: Job, tasks: int, worker: Worker) -> Tally:
    """Run ``tasks`` workers on asyncio until the clock runs out."""
    clock = Clock(job.seconds)
    counts = await asyncio.gather(*(worker(i, clock) for i in range(tasks)))
    return clock.tally(sum(counts))


def per_op(
    job: Job, file: Any, read: Callable[..., Awaitable[Any]], i: int
) -> Callable[[Clock], Awaitable[int]]:
    """A worker loop around one positional call ``read(file, off, buf_or_data)``."""
    offs = job.offsets(i)
    chunk = _chunk(job)
    arg: Any = (
        buffer(job.case.block)
        if job.case.op == "read" and job.uses_buffer()
        else os.urandom(job.case.block)
    )

    async def loop(clock: Clock) -> int:
        n = 0
        pos = 0
        while clock.more():
            for off in offs[pos : pos + chunk]:
                await read(file, off, arg)
            n += chunk
            pos = (pos + chunk) % (len(offs) - chunk)
        return n

    return loop


# -- trio_aio -----------------------------------------------------------------


def _select(backend: str, inline: bool) -> None:
    trio_aio.select_backend(backend)
    if not inline:
        trio_aio.lowlevel.configure_ring(inline_cached=False)


def trio_aio_tasks(backend: str, inline: bool = True) -> Callable[[Job], Awaitable[Tally]]:
    """``depth`` tasks, each awaiting one ``read_at``/``readinto_at``/``write_at`` at a time."""

    async def way(job: Job) -> Tally:
        _select(backend, inline)
        op = job.case.op
        async with await trio_aio.open_file(job.path, job.mode, direct=job.case.direct) as f:

            async def call(f: trio_aio.AsyncFile, off: int, arg: Any) -> None:
                if op == "read":
                    if isinstance(arg, mmap.mmap):
                        await f.readinto_at(arg, off)
                    else:
                        await f.read_at(job.case.block, off)
                else:
                    await f.write_at(arg, off)
                    if op == "fsync":
                        await f.sync()

            async def worker(i: int, clock: Clock) -> int:
                return await per_op(job, f, call, i)(clock)

            return await trio_workers(job, job.case.depth, worker)

    return way


def trio_aio_batch(backend: str, inline: bool = True) -> Callable[[Job], Awaitable[Tally]]:
    """One task submitting ``depth`` operations per call of a batch method."""

    async def way(job: Job) -> Tally:
        _select(backend, inline)
        depth, block = job.case.depth, job.case.block
        offs = job.offsets(0)
        async with await trio_aio.open_file(job.path, job.mode, direct=job.case.direct) as f:
            clock = Clock(job.seconds)
            n = pos = 0
            if job.case.op == "read" and job.uses_buffer():
                bufs = [buffer(block) for _ in range(depth)]
                while clock.more():
                    await f.readinto_many(zip(offs[pos : pos + depth], bufs, strict=True))
                    n += depth
                    pos = (pos + depth) % (len(offs) - depth)
            elif job.case.op == "read":
                while clock.more():
                    await f.read_many([(off, block) for off in offs[pos : pos + depth]])
                    n += depth
                    pos = (pos + depth) % (len(offs) - depth)
            else:
                data = os.urandom(block)
                while clock.more():
                    await f.write_many([(off, data) for off in offs[pos : pos + depth]])
                    n += depth
                    pos = (pos + depth) % (len(offs) - depth)
            return clock.tally(n)

    return way


# -- thread-based peers on trio and asyncio -----------------------------------


async def _seek_read(f: Any, off: int, arg: Any, op: str, block: int) -> None:
    await f.seek(off)
    if op == "read":
        if isinstance(arg, mmap.mmap):
            await f.readinto(arg)
        else:
            await f.read(block)
    else:
        await f.write(arg)


def _file_way(
    open_: Callable[..., Awaitable[Any]],
    workers: Callable[[Job, int, Worker], Awaitable[Tally]],
    fsync: Callable[[int], Awaitable[None]],
    close: str = "aclose",
) -> Callable[[Job], Awaitable[Tally]]:
    """One unbuffered file object per task: ``seek`` then ``read``/``readinto``/``write``."""

    async def way(job: Job) -> Tally:
        op, block = job.case.op, job.case.block

        async def call(f: Any, off: int, arg: Any) -> None:
            await _seek_read(f, off, arg, op, block)
            if op == "fsync":
                await fsync(f.fileno())

        files = [
            await open_(job.path, job.mode, buffering=0, opener=job.opener)
            for _ in range(job.case.depth)
        ]
        try:

            async def worker(i: int, clock: Clock) -> int:
                return await per_op(job, files[i], call, i)(clock)

            return await workers(job, job.case.depth, worker)
        finally:
            for f in files:
                await getattr(f, close)()

    return way


async def _trio_fsync(fd: int) -> None:
    await trio.to_thread.run_sync(os.fsync, fd)


async def _asyncio_fsync(fd: int) -> None:
    await asyncio.get_running_loop().run_in_executor(None, os.fsync, fd)


def trio_open_file() -> Callable[[Job], Awaitable[Tally]]:
    return _file_way(trio.open_file, trio_workers, _trio_fsync)


def anyio_open_file() -> Callable[[Job], Awaitable[Tally]]:
    import anyio

    return _file_way(anyio.open_file, trio_workers, _trio_fsync)


def aiofiles_open() -> Callable[[Job], Awaitable[Tally]]:
    import aiofiles

    return _file_way(aiofiles.open, asyncio_workers, _asyncio_fsync, close="close")


def caio_uring() -> Callable[[Job], Awaitable[Tally]]:
    """caio's io_uring context on asyncio (SQPOLL off: it burns one of two cores)."""
    from caio.linux_uring_asyncio import AsyncioContext

    async def way(job: Job) -> Tally:
        op, block = job.case.op, job.case.block
        fd = os.open(job.path, job.flags())
        try:
            async with AsyncioContext(max_requests=max(job.case.depth, 32), sqpoll=False) as ctx:

                async def call(_f: Any, off: int, arg: Any) -> None:
                    if op == "read":
                        await ctx.read(block, fd, off)
                    else:
                        await ctx.write(arg, fd, off)
                        if op == "fsync":
                            await ctx.fsync(fd)

                async def worker(i: int, clock: Clock) -> int:
                    return await per_op(job, None, call, i)(clock)

                return await asyncio_workers(job, job.case.depth, worker)
        finally:
            os.close(fd)

    return way


# -- limits ---------------------------------------------------------------------


def sync_loop(job: Job) -> Tally:
    """``os.pread``/``os.preadv``/``os.pwrite`` (+ ``os.fsync``) in a plain loop, one at a time."""
    fd = os.open(job.path, job.flags())
    try:
        offs = job.offsets(0)
        op, block = job.case.op, job.case.block
        buf = buffer(block)
        data = os.urandom(block)
        chunk = _chunk(job) * 4
        n = pos = 0
        clock = Clock(job.seconds)
        while clock.more():
            batch = offs[pos : pos + chunk]
            if op == "read" and job.uses_buffer():
                for off in batch:
                    os.preadv(fd, [buf], off)
            elif op == "read":
                for off in batch:
                    os.pread(fd, block, off)
            else:
                for off in batch:
                    os.pwrite(fd, data, off)
                    if op == "fsync":
                        os.fsync(fd)
            n += chunk
            pos = (pos + chunk) % (len(offs) - chunk)
        return clock.tally(n)
    finally:
        os.close(fd)


async def trio_ceiling(job: Job) -> Tally:
    """trio's own ceiling: ``depth`` tasks that only park and are rescheduled, no I/O.

    Each "operation" is one ``wait_task_rescheduled`` answered by a waker task
    that reschedules every parked task once per scheduler pass, as a
    completion-driven I/O library must at the least.
    """
    parked: list[trio.lowlevel.Task] = []
    clock = Clock(job.seconds)
    done = trio.Event()

    async def waker() -> None:
        while not done.is_set():
            for task in parked:
                trio.lowlevel.reschedule(task)
            parked.clear()
            await trio.lowlevel.cancel_shielded_checkpoint()

    def abort(_: Any) -> trio.lowlevel.Abort:  # pragma: no cover - never cancelled
        return trio.lowlevel.Abort.FAILED

    async def worker(i: int, clock: Clock) -> int:
        n = 0
        me = trio.lowlevel.current_task()
        while clock.more():
            for _ in range(16):
                parked.append(me)
                await trio.lowlevel.wait_task_rescheduled(abort)
            n += 16
        return n

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waker)
        tally = await trio_workers(job, job.case.depth, worker)
        done.set()
    tally.seconds = time.perf_counter() - clock.start
    return tally


def fio_uring(job: Job) -> Tally:
    """fio 3's io_uring engine, the same file and case (one job, ``iodepth=depth``)."""
    case = job.case
    rw = ("read" if case.sequential else "randread") if case.op == "read" else "randwrite"
    cmd = [
        "fio",
        "--name=suite",
        f"--filename={job.path}",
        "--ioengine=io_uring",
        f"--rw={rw}",
        f"--bs={case.block}",
        f"--iodepth={case.depth}",
        f"--direct={int(case.direct)}",
        f"--size={job.size}",
        "--invalidate=0",  # keep the page cache warm
        "--norandommap",
        "--randrepeat=0",
        "--time_based",
        f"--runtime={max(1, round(job.seconds))}",
        "--output-format=json",
    ]
    if case.op == "fsync":
        cmd.append("--fsync=1")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    report = json.loads(out[out.index("{") :])
    part = report["jobs"][0]["read" if case.op == "read" else "write"]
    seconds = part["runtime"] / 1000
    return Tally(int(part["total_ios"]), seconds)


def fio_available() -> bool:
    return shutil.which("fio") is not None


def _installed(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def all_ways() -> list[Way]:
    """Every way that can run here, trio_aio's first."""
    backends = trio_aio.available_backends()
    ways: list[Way] = []

    def batches(case: Case) -> bool:
        return case.depth > 1 and case.op != "fsync"

    def cached_reads(case: Case) -> bool:
        return case.op == "read" and not case.direct

    for backend in backends:
        ways.append(
            Way(f"trio_aio tasks, {backend}", "trio", trio_aio_tasks(backend), group="trio_aio")
        )
    for backend in backends:
        ways.append(
            Way(
                f"trio_aio batch, {backend}",
                "trio",
                trio_aio_batch(backend),
                applies=batches,
                group="trio_aio",
            )
        )
    if "io_uring" in backends:
        # The same with every read through the ring (configure_ring(inline_cached=False)).
        ways.append(
            Way(
                "trio_aio tasks, ring only",
                "trio",
                trio_aio_tasks("io_uring", inline=False),
                applies=cached_reads,
                group="trio_aio",
            )
        )
        ways.append(
            Way(
                "trio_aio batch, ring only",
                "trio",
                trio_aio_batch("io_uring", inline=False),
                applies=lambda case: batches(case) and cached_reads(case),
                group="trio_aio",
            )
        )
    ways.append(Way("trio.open_file", "trio", trio_open_file()))
    ways.append(Way("anyio.open_file (trio)", "trio", anyio_open_file()))
    if _installed("aiofiles"):
        ways.append(Way("aiofiles (asyncio)", "asyncio", aiofiles_open()))
    if _installed("caio.linux_uring_asyncio"):
        ways.append(
            Way(
                "caio io_uring (asyncio)",
                "asyncio",
                caio_uring(),
                # caio reads into buffers of its own: not aligned for O_DIRECT.
                applies=lambda case: not (case.direct and case.op == "read"),
            )
        )
    ways.append(Way("os.pread/pwrite loop (sync)", "sync", sync_loop, group="limit"))
    ways.append(
        Way(
            "trio park+reschedule (no I/O)",
            "trio",
            trio_ceiling,
            applies=lambda case: case.op == "read" and case.block == 4096 and not case.direct,
            group="limit",
        )
    )
    if fio_available():
        ways.append(Way("fio io_uring", "process", fio_uring, group="limit"))
    return ways


def run_way(way: Way, job: Job) -> Tally:
    """Run one measurement of ``way`` in a fresh event loop (or process)."""
    if way.kind == "trio":
        return trio.run(way.run, job)  # type: ignore[no-any-return]
    if way.kind == "asyncio":
        return asyncio.run(way.run(job))  # type: ignore[no-any-return]
    return way.run(job)  # type: ignore[no-any-return]

"""Buffer exports and the garbage collector: the shapes that crashed Python 3.10-3.12.

An ``ffi.from_buffer`` export of a ``memoryview``, kept alive by a frame that a
traceback holds in a reference cycle, made the collector clear the
``memoryview`` first ("BufferError: memoryview has 1 exported buffer" in
``tp_clear``) and then crash (``trio_aio/_ring/_engine.py`` has the story).
Each shape runs in a subprocess on this Python, which must exit normally.
(Python 3.13 survived them even before the fix.)
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.backends("io_uring")

COMMON = """
import gc, os, sys, tempfile
import trio_aio

def path():
    return os.path.join(tempfile.mkdtemp(), "f")

async def write(f, how, offset):
    data = b"x" * 4096
    if how == "single":
        await f.write_at(data, offset)
    elif how == "vectored":
        await f.write_at([data, data], offset)
    else:
        await f.write_many([(offset, data), (offset + 4096, data)])
"""

SHAPES = {
    # The repro: asyncio tasks cancelled while their writes are in flight.
    "asyncio_cancelled_writes": """
import asyncio

async def main(how):
    async with await trio_aio.open_file(path(), "wb") as f:
        for i in range(200):
            t = asyncio.ensure_future(write(f, how, i * 8192))
            await asyncio.sleep(0)
            t.cancel()
            try:
                await t
            except (asyncio.CancelledError, trio_aio.BatchError):
                pass  # (a batch part of which ran: BatchError, elements ECANCELED)

asyncio.run(main(sys.argv[1]))
""",
    # A trio run that ends with an error while writes are in flight.
    "trio_run_fails_during_writes": """
import trio

async def main(how):
    async with await trio_aio.open_file(path(), "wb") as f:
        async with trio.open_nursery() as nursery:
            for i in range(64):
                nursery.start_soon(write, f, how, i * 8192)
            await trio.sleep(0)
            raise RuntimeError("boom")

def run():
    try:
        trio.run(main, sys.argv[1])
    except BaseException as exc:
        error = exc  # kept in a variable: a cycle with this frame

for _ in range(20):
    run()
""",
    # A caller that keeps the kernel's OSError (EFBIG) in a variable, on both loops.
    "kept_oserror_trio": """
import trio

async def one(f, how):
    try:
        await write(f, how, 1 << 62)
    except (OSError, trio_aio.BatchError) as exc:
        error = exc  # kept in a variable: a cycle with this frame

async def main(how):
    async with await trio_aio.open_file(path(), "wb") as f:
        for _ in range(200):
            await one(f, how)

trio.run(main, sys.argv[1])
""",
}
SHAPES["kept_oserror_asyncio"] = (
    SHAPES["kept_oserror_trio"]
    .replace("import trio\n", "import asyncio\n")
    .replace("trio.run(main, sys.argv[1])", "asyncio.run(main(sys.argv[1]))")
)

ENDING = """
gc.collect()
print("survived")
"""


@pytest.mark.parametrize("how", ["single", "vectored", "batch"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_garbage_collector_survives(shape: str, how: str) -> None:
    script = COMMON + textwrap.dedent(SHAPES[shape]) + ENDING
    proc = subprocess.run(
        [sys.executable, "-c", script, how], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "survived"
    assert "BufferError" not in proc.stderr

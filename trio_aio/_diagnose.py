"""``python -m trio_aio``: what runs here and why; ``python -m trio_aio bench``: how fast.

    python -m trio_aio [--json]
    python -m trio_aio bench [--seconds 10] [--size-mib 64] [--dir DIR]

The report says which backends work in this process and why the others do
not (the probes' own messages), which one ``auto`` and ``TRIO_AIO_BACKEND``
choose, and on Linux what io_uring looks like here: the extension, the ring's
features and sizes, the opcodes trio_aio uses, and the settings that refuse
io_uring (``kernel.io_uring_disabled``, seccomp, ``RLIMIT_MEMLOCK``).  A
missing backend is information, not an error: the exit status is 0.

The benchmark reads a temporary file in the page cache with trio_aio and
with ``trio.open_file`` in interleaved rounds, and prints the rates and
their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio_aio
from trio_aio import _backends

__all__ = ["bench", "collect", "format_report", "main"]

# IORING_FEAT_* names by bit (kernel ABI: io_uring_params.features).
FEATURE_NAMES = (
    "SINGLE_MMAP",  # 5.4
    "NODROP",  # 5.5
    "SUBMIT_STABLE",  # 5.5
    "RW_CUR_POS",  # 5.6
    "CUR_PERSONALITY",  # 5.6
    "FAST_POLL",  # 5.7
    "POLL_32BITS",  # 5.9
    "SQPOLL_NONFIXED",  # 5.11
    "EXT_ARG",  # 5.11
    "NATIVE_WORKERS",  # 5.12
    "RSRC_TAGS",  # 5.13
    "CQE_SKIP",  # 5.17
    "LINKED_FILE",  # 5.17
    "REG_REG_RING",  # 6.3
    "RECVSEND_BUNDLE",  # 6.10
    "MIN_TIMEOUT",  # 6.12
    "RW_ATTR",  # 6.14
    "NO_IOWAIT",  # 6.15
)
REQUIRED_FEATURES = ("NODROP", "RW_CUR_POS")  # Ring refuses a kernel without them

SECCOMP_MODES = {0: "no filter", 1: "strict mode", 2: "a filter is active"}
IO_URING_DISABLED = {
    "0": "io_uring allowed for every process",
    "1": "io_uring only for the group kernel.io_uring_group and CAP_SYS_ADMIN",
    "2": "io_uring disabled for every process",
}
WIDTH = 92  # of the text report's lines


# -- the report ----------------------------------------------------------------------


def collect() -> dict[str, Any]:
    """Everything the report says, as a JSON-serialisable dict."""
    backends = {
        name: {"available": _backends._problem(name) is None, "reason": _backends._problem(name)}
        for name in _backends.NAMES
    }
    return {
        "trio_aio": {
            "version": trio_aio.__version__,
            "path": os.path.dirname(os.path.abspath(trio_aio.__file__)),
        },
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
            "executable": sys.executable,
        },
        "platform": {
            "system": sys.platform,
            "release": platform.release(),
            "machine": platform.machine(),
            "description": platform.platform(),
        },
        "backends": backends,
        "choice": _choice(),
        "linux": _linux(),
    }


def _choice() -> dict[str, Any]:
    """What ``auto`` picks, and what new files would use given ``TRIO_AIO_BACKEND``."""
    env = os.environ.get(_backends.ENV_VAR)
    request = (env or "").strip() or "auto"
    chosen: str | None = None
    error: str | None = None
    try:
        chosen = _backends._resolve(request, f"the environment variable {_backends.ENV_VAR}").name
    except (ValueError, trio_aio.BackendUnavailableError) as exc:
        error = str(exc)
    return {
        "auto": _backends.available_backends()[0],
        "env": env,
        "chosen": chosen,
        "error": error,
    }


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _seccomp() -> int | None:
    """The ``Seccomp:`` field of /proc/self/status (0 none, 1 strict, 2 filter)."""
    status = _read("/proc/self/status") or ""
    match = re.search(r"^Seccomp:\s*(\d+)", status, re.MULTILINE)
    return int(match.group(1)) if match else None


def _linux() -> dict[str, Any] | None:
    if sys.platform != "linux":
        return None
    import resource

    from trio_aio._loops import RingConfig
    from trio_aio._ring import _constants as C
    from trio_aio._ring import _ring

    extension: dict[str, Any] = {"built": _ring.lib is not None, "path": None, "error": None}
    if _ring.lib is None:
        extension["error"] = str(_ring._IMPORT_ERROR)
    else:
        from trio_aio._ring import _cring

        extension["path"] = _cring.__file__

    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    memlock = {
        "soft": None if soft == resource.RLIM_INFINITY else soft,
        "hard": None if hard == resource.RLIM_INFINITY else hard,
    }

    ring: dict[str, Any] = {
        "error": None,
        "sq_entries": None,
        "cq_entries": None,
        "features": None,
        "feature_names": [],
        "opcodes": {},
    }
    try:
        r = _ring.Ring(RingConfig().entries)
    except _ring.RingUnavailableError as exc:
        ring["error"] = str(exc)
    else:
        try:
            ring["sq_entries"], ring["cq_entries"] = r.sq_entries, r.cq_entries
            ring["features"] = r.features
            ring["feature_names"] = [
                FEATURE_NAMES[bit] if bit < len(FEATURE_NAMES) else f"bit {bit}"
                for bit in range(r.features.bit_length())
                if r.features >> bit & 1
            ]
            for op in (*C.REQUIRED_OPCODES, C.IORING_OP_FTRUNCATE):
                name, since = C.OPCODE_NAMES[op]
                ring["opcodes"][name] = {
                    "supported": op in r.supported,
                    "required": op in C.REQUIRED_OPCODES,
                    "since": since,
                }
        finally:
            r.close()

    return {
        "kernel_release": _ring.kernel_release(),
        "extension": extension,
        "ring": ring,
        "io_uring_disabled": _read("/proc/sys/kernel/io_uring_disabled"),
        "memlock": memlock,
        "seccomp": _seccomp(),
    }


def _table(rows: Sequence[tuple[str, str]], indent: int = 2) -> list[str]:
    """Aligned ``label  value`` lines, long values wrapped under their column."""
    width = max(len(label) for label, _ in rows)
    pad = " " * (indent + width + 2)
    lines = []
    for label, value in rows:
        first = " " * indent + label.ljust(width) + "  "
        lines.extend(
            textwrap.wrap(
                value,
                WIDTH,
                initial_indent=first,
                subsequent_indent=pad,
                break_on_hyphens=False,
                break_long_words=False,
            )
            or [first.rstrip()]
        )
    return lines


def _bytes(n: int | None) -> str:
    if n is None:
        return "unlimited"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n} bytes"


def _release_below(release: str, version: tuple[int, int]) -> bool:
    match = re.match(r"(\d+)\.(\d+)", release)
    return match is not None and (int(match.group(1)), int(match.group(2))) < version


def _op_name(name: str) -> str:
    return name.removeprefix("IORING_OP_")


def _linux_rows(linux: dict[str, Any]) -> list[tuple[str, str]]:
    ext = linux["extension"]
    rows = [
        ("extension", f"built: {ext['path']}" if ext["built"] else f"not built: {ext['error']}")
    ]
    ring = linux["ring"]
    if ring["error"] is not None:
        rows.append(("ring", f"cannot be set up: {ring['error']}"))
    else:
        rows.append(("ring", f"sq {ring['sq_entries']} entries, cq {ring['cq_entries']} entries"))
        names = [n + ("*" if n in REQUIRED_FEATURES else "") for n in ring["feature_names"]]
        rows.append(
            ("features", f"{ring['features']:#x}: {' '.join(names)} (* trio_aio needs it)")
        )
        ops = ring["opcodes"]
        required = [n for n, o in ops.items() if o["required"]]
        missing = [
            f"{_op_name(n)} (Linux {ops[n]['since']})" for n in required if not ops[n]["supported"]
        ]
        rows.append(
            (
                "opcodes needed",
                " ".join(_op_name(n) for n in required)
                + (f": missing {', '.join(missing)}" if missing else ": all supported"),
            )
        )
        for name, op in ops.items():
            if not op["required"]:
                state = (
                    "supported"
                    if op["supported"]
                    else "missing: truncate() uses a worker thread"
                    if name == "IORING_OP_FTRUNCATE"
                    else "missing"
                )
                rows.append((f"optional {_op_name(name)}", f"{state} (Linux {op['since']}+)"))
    disabled = linux["io_uring_disabled"]
    rows.append(
        (
            "io_uring_disabled",
            "absent (kernel older than 6.6)"
            if disabled is None
            else f"{disabled} ({IO_URING_DISABLED.get(disabled, '?')})",
        )
    )
    memlock = linux["memlock"]
    limit = f"soft {_bytes(memlock['soft'])}, hard {_bytes(memlock['hard'])}"
    if _release_below(linux["kernel_release"], (5, 12)):
        limit += " (the ring's memory counts against it before Linux 5.12)"
    rows.append(("RLIMIT_MEMLOCK", limit))
    seccomp = linux["seccomp"]
    rows.append(
        (
            "seccomp",
            "unknown" if seccomp is None else f"{seccomp} ({SECCOMP_MODES.get(seccomp, '?')})",
        )
    )
    return rows


def format_report(info: dict[str, Any]) -> str:
    """The text report of :func:`collect`'s dict."""
    py, plat = info["python"], info["platform"]
    lines = _table(
        [
            ("trio_aio", f"{info['trio_aio']['version']} ({info['trio_aio']['path']})"),
            ("Python", f"{py['version']} ({py['implementation']}, {py['executable']})"),
            ("platform", plat["description"]),
        ],
        indent=0,
    )
    rows = [
        (name, "available" if b["available"] else f"not available: {b['reason']}")
        for name, b in info["backends"].items()
    ]
    choice = info["choice"]
    rows.append(("auto picks", choice["auto"]))
    env = choice["env"]
    source = "TRIO_AIO_BACKEND is not set" if env is None else f"TRIO_AIO_BACKEND={env!r}"
    request = (env or "").strip()
    if choice["error"] is None:
        rows.append(("files use", f"{choice['chosen']} ({source})"))
    elif request in info["backends"]:  # its reason is above
        rows.append(
            (
                "files use",
                f"nothing: {source} asks for {request}, which cannot work here (above), "
                "so open_file raises BackendUnavailableError",
            )
        )
    else:
        rows.append(("files use", f"nothing: open_file raises: {choice['error']}"))
    lines += ["", "backends", *_table(rows)]
    linux = info["linux"]
    if linux is not None:
        lines += ["", f"io_uring on Linux {linux['kernel_release']}", *_table(_linux_rows(linux))]
    return "\n".join(lines)


# -- the benchmark -------------------------------------------------------------------

BLOCK = 4096
MIB = 1 << 20
TASKS = 32
OFFSETS = 4096  # a power of two: wrapped with a mask
PEER = "trio.open_file"

Op = Callable[[int, int], Awaitable[object]]  # (task, iteration)


def make_cached_file(path: str, size: int) -> None:
    """Write ``size`` random bytes and read them once, so that they are in the page cache.

    (Also the benchmarks': ``benchmarks/suite.py`` and ``layers.py`` use it.)
    """
    chunk = os.urandom(MIB)
    with open(path, "wb") as f:
        for _ in range(size // MIB):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    with open(path, "rb") as f:
        while f.read(16 * MIB):
            pass


async def _measure(tasks: int, seconds: float, op: Op) -> float:
    """Operations per second that ``tasks`` tasks calling ``op`` did for ``seconds``."""
    import trio

    count = 0
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds

    async def worker(k: int) -> None:
        nonlocal count
        i = k * 97
        while clock() < deadline:
            for _ in range(8):
                await op(k, i)
                i += 1
            count += 8

    async with trio.open_nursery() as nursery:
        for k in range(tasks):
            nursery.start_soon(worker, k)
    return count / (clock() - start)


async def _bench_run(
    path: str, size: int, seconds: float, progress: Callable[[str], None]
) -> list[tuple[str, dict[str, list[float]]]]:
    """The rates of every round: ``[(case, {way: [ops/s per round]})]``."""
    import trio

    rng = random.Random(18)
    offsets = [rng.randrange(size // BLOCK) * BLOCK for _ in range(OFFSETS)]
    mask = OFFSETS - 1
    ours = await trio_aio.open_file(path, "rb")
    theirs = [await trio.open_file(path, "rb", buffering=0) for _ in range(TASKS)]
    try:

        async def ours_random(k: int, i: int) -> object:
            return await ours.read_at(BLOCK, offsets[i & mask])

        async def theirs_random(k: int, i: int) -> object:
            f = theirs[k]  # one unbuffered file per task: seek, then read
            await f.seek(offsets[i & mask])
            return await f.read(BLOCK)

        async def ours_sequential(k: int, i: int) -> object:
            data = await ours.read(MIB)
            if len(data) < MIB:
                await ours.seek(0)
            return data

        async def theirs_sequential(k: int, i: int) -> object:
            data = await theirs[0].read(MIB)
            if len(data) < MIB:
                await theirs[0].seek(0)
            return data

        cases: list[tuple[str, int, dict[str, Op]]] = [
            (
                f"random 4 KiB reads, {TASKS} tasks",
                TASKS,
                {"trio_aio": ours_random, PEER: theirs_random},
            )
        ]
        if seconds >= 1:  # time enough for a second case
            cases.append(
                (
                    "sequential 1 MiB reads, 1 task",
                    1,
                    {"trio_aio": ours_sequential, PEER: theirs_sequential},
                )
            )
        # Both read the same bytes (a check, and each one's first operation).
        with open(path, "rb") as plain:
            plain.seek(offsets[1])
            expected = plain.read(BLOCK)
        for name, op in cases[0][2].items():
            if await op(0, 1) != expected:
                raise AssertionError(f"{name} read the wrong bytes")
        rounds = max(2, min(7, round(seconds / 2)))
        slot = seconds / (rounds * len(cases) * 2)
        for _, tasks, ways in cases:  # warm up: threads started, pages touched
            for op in ways.values():
                await _measure(tasks, min(0.05, slot / 4), op)
        rates: list[tuple[str, dict[str, list[float]]]] = [
            (case, {name: [] for name in ways}) for case, _, ways in cases
        ]
        for rnd in range(rounds):
            for (case, tasks, ways), (_, case_rates) in zip(cases, rates, strict=True):
                names = list(ways)
                if rnd % 2:  # alternate which goes first
                    names.reverse()
                for name in names:
                    progress(f"round {rnd + 1}/{rounds}: {case}, {name}")
                    case_rates[name].append(await _measure(tasks, slot, ways[name]))
        return rates
    finally:
        await ours.aclose()
        for f in theirs:
            await f.aclose()


def _bench_table(rates: list[tuple[str, dict[str, list[float]]]]) -> list[str]:
    rows = [("", "trio_aio ops/s", f"{PEER} ops/s", "ratio [min-max]")]
    for case, by_way in rates:
        ours, theirs = by_way["trio_aio"], by_way[PEER]
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        rows.append(
            (
                case,
                f"{statistics.median(ours):,.0f}",
                f"{statistics.median(theirs):,.0f}",
                f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        f"{row[0]:<{widths[0]}}  "
        + "  ".join(f"{cell:>{w}}" for cell, w in zip(row[1:], widths[1:], strict=True))
        for row in rows
    ]


def bench(seconds: float = 10.0, size_mib: int = 64, directory: str | None = None) -> str:
    """Run the side-by-side (about ``seconds`` long) and return its report.

    Progress goes to stderr, on one line rewritten in place.
    """
    import trio

    backend = trio_aio.current_backend()
    shown = [0]

    def progress(text: str) -> None:
        sys.stderr.write("\r" + text.ljust(shown[0]))
        sys.stderr.flush()
        shown[0] = len(text)

    size = size_mib * MIB
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        path = os.path.join(tmp, "trio_aio_bench.bin")
        progress(f"writing a {size_mib} MiB file in {tmp}")
        make_cached_file(path, size)

        async def run() -> list[tuple[str, dict[str, list[float]]]]:
            return await _bench_run(path, size, seconds, progress)

        try:
            rates = trio.run(run)
        finally:
            sys.stderr.write("\r" + " " * shown[0] + "\r")
            sys.stderr.flush()
    rounds = len(rates[0][1]["trio_aio"])
    return "\n".join(
        [
            f"trio_aio {trio_aio.__version__} ({backend} backend) and {PEER} (trio "
            f"{trio.__version__}), {platform.python_implementation()} "
            f"{platform.python_version()}",
            f"{platform.system()} {platform.release()}, {os.cpu_count()} CPUs; "
            f"a {size_mib} MiB file in the page cache; {rounds} interleaved rounds, "
            f"{seconds:g} s in all",
            "",
            *_bench_table(rates),
            "",
            f"ops/s: median of the rounds; ratio: trio_aio / {PEER} in each round",
            f"{PEER}: a file per task, seek() + read(); trio_aio: read_at(), read()",
        ]
    )


# -- the command line ----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m trio_aio``: print the report (or run ``bench``); returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_aio",
        description="Say which trio_aio backend runs here and why the others do not.",
        epilog="A backend that cannot work here is information, not an error: exit status 0.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    commands = parser.add_subparsers(dest="command", metavar="{bench}")
    bench_parser = commands.add_parser(
        "bench",
        help="compare trio_aio with trio.open_file on a temporary file",
        description="Cached reads of a temporary file with trio_aio and with trio.open_file, "
        "in interleaved rounds: the rates and their ratio.",
    )
    bench_parser.add_argument(
        "--seconds", type=float, default=10.0, help="total time to measure (default 10)"
    )
    bench_parser.add_argument(
        "--size-mib", type=int, default=64, help="the file's size in MiB (default 64)"
    )
    bench_parser.add_argument(
        "--dir", default=None, help="where the temporary file goes (default: the system's)"
    )
    args = parser.parse_args(argv)
    if args.command == "bench":
        if args.seconds <= 0 or args.size_mib < 1:
            parser.error("--seconds and --size-mib must be positive")
        try:
            trio_aio.current_backend()  # TRIO_AIO_BACKEND may ask for one that cannot work
        except (ValueError, trio_aio.BackendUnavailableError) as exc:
            print(f"python -m trio_aio bench: {exc}", file=sys.stderr)
            return 1
        print(bench(args.seconds, args.size_mib, args.dir))
        return 0
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0

"""trio_aio beside its peers and the machine's limits, in one run.

Cases (the file is made once and read into the page cache):

* 4 KiB random reads, page cache warm, 1 and 32 at a time;
* the same with ``O_DIRECT`` (the device's own rate);
* 1 MiB sequential reads, page cache warm;
* 4 KiB random writes, 32 at a time;
* 4 KiB write then ``fsync``, one at a time.

Ways (see ``ways.py``): trio_aio one operation per task and in batches, on
every backend that works here, with ``direct=True`` in the ``O_DIRECT`` cases;
``trio.open_file``; ``anyio.open_file`` on trio; aiofiles and caio's io_uring
context on asyncio when they are installed; a synchronous ``os.pread`` loop;
trio tasks that only park and are rescheduled (trio's own ceiling); fio's
io_uring engine when ``fio`` is on the PATH.

Each way runs once per round, in turn, for ``--rounds`` rounds; the table gives
the median rate, the spread between rounds ((max - min) / median), and the
ratio to the case's reference (fio where it ran, else the synchronous loop).
A PNG chart and a JSON file of every figure go to ``--out``.  Usage::

    python benchmarks/suite.py [--rounds 5] [--seconds 1] [--size-mib 256] [--cases KEY,...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).parent))

from ways import Case, Job, Way, all_ways, fio_available, run_way

from trio_aio._diagnose import make_cached_file as make_file

KIB = 1024
MIB = 1 << 20

CASES = [
    Case("cached-4k-qd1", "4 KiB random reads, page cache, 1 at a time", "read", 4 * KIB, 1),
    Case("cached-4k-qd32", "4 KiB random reads, page cache, 32 at a time", "read", 4 * KIB, 32),
    Case("direct-4k-qd1", "4 KiB random reads, O_DIRECT, 1 at a time", "read", 4 * KIB, 1, True),
    Case(
        "direct-4k-qd32", "4 KiB random reads, O_DIRECT, 32 at a time", "read", 4 * KIB, 32, True
    ),
    Case(
        "seq-1m",
        "1 MiB sequential reads, page cache, 1 at a time",
        "read",
        MIB,
        1,
        sequential=True,
    ),
    Case("write-4k-qd32", "4 KiB random writes (page cache), 32 at a time", "write", 4 * KIB, 32),
    Case("fsync-4k-qd1", "4 KiB write + fsync, 1 at a time", "fsync", 4 * KIB, 1),
]

CEILING = "trio park+reschedule (no I/O)"
SYNC = "os.pread/pwrite loop (sync)"
FIO = "fio io_uring"


@attrs.frozen
class Target:
    """A figure the project promises, as a ratio of one way to another in one case."""

    case: str
    way: str
    peer: str
    at_least: float


TARGETS = [
    Target("cached-4k-qd32", "trio_aio tasks, io_uring", CEILING, 0.60),
    Target("cached-4k-qd32", "trio_aio batch, io_uring", SYNC, 0.50),
    Target("direct-4k-qd32", "trio_aio tasks, io_uring", FIO, 0.90),
    Target("direct-4k-qd32", "trio_aio batch, io_uring", FIO, 0.90),
    Target("seq-1m", "trio_aio tasks, io_uring", FIO, 0.80),
]


def measure(
    cases: list[Case], ways: list[Way], path: str, size: int, rounds: int, seconds: float
) -> dict[str, dict[str, list[float]]]:
    """Rates (operations per second) by case and way, one per round."""
    rates: dict[str, dict[str, list[float]]] = {c.key: {} for c in cases}
    for rnd in range(1, rounds + 1):
        for case in cases:
            job = Job(path, size, case, seconds)
            for way in ways:
                if not way.applies(case):
                    continue
                try:
                    tally = run_way(way, job)
                except Exception as exc:  # a peer that cannot do this case here
                    print(f"  {case.key:<15} {way.name:<30} failed: {exc!r}", flush=True)
                    continue
                rate = tally.ops / tally.seconds
                rates[case.key].setdefault(way.name, []).append(rate)
                print(f"  round {rnd}: {case.key:<15} {way.name:<30} {rate:>12,.0f}/s", flush=True)
    return rates


def reference(case_rates: dict[str, list[float]]) -> str:
    return FIO if FIO in case_rates else SYNC


def report(
    cases: list[Case], rates: dict[str, dict[str, list[float]]], rounds: int, load: float
) -> list[str]:
    lines: list[str] = []
    spreads: list[float] = []
    for case in cases:
        case_rates = rates[case.key]
        if not case_rates:
            continue
        ref = reference(case_rates)
        ref_rate = statistics.median(case_rates[ref]) if ref in case_rates else 0.0
        unit = "MiB/s" if case.block >= MIB else "ops/s"
        lines += ["", f"### {case.title} (`{case.key}`)", ""]
        lines += [f"| way | {unit} | spread | vs {ref} |", "|---|---:|---:|---:|"]
        for name, values in sorted(case_rates.items(), key=lambda kv: -statistics.median(kv[1])):
            med = statistics.median(values)
            spread = (max(values) - min(values)) / med if med else 0.0
            spreads.append(spread)
            rate = med * case.block / MIB if case.block >= MIB else med
            ratio = f"{med / ref_rate:.2f}" if ref_rate else "-"
            lines.append(f"| {name} | {rate:,.0f} | {spread:.0%} | {ratio} |")
    lines += [
        "",
        "### Targets",
        "",
        "| case | way | peer | ratio | target | |",
        "|---|---|---|---:|---:|---|",
    ]
    for t in TARGETS:
        case_rates = rates.get(t.case, {})
        if t.way not in case_rates or t.peer not in case_rates:
            lines.append(
                f"| {t.case} | {t.way} | {t.peer} | - | {t.at_least:.0%} | not measured |"
            )
            continue
        got = statistics.median(case_rates[t.way]) / statistics.median(case_rates[t.peer])
        verdict = "met" if got >= t.at_least else "missed"
        lines.append(
            f"| {t.case} | {t.way} | {t.peer} | {got:.0%} | {t.at_least:.0%} | {verdict} |"
        )
    if spreads:
        lines += [
            "",
            f"Noise: spread between {rounds} rounds, median {statistics.median(spreads):.0%}, "
            f"worst {max(spreads):.0%}; load average {load:.2f} before the run, "
            f"{os.getloadavg()[0]:.2f} after.",
        ]
    return lines


def chart(cases: list[Case], rates: dict[str, dict[str, list[float]]], out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart", file=sys.stderr)
        return None
    shown = [c for c in cases if rates[c.key]]
    heights = [len(rates[c.key]) * 0.32 + 0.9 for c in shown]
    fig, axes = plt.subplots(
        len(shown), 1, figsize=(10, sum(heights)), gridspec_kw={"height_ratios": heights}
    )
    if len(shown) == 1:
        axes = [axes]
    colors = {"trio_aio": "#2a7ab9", "peer": "#b0b0b0", "limit": "#e08a2c"}
    groups = {w.name: w.group for w in all_ways()}
    for ax, case in zip(axes, shown, strict=True):
        items = sorted(rates[case.key].items(), key=lambda kv: statistics.median(kv[1]))
        names = [n for n, _ in items]
        meds = [statistics.median(v) for _, v in items]
        ax.barh(names, meds, color=[colors[groups.get(n, "peer")] for n in names])
        ax.set_xscale("log")
        ax.set_title(case.title, fontsize=10, loc="left")
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(axis="x", labelsize=8)
        for y, med in enumerate(meds):
            ax.text(med, y, f" {med:,.0f}", va="center", fontsize=7)
        ax.set_xlim(right=max(meds) * 6)
    axes[-1].set_xlabel("operations per second (log scale; blue: trio_aio, orange: limits)")
    fig.tight_layout()
    path = out / "suite.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=1.0, help="per way, case and round")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--cases", default="", help="comma-separated case keys (default: all)")
    parser.add_argument("--ways", default="", help="only ways whose name contains one of these")
    parser.add_argument("--dir", default=None, help="where the test file goes (not tmpfs)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()

    cases = [c for c in CASES if not args.cases or c.key in args.cases.split(",")]
    ways = [
        w for w in all_ways() if not args.ways or any(p in w.name for p in args.ways.split(","))
    ]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MIB
    header = [
        f"# trio_aio benchmark suite, {time.strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{platform.node()}: Linux {platform.release()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; {args.size_mib} MiB file; "
        f"median of {args.rounds} rounds of {args.seconds:g} s"
        + ("" if fio_available() else "; fio not installed"),
    ]
    print("\n".join(header), flush=True)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(dir=args.dir or out) as tmp:
        path = os.path.join(tmp, "suite.bin")
        print(f"preparing a {args.size_mib} MiB file in {tmp} ...", flush=True)
        make_file(path, size)
        rates = measure(cases, ways, path, size, args.rounds, args.seconds)
    lines = header + report(cases, rates, args.rounds, load)
    print("\n".join(lines))
    (out / "suite.md").write_text("\n".join(lines) + "\n")
    (out / "suite.json").write_text(json.dumps(rates, indent=1) + "\n")
    png = chart(cases, rates, out)
    print(f"\nwrote {out / 'suite.md'}, {out / 'suite.json'}" + (f", {png}" if png else ""))


if __name__ == "__main__":
    main()

"""``python -m trio_aio``: the report of what runs here and why, and ``bench``."""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import trio_aio
from trio_aio import _backends, _diagnose

ROOT = Path(__file__).resolve().parent.parent
NO_IO_URING = Path(__file__).resolve().parent / "no_io_uring.py"
MAIN = ROOT / "trio_aio" / "__main__.py"
LINUX = pytest.mark.skipif(sys.platform != "linux", reason="about Linux")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m trio_aio ARGS`` (``TRIO_AIO_BACKEND`` unset unless ``env`` sets it).

    Its output is decoded as is: a ``\r`` stays a ``\r``.
    """
    environment = {k: v for k, v in os.environ.items() if k != _backends.ENV_VAR}
    environment.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "trio_aio", *args],
        capture_output=True,
        env=environment,
        cwd=ROOT,
        timeout=120,
    )
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
    )


def _json(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = _run("--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def _row(label: str, text: str) -> str:
    """The value of the report's line ``label``, continuation lines joined."""
    match = re.search(rf"^ *{re.escape(label)} +(.*(?:\n {{6,}}\S.*)*)", text, re.MULTILINE)
    assert match is not None, f"no {label!r} line in:\n{text}"
    return " ".join(part.strip() for part in match.group(1).splitlines())


# -- the report, as a user runs it -------------------------------------------------------


def test_the_report_says_what_runs_here() -> None:
    done = _run()
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert _row("trio_aio", out).startswith(f"{trio_aio.__version__} (")
    assert _row("Python", out).startswith(
        f"{platform.python_version()} ({platform.python_implementation()}, "
    )
    available = trio_aio.available_backends()
    for name in _backends.NAMES:
        value = _row(name, out)
        if name in available:
            assert value == "available"
        else:
            assert value == f"not available: {_backends._problem(name)}"
    assert _row("auto picks", out) == available[0]
    assert _row("files use", out) == f"{available[0]} (TRIO_AIO_BACKEND is not set)"
    if sys.platform == "linux":
        assert f"io_uring on Linux {platform.release()}" in out
        for label in ("extension", "ring", "io_uring_disabled", "RLIMIT_MEMLOCK", "seccomp"):
            _row(label, out)
    if "io_uring" in available:
        assert "NODROP*" in _row("features", out)
        assert _row("opcodes needed", out).endswith(": all supported")
        assert re.match(r"sq \d+ entries, cq \d+ entries$", _row("ring", out))


def test_the_json_report_has_the_same() -> None:
    info = _json()
    assert set(info) == {"trio_aio", "python", "platform", "backends", "choice", "linux"}
    assert info["trio_aio"]["version"] == trio_aio.__version__
    assert info["python"]["version"] == platform.python_version()
    assert info["python"]["implementation"] == platform.python_implementation()
    assert info["platform"]["system"] == sys.platform
    available = trio_aio.available_backends()
    assert {name: b["available"] for name, b in info["backends"].items()} == {
        name: name in available for name in _backends.NAMES
    }
    for name, b in info["backends"].items():
        assert b["reason"] == _backends._problem(name)
    assert info["choice"] == {
        "auto": available[0],
        "env": None,
        "chosen": available[0],
        "error": None,
    }
    linux = info["linux"]
    if sys.platform != "linux":
        assert linux is None
        return
    assert set(linux) == {
        "kernel_release",
        "extension",
        "ring",
        "io_uring_disabled",
        "memlock",
        "seccomp",
    }
    assert linux["kernel_release"] == platform.release()
    assert linux["seccomp"] in (0, 1, 2)
    assert set(linux["memlock"]) == {"soft", "hard"}
    ring = linux["ring"]
    if "io_uring" in available:
        assert linux["extension"]["built"]
        assert ring["error"] is None
        assert ring["sq_entries"] >= 1 and ring["cq_entries"] >= ring["sq_entries"]
        assert {"NODROP", "RW_CUR_POS"} <= set(ring["feature_names"])
        opcodes = ring["opcodes"]
        assert "IORING_OP_FTRUNCATE" in opcodes
        assert not opcodes["IORING_OP_FTRUNCATE"]["required"]
        assert all(op["supported"] for op in opcodes.values() if op["required"])
    else:
        assert ring["error"]


@pytest.mark.parametrize(
    ("value", "chosen", "error"),
    [
        ("threads", "threads", None),
        (" auto ", trio_aio.available_backends()[0], None),
        ("bogus", None, "must be one of io_uring, posix_aio, threads, auto, not 'bogus'"),
    ],
)
def test_the_report_says_what_TRIO_AIO_BACKEND_chooses(
    value: str, chosen: str | None, error: str | None
) -> None:
    choice = _json(env={"TRIO_AIO_BACKEND": value})["choice"]
    assert choice["env"] == value
    assert choice["chosen"] == chosen
    if error is None:
        assert choice["error"] is None
    else:
        assert error in choice["error"]
    done = _run(env={"TRIO_AIO_BACKEND": value})
    assert done.returncode == 0, done.stderr
    files_use = _row("files use", done.stdout)
    if chosen is not None:
        assert files_use == f"{chosen} (TRIO_AIO_BACKEND={value!r})"
    else:
        assert files_use.startswith("nothing: open_file raises: ")
        assert "not 'bogus'" in files_use


def test_help() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert "--json" in done.stdout
    assert "bench" in done.stdout
    done = _run("bench", "--help")
    assert done.returncode == 0, done.stderr
    assert "--seconds" in done.stdout


# -- io_uring missing: the reason, and exit status 0 -------------------------------------


def test_a_missing_io_uring_is_explained_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    reason = "io_uring_setup failed with EPERM (pretend): a seccomp filter refuses it"
    monkeypatch.setitem(_backends._problems, "io_uring", reason)
    monkeypatch.setitem(_backends._problems, "posix_aio", "not FreeBSD (pretend)")
    monkeypatch.delenv(_backends.ENV_VAR, raising=False)
    assert _diagnose.main([]) == 0
    out = capsys.readouterr().out
    assert _row("io_uring", out) == f"not available: {reason}"
    assert _row("posix_aio", out) == "not available: not FreeBSD (pretend)"
    assert _row("auto picks", out) == "threads"
    assert _row("files use", out) == "threads (TRIO_AIO_BACKEND is not set)"

    monkeypatch.setenv(_backends.ENV_VAR, "io_uring")
    assert _diagnose.main(["--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["backends"]["io_uring"] == {"available": False, "reason": reason}
    assert info["choice"]["auto"] == "threads"
    assert info["choice"]["chosen"] is None
    assert info["choice"]["error"] == (
        "the environment variable TRIO_AIO_BACKEND asks for the io_uring backend, "
        f"which cannot work here: {reason}"
    )
    assert _diagnose.main([]) == 0
    assert _row("files use", capsys.readouterr().out) == (
        "nothing: TRIO_AIO_BACKEND='io_uring' asks for io_uring, which cannot work here "
        "(above), so open_file raises BackendUnavailableError"
    )


@LINUX
@pytest.mark.skipif(
    "io_uring" not in trio_aio.available_backends(), reason="io_uring is already refused here"
)
def test_a_seccomp_refusal_is_explained() -> None:
    environment = {k: v for k, v in os.environ.items() if k != _backends.ENV_VAR}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(NO_IO_URING), str(MAIN), *args],
            capture_output=True,
            text=True,
            env=environment,
            cwd=ROOT,
            timeout=120,
        )

    done = run()
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert _row("io_uring", out).startswith(
        "not available: io_uring_setup failed with EPERM (Operation not permitted)"
    )
    assert "a seccomp filter refuses it" in _row("io_uring", out)
    assert _row("auto picks", out) == "threads"
    assert _row("ring", out).startswith("cannot be set up: io_uring_setup failed with EPERM")
    assert _row("seccomp", out) == "2 (a filter is active)"

    done = run("--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert not info["backends"]["io_uring"]["available"]
    assert info["choice"]["chosen"] == "threads"
    assert info["linux"]["seccomp"] == 2
    assert info["linux"]["extension"]["built"]
    assert "EPERM" in info["linux"]["ring"]["error"]


# -- the text of situations this machine may not have ------------------------------------


def _linux_info() -> dict[str, Any]:
    return {
        "trio_aio": {"version": "9.9", "path": "/x/trio_aio"},
        "python": {"version": "3.10.0", "implementation": "CPython", "executable": "/x/py"},
        "platform": {
            "system": "linux",
            "release": "5.10.0",
            "machine": "x86_64",
            "description": "Linux-5.10.0-x86_64",
        },
        "backends": {
            "io_uring": {"available": True, "reason": None},
            "posix_aio": {"available": False, "reason": "not FreeBSD"},
            "threads": {"available": True, "reason": None},
        },
        "choice": {"auto": "io_uring", "env": None, "chosen": "io_uring", "error": None},
        "linux": {
            "kernel_release": "5.10.0",
            "extension": {"built": True, "path": "/x/_cring.so", "error": None},
            "ring": {
                "error": None,
                "sq_entries": 256,
                "cq_entries": 512,
                "features": 0b1011 | 1 << 30,
                "feature_names": ["SINGLE_MMAP", "NODROP", "RW_CUR_POS", "bit 30"],
                "opcodes": {
                    "IORING_OP_READ": {"supported": True, "required": True, "since": "5.6"},
                    "IORING_OP_STATX": {"supported": False, "required": True, "since": "5.6"},
                    "IORING_OP_FTRUNCATE": {
                        "supported": False,
                        "required": False,
                        "since": "6.9",
                    },
                },
            },
            "io_uring_disabled": None,
            "memlock": {"soft": 64 << 10, "hard": None},
            "seccomp": 0,
        },
    }


def test_the_text_of_an_older_kernel() -> None:
    out = _diagnose.format_report(_linux_info())
    assert _row("features", out) == (
        "0x4000000b: SINGLE_MMAP NODROP* RW_CUR_POS* bit 30 (* trio_aio needs it)"
    )
    assert _row("opcodes needed", out) == "READ STATX: missing STATX (Linux 5.6)"
    assert _row("optional FTRUNCATE", out) == (
        "missing: truncate() uses a worker thread (Linux 6.9+)"
    )
    assert _row("io_uring_disabled", out) == "absent (kernel older than 6.6)"
    assert _row("RLIMIT_MEMLOCK", out) == (
        "soft 64 KiB, hard unlimited (the ring's memory counts against it before Linux 5.12)"
    )
    assert _row("seccomp", out) == "0 (no filter)"


def test_the_text_where_the_extension_is_not_built() -> None:
    info = copy.deepcopy(_linux_info())
    linux = info["linux"]
    linux["kernel_release"] = "6.8.0"
    linux["extension"] = {"built": False, "path": None, "error": "No module named '_cring'"}
    linux["ring"]["error"] = "the io_uring extension is not built: No module named '_cring'"
    linux["io_uring_disabled"] = "2"
    linux["seccomp"] = None
    out = _diagnose.format_report(info)
    assert _row("extension", out) == "not built: No module named '_cring'"
    assert _row("ring", out) == (
        "cannot be set up: the io_uring extension is not built: No module named '_cring'"
    )
    assert "features" not in out
    assert _row("io_uring_disabled", out) == "2 (io_uring disabled for every process)"
    assert _row("RLIMIT_MEMLOCK", out) == "soft 64 KiB, hard unlimited"
    assert _row("seccomp", out) == "unknown"


def test_the_text_off_linux() -> None:
    info = _linux_info()
    info["linux"] = None
    out = _diagnose.format_report(info)
    assert "io_uring on" not in out
    assert out.splitlines()[0] == "trio_aio  9.9 (/x/trio_aio)"
    # aligned: every backend row's value starts in the same column
    columns = {
        line.index(value)
        for line, value in zip(
            out.splitlines()[5:10],
            ["available", "not available", "available", "io_uring", "io_uring"],
            strict=True,
        )
    }
    assert len(columns) == 1


def test_long_values_wrap_under_their_column() -> None:
    lines = _diagnose._table([("a", "word " * 40), ("longer", "x")])
    assert all(len(line) <= _diagnose.WIDTH for line in lines)
    assert lines[0].startswith("  a       word ")
    assert all(line.startswith(" " * 10 + "word") for line in lines[1:-1])
    assert lines[-1] == "  longer  x"


# -- bench ---------------------------------------------------------------------------------


def test_bench_prints_the_ratio() -> None:
    done = _run("bench", "--seconds", "1", "--size-mib", "8")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"trio_aio ops/s +trio\.open_file ops/s +ratio \[min-max\]", out)
    for case in ("random 4 KiB reads, 32 tasks", "sequential 1 MiB reads, 1 task"):
        assert re.search(
            rf"^{re.escape(case)} +[\d,]+ +[\d,]+ +\d+\.\d\d \[\d+\.\d\d-\d+\.\d\d\]$",
            out,
            re.MULTILINE,
        ), out
    assert f"({trio_aio.available_backends()[0]} backend)" in out
    assert "2 interleaved rounds, 1 s in all" in out
    # the progress line, rewritten in place, and erased at the end
    assert "\rround 1/2: random 4 KiB reads, 32 tasks" in done.stderr
    assert done.stderr.endswith("\r")
    assert "\n" not in done.stderr


def test_bench_refuses_a_backend_that_cannot_work() -> None:
    done = _run("bench", "--seconds", "1", env={"TRIO_AIO_BACKEND": "bogus"})
    assert done.returncode == 1
    assert done.stdout == ""
    assert "TRIO_AIO_BACKEND must be one of" in done.stderr
    done = _run("bench", "--seconds", "0")
    assert done.returncode == 2
    assert "--seconds and --size-mib must be positive" in done.stderr

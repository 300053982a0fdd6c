"""examples/demo.py runs, tells its story, and leaves nothing behind.

(Under a seccomp filter that refuses io_uring, on the thread backend:
``tests/test_backends.py``.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trio_aio

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo.py"


def _run_demo(cwd: Path, *args: str, backend: str) -> str:
    environment = dict(os.environ, TRIO_AIO_BACKEND=backend)
    done = subprocess.run(
        [sys.executable, str(DEMO), "--seconds", "0.2", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("name", trio_aio.available_backends())
def test_the_demo_compares_cancels_and_explains(tmp_path: Path, name: str) -> None:
    out = _run_demo(tmp_path, backend=name)
    assert f"backend: {name}" in out
    assert "sha256 matches" in out
    assert re.search(r"trio_aio did [\d.]+x the reads of trio\.open_file", out)
    reads = re.search(r"(\d+) returned their data \(every byte checked\), (\d+) raised", out)
    assert reads is not None, out
    assert int(reads[1]) + int(reads[2]) == 512
    if name == "threads":
        assert "were running in worker threads: a running thread cannot be stopped" in out
        assert "cancelled in the kernel" not in out  # nothing on threads is
    else:
        assert re.search(r"\d+ (cancelled in the kernel|asked back too late)", out), out
    for counter in ("submitted", "completed", "inline", "cancelled", "dropped", "in_flight"):
        assert re.search(rf"^   {counter} +[\d,]+  ", out, re.MULTILINE), counter
    assert list(tmp_path.iterdir()) == []  # its temporary directory is gone


def test_the_demo_works_in_the_directory_given(tmp_path: Path) -> None:
    (tmp_path / "keep").write_bytes(b"")
    out = _run_demo(Path.cwd(), str(tmp_path), backend="threads")
    assert "sha256 matches" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep"]  # only its own files removed


def test_the_demo_has_help() -> None:
    done = subprocess.run(
        [sys.executable, str(DEMO), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "DIRECTORY" in done.stdout.upper()
    assert "--seconds" in done.stdout

"""The README's quick start runs as pasted, in an empty directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.skipif(not README.exists(), reason="needs trio_aio's source tree")
def test_the_quick_start_runs_as_pasted(tmp_path: Path) -> None:
    text = README.read_text()
    section = text[text.index("## Quick start") :]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None
    env = {k: v for k, v in os.environ.items() if k != "TRIO_AIO_BACKEND"}  # (auto)
    ran = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    size, rest, backend = ran.stdout.split()
    assert (size, rest) == ("4096", str(256 * 1024))
    assert backend in ("io_uring", "posix_aio", "threads")

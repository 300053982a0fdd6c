"""Installing trio_aio: without a C compiler, and from its source distribution.

Both build from a fresh clone of this repository (or a copy of the tree, when
the tests run from an unpacked sdist) with the tools of the test venv and no
build isolation, so they need no network.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(
    not (ROOT / "setup.py").exists(), reason="needs trio_aio's source tree"
)


def fresh_source(dst: Path) -> Path:
    """A fresh clone of this checkout (its committed state), or a copy of the tree."""
    if (ROOT / ".git").exists():
        subprocess.run(["git", "clone", "-q", str(ROOT), str(dst)], check=True)
    else:
        shutil.copytree(
            ROOT, dst, ignore=shutil.ignore_patterns(".venv*", "build", "*.egg-info", "*.so")
        )
    return dst


@pytest.mark.skipif(sys.platform != "linux", reason="the extension is built on Linux only")
def test_without_a_compiler_the_install_warns_and_trio_aio_runs_on_threads(
    tmp_path: Path,
) -> None:
    src = fresh_source(tmp_path / "src")
    env = {**os.environ, "CC": str(tmp_path / "no-such-compiler")}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(tmp_path / "wheels"), str(src)],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    output = built.stdout + built.stderr
    warnings = [line for line in output.splitlines() if "WARNING: trio_aio" in line]
    assert len(warnings) == 1, output[-3000:]
    assert "thread backend" in warnings[0] and "apt install gcc" in warnings[0]
    (wheel,) = (tmp_path / "wheels").glob("trio_aio-*.whl")
    assert not [n for n in zipfile.ZipFile(wheel).namelist() if "_cring" in n]
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         "--disable-pip-version-check", str(wheel)],
        check=True,
    )  # fmt: skip
    check = """
import sys, trio, trio_aio
assert trio_aio.__file__.startswith(sys.argv[1]), trio_aio.__file__
assert trio_aio.available_backends() == ("threads",), trio_aio.available_backends()
try:
    trio_aio.select_backend("io_uring")
except trio_aio.BackendUnavailableError as exc:
    print(exc)
async def main():
    async with await trio_aio.open_file(sys.argv[0], "rb") as f:
        assert (await f.read_at(6, 0)) == b"\\nimpor"
        print(trio_aio.current_backend())
trio.run(main)
"""
    script = tmp_path / "check.py"
    script.write_text(check)
    env = {k: v for k, v in os.environ.items() if k != "TRIO_AIO_BACKEND"}  # (auto)
    ran = subprocess.run(
        [sys.executable, str(script), str(site)],
        env={**env, "PYTHONPATH": str(site)}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    reason, backend = ran.stdout.splitlines()
    assert "extension was not built" in reason and "apt install gcc" in reason
    assert backend == "threads"


def test_the_source_distribution_tests_itself(tmp_path: Path) -> None:
    """The sdist carries the tests with everything they import, and what a user reads."""
    src = fresh_source(tmp_path / "src")
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-c",
         f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
        cwd=src, check=True, capture_output=True,
    )  # fmt: skip
    (sdist,) = dist.glob("trio_aio-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (top,) = (tmp_path / "unpacked").iterdir()
    shipped = ["LICENSE", "CHANGELOG.md", "README.md", "examples/demo.py", "tests/conftest.py"]
    shipped += ["tests/helpers.py", "tests/fake_freebsd.py", "trio_aio/_ring/ring.c"]
    for name in shipped:
        assert (top / name).exists(), name
    # Collected from the unpacked tree, against the installed trio_aio: no
    # collection error (a missing helper, fake or conftest shows up here).
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         "--rootdir", str(top), str(top / "tests")],
        cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert " error" not in collected.stdout.splitlines()[-1], collected.stdout[-2000:]

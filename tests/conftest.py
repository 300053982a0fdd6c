from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

DATA_SIZE = 1 << 20


@pytest.fixture
def data_path(tmp_path: Path) -> Path:
    """A 1 MiB file of random bytes."""
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(DATA_SIZE))
    return path


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """A pipe (read fd, write fd); a read from it stays in flight until someone writes."""
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)

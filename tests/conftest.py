from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import ASYNCIO_BACKENDS, KERNEL

import trio_aio
from trio_aio import _backends, _file
from trio_aio._freebsd._backend import PosixAioBackend

try:
    from trio_aio._backends import _uring
except (ImportError, AssertionError):  # no io_uring extension here
    _uring = None  # type: ignore[assignment]

DATA_SIZE = 1 << 20

# A contract test (one that does I/O through a backend) runs once per backend
# that works on this machine, unless it is marked @pytest.mark.backends(...)
# with the ones it is about.  A test is a contract test if it asks for the
# ``backend`` fixture (as an argument, through a fixture that does, or with
# ``pytest.mark.usefixtures("backend")``, often as a module's ``pytestmark``),
# or if it is marked ``backends(...)``.
# Any other test (pure argument checks, mode parsing, messages) runs once,
# and may not use a backend: ``open_file`` there raises, saying why.
AVAILABLE = trio_aio.available_backends()

# Off FreeBSD, the posix_aio backend runs too, on a simulated FreeBSD kernel
# (tests/fake_freebsd.py): every test of the contract then checks its control
# blocks, its kqueue waits and its fallbacks.  On FreeBSD it runs for real.
SIMULATED_AIO = "posix_aio" not in AVAILABLE and hasattr(os, "pread")  # (not Windows)
TESTED = (*AVAILABLE, "posix_aio") if SIMULATED_AIO else AVAILABLE

# CI sets this (e.g. "io_uring,threads") so that a backend that silently
# stopped working on its hosts fails the run instead of skipping its tests.
_REQUIRED = [name for name in os.environ.get("TRIO_AIO_TEST_REQUIRE", "").split(",") if name]
_MISSING = sorted(set(_REQUIRED) - set(AVAILABLE))
if _MISSING:
    raise pytest.UsageError(
        f"TRIO_AIO_TEST_REQUIRE asks for {_MISSING}; only {list(AVAILABLE)} work here "
        f"(io_uring: {_backends.uring_problem() or 'works'})"
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends(*names): run only on these trio_aio backends (default: all)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Async tests not marked pytest.mark.anyio (which runs them on trio and on
    # asyncio) are trio tests, run by pytest-trio.
    for item in items:
        if (
            isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(item.obj)
            and item.get_closest_marker("anyio") is None
        ):
            item.add_marker(pytest.mark.trio)


# Fixtures that use a backend: a test asking for one is a contract test.
_BACKEND_FIXTURES = frozenset({"backend", "fake_kernel", "pipe", "ring_only"})


def _is_contract_test(metafunc: pytest.Metafunc) -> bool:
    definition = metafunc.definition
    if definition.get_closest_marker("backends") is not None:
        return True
    requested = set(inspect.signature(metafunc.function).parameters)
    for mark in definition.iter_markers("usefixtures"):
        requested.update(mark.args)
    # Through another fixture: only the fixtures above depend on ``backend``
    # (the ``backend`` fixture is autouse, so every test's closure has it).
    return bool(requested & _BACKEND_FIXTURES)


# The modules about cancellation, faults and the event loops: their async
# tests marked anyio also run in asyncio's other modes (debug, eager tasks,
# uvloop; see helpers.ASYNCIO_MODES).  Every module's do if the environment
# variable TRIO_AIO_TEST_ASYNCIO_MODES is "all" (that doubles the suite's time).
ASYNCIO_MODE_MODULES = frozenset(
    {
        "test_asyncio",
        "test_cancel",
        "test_faults",
        "test_loop_shutdown",
        "test_runs",
        "test_streams",
    }
)
_ALL_ASYNCIO_MODES = os.environ.get("TRIO_AIO_TEST_ASYNCIO_MODES", "") == "all"


def _anyio_backends(metafunc: pytest.Metafunc) -> list[Any]:
    """trio and asyncio; for some async tests marked anyio, asyncio's other modes too."""
    if (
        metafunc.definition.get_closest_marker("anyio") is None
        or not inspect.iscoroutinefunction(metafunc.function)
        or not (
            _ALL_ASYNCIO_MODES
            or metafunc.module.__name__.rpartition(".")[2] in ASYNCIO_MODE_MODULES
        )
    ):
        return ["trio", "asyncio"]
    return ["trio", *ASYNCIO_BACKENDS]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "anyio_backend" in metafunc.fixturenames and not any(
        "anyio_backend" in str(mark.args[0])
        for mark in metafunc.definition.iter_markers("parametrize")
    ):
        metafunc.parametrize("anyio_backend", _anyio_backends(metafunc), indirect=True)
    if "backend" in metafunc.fixturenames and _is_contract_test(metafunc):
        marker = metafunc.definition.get_closest_marker("backends")
        names = [name for name in TESTED if marker is None or name in marker.args]
        metafunc.parametrize("backend", names, indirect=True)


@pytest.fixture(autouse=True)
def backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str | None]:
    """The trio_aio backend a contract test runs on (selected for the whole process).

    Autouse only so that a test that is not a contract test (see
    ``_is_contract_test``) cannot use a backend by accident: for such a test
    this is None, and the backend it would get is one that says why not.
    """
    name: str | None = getattr(request, "param", None)
    if name is None:
        # Not a contract test: any use of a backend is refused, loudly.
        monkeypatch.setenv("TRIO_AIO_BACKEND", _REFUSED)
        _backends.reset_selection()
        yield None
        _backends.reset_selection()
        return
    if name == "posix_aio" and SIMULATED_AIO:
        from fake_freebsd import FakeKernel

        kernel = FakeKernel()
        monkeypatch.setitem(_backends._problems, "posix_aio", None)
        monkeypatch.setitem(
            _backends._instances, "posix_aio", PosixAioBackend(kernel, kernel.current_kqueue)
        )
        request.node.stash[KERNEL] = kernel
    assert trio_aio.select_backend(name) == name
    yield name
    _backends.reset_selection()


_REFUSED = (
    "none: this test runs once, without a backend; a test that does I/O asks for the "
    "backend fixture (see tests/conftest.py)"
)


@pytest.fixture
def fake_kernel(request: pytest.FixtureRequest, backend: str) -> object:
    """The simulated FreeBSD kernel of a posix_aio test (skipped elsewhere)."""
    if backend != "posix_aio" or not SIMULATED_AIO:
        pytest.skip("about the simulated FreeBSD kernel")
    return request.node.stash[KERNEL]


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> object:
    """Tests marked ``pytest.mark.anyio`` run on trio and on asyncio (see ``_anyio_backends``).

    A name, or anyio's (name, options) pair for the extra asyncio modes; tests
    that need the name ask for anyio's ``anyio_backend_name``.
    """
    return request.param


@pytest.fixture
def data_path(tmp_path: Path) -> Path:
    """A 1 MiB file of random bytes."""
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(DATA_SIZE))
    return path


@pytest.fixture
def ring_only(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    """On io_uring, every operation goes through the ring (no ``RWF_NOWAIT`` inline path)."""
    if _uring is not None:
        monkeypatch.setattr(_uring.UringFile, "_fast", lambda self, write: None)


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch, ring_only: None) -> Iterator[tuple[int, int]]:
    """A pipe (read fd, write fd); a read from it stays in flight until someone writes.

    Files opened on it (in this test) go to the backend, not to readiness
    waits, and on io_uring every read goes through the ring (pipes support
    ``RWF_NOWAIT``, so data already written would be served inline): the ring
    or a worker thread holds the read, as it would a slow disk.
    """
    monkeypatch.setattr(_file, "_STREAMS_BY_READINESS", False)
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)

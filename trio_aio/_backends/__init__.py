"""Backends, and the choice of one.

The file layer reaches the kernel only through :func:`current_backend_impl`,
which returns an object meeting :class:`~trio_aio._backends._base.Backend`.

The choice is process-wide and made once, on first use:

1. the name given to :func:`select_backend`, if it was called;
2. otherwise ``TRIO_AIO_BACKEND`` (``io_uring``, ``posix_aio``, ``threads``
   or ``auto``);
3. otherwise ``auto``: io_uring if a ring can be set up and supports every
   opcode trio_aio needs (Linux), else posix_aio if libc's AIO functions load
   (FreeBSD), else the thread backend.

A file keeps the backend it was opened with; changing the choice affects
files opened afterwards.  The io_uring module is imported only once io_uring
is known to work, so that the package imports where the extension is not
built (macOS, Windows).  posix_aio serves trio runs; under asyncio its files
do what the thread backend does.
"""

from __future__ import annotations

import os
import sys

from ._base import Backend, BackendUnavailableError

__all__ = [
    "ENV_VAR",
    "NAMES",
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "current_backend_impl",
    "select_backend",
]

ENV_VAR = "TRIO_AIO_BACKEND"
NAMES = ("io_uring", "posix_aio", "threads")
_REQUESTS = (*NAMES, "auto")

_selected: str | None = None  # what select_backend() asked for; None: the environment
_current: Backend | None = None  # the resolved choice
_problems: dict[str, str | None] = {}  # why a backend cannot work here (None: it can), once probed
_instances: dict[str, Backend] = {}


def _probe_uring() -> str | None:
    if sys.platform != "linux":
        return f"io_uring exists only on Linux, and this is {sys.platform}"
    from .._ring._ring import RingUnavailableError, check_available

    try:
        check_available()
    except RingUnavailableError as exc:
        return str(exc)
    return None


def _probe_posix_aio() -> str | None:
    from .._freebsd._aiocb import load_libc

    try:
        load_libc()
    except OSError as exc:
        return exc.strerror
    return None


_PROBES = {"io_uring": _probe_uring, "posix_aio": _probe_posix_aio}


def _problem(name: str) -> str | None:
    """Why backend ``name`` cannot work in this process, or None if it can (probed once)."""
    if name not in _problems:
        probe = _PROBES.get(name)
        _problems[name] = None if probe is None else probe()
    return _problems[name]


def uring_problem() -> str | None:
    """Why io_uring cannot work in this process, or None if it can (probed once)."""
    return _problem("io_uring")


def _instance(name: str) -> Backend:
    backend = _instances.get(name)
    if backend is None:
        if name == "threads":
            from ._threads import ThreadBackend

            backend = ThreadBackend()
        elif name == "posix_aio":
            from .._freebsd._backend import PosixAioBackend

            backend = PosixAioBackend()
        elif sys.platform == "linux":
            from ._uring import UringBackend

            backend = UringBackend()
        else:  # pragma: no cover - uring_problem() has already said so
            raise BackendUnavailableError("io_uring exists only on Linux")
        _instances[name] = backend
    return backend


def _resolve(request: str, source: str) -> Backend:
    if request not in _REQUESTS:
        raise ValueError(f"{source} must be one of {', '.join(_REQUESTS)}, not {request!r}")
    if request == "auto":
        return _instance(available_backends()[0])
    problem = _problem(request)
    if problem is None:
        return _instance(request)
    raise BackendUnavailableError(
        f"{source} asks for the {request} backend, which cannot work here: {problem}"
    )


def current_backend_impl() -> Backend:
    """The backend new files use, chosen on first call (see the module docstring)."""
    global _current
    if _current is None:
        if _selected is not None:
            _current = _resolve(_selected, "select_backend()")
        else:
            request = os.environ.get(ENV_VAR, "").strip() or "auto"
            _current = _resolve(request, f"the environment variable {ENV_VAR}")
    return _current


def select_backend(name: str) -> str:
    """Choose the backend for files opened from now on; returns the name of the one chosen."""
    global _selected, _current
    if not isinstance(name, str):
        raise TypeError(f"backend name must be a str, not {type(name).__name__}")
    backend = _resolve(name, "select_backend()")
    _selected, _current = name, backend
    return backend.name


def reset_selection() -> None:
    """Forget the choice (tests): the next use reads the environment again."""
    global _selected, _current
    _selected = _current = None


def available_backends() -> tuple[str, ...]:
    """The names of the backends that work here, best first."""
    return tuple(name for name in NAMES if _problem(name) is None)

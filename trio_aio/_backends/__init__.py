"""Backends: the layer that turns file operations into kernel work.

Only io_uring exists so far; the file layer reaches it through
:func:`current_backend_impl`, so that other backends can plug in here.
"""

from __future__ import annotations

from ._uring import UringBackend

_URING = UringBackend()


def current_backend_impl() -> UringBackend:
    """The backend the current run uses."""
    return _URING

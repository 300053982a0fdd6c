"""Run a Python script with io_uring refused, the way Docker's default seccomp profile refuses it.

    python tests/no_io_uring.py SCRIPT [ARGS...]

A seccomp filter makes ``io_uring_setup``, ``io_uring_enter`` and
``io_uring_register`` fail with ``EPERM`` for this process and its children;
everything else is allowed. Then SCRIPT runs as ``__main__``.
"""

from __future__ import annotations

import errno
import runpy
import sys

import pyseccomp as seccomp

if __name__ == "__main__":
    syscall_filter = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        syscall_filter.add_rule(seccomp.ERRNO(errno.EPERM), name)
    syscall_filter.load()
    sys.argv = sys.argv[1:]
    runpy.run_path(sys.argv[0], run_name="__main__")

"""A thin Python face for the C ring in ``ring.c``: setup, probe, prep, submit, reap.

No policy lives here either: :class:`Ring` is the engine's port to the kernel
(``_engine.RingPort``); ``_engine.py`` and ``_driver.py`` decide what to do.
"""

from __future__ import annotations

import errno
import os
import platform
from typing import Any

from . import _constants as C

try:
    from ._cring import ffi, lib
except ImportError as exc:  # pragma: no cover - only where the build skipped it
    ffi = lib = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

__all__ = [
    "Ring",
    "RingUnavailableError",
    "check_available",
    "check_opcodes",
    "ffi",
    "lib",
]

_REAP_BATCH = 1024

# (the same words as the warning of setup.py, which cannot import this)
HOW_TO_GET_IO_URING = (
    "install a C compiler and the kernel's headers (Debian/Ubuntu: apt install gcc "
    "linux-libc-dev; Fedora: dnf install gcc kernel-headers; Alpine: apk add gcc musl-dev "
    "linux-headers), then reinstall trio_aio (pip install --force-reinstall --no-binary "
    "trio_aio trio_aio)"
)


class RingUnavailableError(RuntimeError):
    """io_uring cannot be used here; the message says why."""


def kernel_release() -> str:
    """The running kernel's release string, for error messages."""
    return platform.release()


def setup_failure_message(err: int) -> str:
    """Explain an ``io_uring_setup`` failure, with the likely cause."""
    message = (
        f"io_uring_setup failed with {errno.errorcode.get(err, err)} ({os.strerror(err)}) "
        f"on Linux {kernel_release()}"
    )
    if err == errno.EPERM:
        disabled = _read_sysctl("/proc/sys/kernel/io_uring_disabled")
        if disabled not in (None, "0"):
            return f"{message}: the sysctl kernel.io_uring_disabled is {disabled}"
        return (
            f"{message}: a seccomp filter refuses it (Docker's default profile does), "
            "or the process lacks a permission io_uring needs"
        )
    if err == errno.ENOSYS:
        return f"{message}: the kernel has no io_uring, or a sandbox hides it"
    if err == errno.ENOMEM:
        return f"{message}: the locked-memory limit (ulimit -l) may be too low"
    return message


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def check_available() -> None:
    """Raise :class:`RingUnavailableError` unless a ring with every required opcode works here."""
    ring = Ring(2)
    try:
        check_opcodes(ring.supported, C.REQUIRED_OPCODES)
    finally:
        ring.close()


def missing_opcode_message(opcode: int) -> str:
    """Explain which opcode is missing and which kernel first has it."""
    name, since = C.OPCODE_NAMES.get(opcode, (f"opcode {opcode}", "?"))
    return (
        f"io_uring operation {name} is not supported by this kernel "
        f"(Linux {kernel_release()}); it needs Linux {since} or newer"
    )


def check_opcodes(supported: frozenset[int], required: tuple[int, ...]) -> None:
    """Raise RingUnavailableError naming every required opcode that is missing."""
    missing = [op for op in required if op not in supported]
    if missing:
        raise RingUnavailableError("; ".join(missing_opcode_message(op) for op in missing))


class Ring:
    """One io_uring instance: its fd, its mmap'd rings, and the opcodes it supports."""

    def __init__(self, entries: int, cq_entries: int = 0) -> None:
        if lib is None:
            raise RingUnavailableError(
                "the io_uring extension was not built when trio_aio was installed (no C "
                f"compiler or kernel headers then: {_IMPORT_ERROR}); to get io_uring, "
                f"{HOW_TO_GET_IO_URING}"
            )
        self._ring: Any = ffi.new("struct tai_ring *")
        rc = lib.tai_setup(self._ring, entries, cq_entries, C.IORING_SETUP_CLAMP)
        if rc < 0:
            raise RingUnavailableError(setup_failure_message(-rc))
        self.fd: int = self._ring.fd
        self.sq_entries: int = self._ring.sq_entries
        self.cq_entries: int = self._ring.cq_entries
        self.features: int = self._ring.features
        try:
            for feature, name, since in (
                (C.IORING_FEAT_NODROP, "IORING_FEAT_NODROP", "5.5"),
                (C.IORING_FEAT_RW_CUR_POS, "IORING_FEAT_RW_CUR_POS", "5.6"),
            ):
                if not self.features & feature:
                    raise RingUnavailableError(
                        f"io_uring feature {name} is missing on Linux {kernel_release()}; "
                        f"it needs Linux {since} or newer"
                    )
            self.supported = self._probe()
        except BaseException:
            self.close()
            raise
        self._ud = ffi.new("uint64_t[]", _REAP_BATCH)
        self._res = ffi.new("int32_t[]", _REAP_BATCH)
        self._prep = lib.tai_prep
        self._closed = False

    def _probe(self) -> frozenset[int]:
        ops = ffi.new("uint8_t[]", 256)
        rc = lib.tai_probe(self.fd, ops, 256)
        if rc < 0:
            raise RingUnavailableError(
                f"IORING_REGISTER_PROBE failed with {errno.errorcode.get(-rc, -rc)} on Linux "
                f"{kernel_release()}; trio_aio needs Linux 5.6 or newer"
            )
        return frozenset(i for i in range(256) if ops[i])

    @property
    def closed(self) -> bool:
        """Whether close() or forget() has run."""
        return self._closed

    def sq_space(self) -> int:
        """Free slots in the submission ring."""
        return int(lib.tai_sq_space(self._ring))

    def prep(
        self,
        opcode: int,
        fd: int,
        addr: int,
        length: int,
        off: int,
        op_flags: int,
        user_data: int,
        sqe_flags: int = 0,
    ) -> bool:
        """Write one SQE; False if the submission ring is full."""
        rc: int = self._prep(
            self._ring, opcode, sqe_flags, fd, addr, length, off, op_flags, user_data
        )
        return rc == 0

    def submit(self, min_complete: int = 0, flags: int = 0) -> int:
        """Publish written SQEs and enter the kernel once; the count consumed or -errno."""
        return int(lib.tai_submit(self._ring, min_complete, flags))

    def submit_some(self, limit: int, min_complete: int = 0, flags: int = 0) -> int:
        """As :meth:`submit`, but let the kernel consume at most ``limit`` SQEs (tests)."""
        return int(lib.tai_submit_some(self._ring, limit, min_complete, flags))

    def unsubmitted(self) -> int:
        """SQEs written (and published) that the kernel has not consumed."""
        return int(lib.tai_sq_pending(self._ring))

    def retract(self) -> int:
        """Take back every SQE the kernel has not consumed; returns how many.

        Safe because the kernel reads SQEs only inside io_uring_enter (no SQPOLL),
        and io_uring_enter only runs on this ring from our own calls.
        """
        n = self.unsubmitted()
        if n:
            lib.tai_retract(self._ring)
        return n

    def cq_overflowed(self) -> bool:
        """Whether the kernel holds completions that did not fit in the CQ ring."""
        return bool(lib.tai_sq_flags(self._ring) & C.IORING_SQ_CQ_OVERFLOW)

    def flush_overflow(self) -> None:
        """Ask the kernel to move the completions it kept aside into the CQ ring."""
        self.submit(0, C.IORING_ENTER_GETEVENTS)

    def cq_ready(self) -> int:
        """Completions waiting in the CQ ring."""
        return int(lib.tai_cq_ready(self._ring))

    def reap(self) -> list[tuple[int, int]]:
        """Take every completion in the CQ ring: ``(user_data, res)`` pairs."""
        out: list[tuple[int, int]] = []
        ud, res = self._ud, self._res
        while True:
            n = lib.tai_reap(self._ring, ud, res, _REAP_BATCH)
            out.extend(zip(ffi.unpack(ud, n), ffi.unpack(res, n), strict=True))
            if n < _REAP_BATCH:
                return out

    def close(self) -> None:
        """Unmap the rings and close the fd.  Idempotent."""
        if lib is not None and not getattr(self, "_closed", False):
            lib.tai_teardown(self._ring)
        self._closed = True

    # In a child after fork() the mappings and the fd are the child's own
    # copies: unmapping and closing them never touches the parent's ring.
    forget = close

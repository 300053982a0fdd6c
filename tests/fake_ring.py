"""An in-memory io_uring for the engine and the driver (the engine is sans-I/O, as h11's core).

``submit`` answers from a plan (take all, ``-EAGAIN``, a partial count, a hard
error); completions are posted by the test.
"""

from __future__ import annotations

from trio_aio._ring import _constants as C
from trio_aio._ring._engine import Op


class FakeRing:
    """A ring in memory: SQEs are recorded, ``submit`` answers from a plan."""

    def __init__(self, sq_entries: int = 8) -> None:
        self.submits = 0
        self.fd = -1
        self.sq_entries = sq_entries
        self.cq_entries = 2 * sq_entries
        self.supported = frozenset(C.REQUIRED_OPCODES)
        self.written: list[tuple[int, ...]] = []  # SQEs written, not yet consumed
        self.consumed: list[tuple[int, ...]] = []  # every SQE the "kernel" took
        self.answers: list[int] = []  # what the next submits return (default: take all)
        self.completions: list[tuple[int, int]] = []
        self.closed = False

    def sq_space(self) -> int:
        return self.sq_entries - len(self.written)

    def prep(
        self,
        opcode: int,
        fd: int,
        addr: int,
        length: int,
        off: int,
        op_flags: int,
        user_data: int,
        sqe_flags: int,
    ) -> bool:
        self.written.append((opcode, fd, addr, length, off, op_flags, user_data, sqe_flags))
        return True

    def submit(self) -> int:
        self.submits += 1
        rc = self.answers.pop(0) if self.answers else len(self.written)
        taken = max(rc, 0)
        self.consumed += self.written[:taken]
        del self.written[:taken]
        return rc

    def retract(self) -> int:
        n = len(self.written)
        self.written.clear()
        return n

    def reap(self) -> list[tuple[int, int]]:
        out, self.completions = self.completions, []
        return out

    def cq_overflowed(self) -> bool:
        return False

    def flush_overflow(self) -> None:
        raise AssertionError("no overflow here")

    def close(self) -> None:
        self.closed = True

    forget = close

    def complete(self, op: Op | int, res: int) -> None:
        """Post a completion for ``op`` (or a user_data: a cancel request's)."""
        self.completions.append((op if isinstance(op, int) else op.user_data, res))

    def taken(self, opcode: int) -> list[int]:
        """The user_data of the consumed SQEs of ``opcode``."""
        return [sqe[6] for sqe in self.consumed if sqe[0] == opcode]

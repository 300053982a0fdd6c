"""The sans-I/O engine and the ring, driven by hand with no event loop."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from trio_aio._loops import RingConfig
from trio_aio._ring import _constants as C
from trio_aio._ring import _driver
from trio_aio._ring._engine import DONE, DROPPED, QUEUED, SUBMITTED, Engine, Op
from trio_aio._ring._ring import (
    Ring,
    RingUnavailableError,
    check_opcodes,
    ffi,
    lib,
    missing_opcode_message,
    setup_failure_message,
)

# The engine needs no backend selection; run it once, where io_uring works.
pytestmark = pytest.mark.backends("io_uring")


def new_engine(entries: int, cq_entries: int = 0, max_in_flight: int = 0) -> Engine[Ring]:
    """An engine on a real ring, as the driver makes one."""
    return Engine(_driver.open_ring(RingConfig(entries, cq_entries)), max_in_flight)


def wait_all(engine: Engine[Ring], ops: list[Op]) -> None:
    """Block (this is a test, not an event loop) until every op is done."""
    while any(op.state != DONE for op in ops):
        engine.flush()
        engine.ring.submit(1)
        engine.reap()


def test_constants_match_the_header() -> None:
    for name in dir(C):
        if name.startswith("IORING_OP_") and hasattr(lib, name):
            assert getattr(C, name) == getattr(lib, name), name


def test_missing_opcode_error_names_opcode_and_kernel() -> None:
    message = missing_opcode_message(C.IORING_OP_STATX)
    assert "IORING_OP_STATX" in message
    assert "Linux 5.6" in message
    assert os.uname().release in message
    with pytest.raises(RingUnavailableError, match=r"IORING_OP_OPENAT.*5\.6"):
        check_opcodes(frozenset({C.IORING_OP_READ}), (C.IORING_OP_READ, C.IORING_OP_OPENAT))
    check_opcodes(frozenset({C.IORING_OP_READ}), (C.IORING_OP_READ,))


def test_this_kernel_supports_what_the_engine_needs() -> None:
    ring = Ring(8)
    try:
        check_opcodes(ring.supported, C.REQUIRED_OPCODES)
        assert ring.sq_entries == 8
        assert ring.features & C.IORING_FEAT_NODROP
    finally:
        ring.close()
    assert ring.closed
    ring.close()  # idempotent


def test_bad_ring_size_is_a_clear_error() -> None:
    with pytest.raises(RingUnavailableError, match="io_uring_setup failed with EINVAL"):
        Ring(0)


def test_engine_read_and_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "e"
    path.write_bytes(b"0123456789")
    fd = os.open(path, os.O_RDONLY)
    engine = new_engine(4)
    try:
        buf = ffi.new("char[]", 10)
        op = Op(C.IORING_OP_READ, fd, int(ffi.cast("uintptr_t", buf)), 10, 0, 0, buf)
        op.waiter = "me"
        engine.start(op)
        assert op.state == QUEUED and engine.needs_flush
        assert engine.flush() == []
        assert op.state == SUBMITTED
        assert engine.statistics().enter_calls == 1
        engine.ring.submit(1)
        assert engine.reap() == [op]
        assert (op.state, op.result, op.keep) == (DONE, 10, None)
        assert ffi.unpack(buf, 10) == b"0123456789"
        assert engine.idle
    finally:
        engine.close()
        os.close(fd)


def test_engine_submits_in_ring_sized_chunks(tmp_path: Path) -> None:
    engine = new_engine(4)
    try:
        ops = [Op(C.IORING_OP_NOP) for _ in range(10)]
        for op in ops:
            op.waiter = "w"
            engine.start(op)
        engine.flush()
        assert engine.statistics().enter_calls == 3  # 4 + 4 + 2
        wait_all(engine, ops)
        assert all(op.result == 0 for op in ops)
    finally:
        engine.close()


def test_engine_collects_overflowed_completions() -> None:
    engine = new_engine(4, cq_entries=8, max_in_flight=100)
    try:
        ops = [Op(C.IORING_OP_NOP) for _ in range(50)]
        for op in ops:
            op.waiter = "w"
            engine.start(op)
        engine.flush()  # 50 NOPs complete at once into 8 CQ slots
        done = engine.reap()
        assert len(done) == 50
        assert engine.statistics().cq_overflows > 0
        assert engine.idle
    finally:
        engine.close()


def test_cancel_queued_is_a_drop_and_in_flight_is_a_request(pipe: tuple[int, int]) -> None:
    r, _ = pipe
    engine = new_engine(8)
    try:
        queued = Op(C.IORING_OP_NOP)
        engine.start(queued)
        assert engine.cancel(queued) is True
        assert queued.state == DROPPED
        assert engine.idle

        buf = ffi.new("char[]", 1)
        op = Op(
            C.IORING_OP_READ, r, int(ffi.cast("uintptr_t", buf)), 1, C.CURRENT_POSITION, 0, buf
        )
        op.waiter = "w"
        engine.start(op)
        engine.flush()
        assert engine.reap() == []  # nobody wrote: in flight
        assert engine.cancel(op) is False
        assert engine.cancel(op) is False  # asked once only
        assert engine.statistics().cancelled == 1
        assert op.keep is buf  # held until the kernel answers
        wait_all(engine, [op])
        assert op.result in (-errno.ECANCELED, -errno.EINTR)
        assert op.keep is None
        # the cancel request itself completed too
        while not engine.idle:
            engine.ring.submit(1)
            engine.reap()
    finally:
        engine.close()


def test_engine_refuses_work_after_close() -> None:
    engine = new_engine(2)
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.start(Op(C.IORING_OP_NOP))


def test_an_sqe_field_that_does_not_fit_fails_the_operation_not_the_loop() -> None:
    engine = new_engine(4)
    try:
        bad = Op(C.IORING_OP_NOP, off=1 << 64)
        bad.waiter = "w"
        good = Op(C.IORING_OP_NOP)
        good.waiter = "w"
        engine.start(bad)
        engine.start(good)
        assert engine.flush() == [bad]
        assert bad.result == -errno.EINVAL
        wait_all(engine, [good])
        assert good.result == 0
    finally:
        engine.close()


def test_missing_required_opcodes_refuse_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Ring, "_probe", lambda self: frozenset({C.IORING_OP_READ}))
    with pytest.raises(RingUnavailableError, match="IORING_OP_WRITE"):
        _driver.open_ring(RingConfig(entries=2))


def test_setup_failures_say_why(monkeypatch: pytest.MonkeyPatch) -> None:
    from trio_aio._ring import _ring

    eperm = setup_failure_message(errno.EPERM)
    assert eperm.startswith("io_uring_setup failed with EPERM (Operation not permitted)")
    monkeypatch.setattr(_ring, "_read_sysctl", lambda path: "2")
    assert setup_failure_message(errno.EPERM).endswith("kernel.io_uring_disabled is 2")
    monkeypatch.setattr(_ring, "_read_sysctl", lambda path: "0")
    assert "seccomp" in setup_failure_message(errno.EPERM)
    assert "no io_uring" in setup_failure_message(errno.ENOSYS)
    assert "ulimit -l" in setup_failure_message(errno.ENOMEM)

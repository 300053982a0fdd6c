"""Self-test of tests/fusefs.py with plain blocking os calls."""

from __future__ import annotations

import errno
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fusefs import FuseFS, unavailable_reason

# The daemon has nothing to do with trio_aio's backends: run each test once.
pytestmark = pytest.mark.backends("threads")

WAIT = 10.0  # a safety net only: every wait ends on an event


@pytest.fixture
def make_fs() -> Iterator[Callable[..., FuseFS]]:
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    made: list[FuseFS] = []

    def make(**kwargs: Any) -> FuseFS:
        fs = FuseFS(**kwargs).start()
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.close()


@pytest.fixture
def fs(make_fs: Callable[..., FuseFS]) -> FuseFS:
    return make_fs(files={"a": bytes(range(256)) * 16})


class Call(threading.Thread):
    """Run a blocking call in a thread; keep its result or exception."""

    def __init__(self, fn: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.result: object = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.result = self.fn()
        except BaseException as exc:
            self.error = exc

    def finish(self) -> object:
        self.join(WAIT)
        assert not self.is_alive(), "the call did not finish"
        if self.error is not None:
            raise self.error
        return self.result


def test_read_write_create_unlink(fs: FuseFS) -> None:
    fd = os.open(fs.path("a"), os.O_RDWR)
    try:
        assert os.pread(fd, 10, 250) == bytes(range(250, 256)) + bytes(range(4))
        assert os.pwrite(fd, b"xyz", 1) == 3
        assert fs.files["a"][:5] == b"\x00xyz\x04"
        os.ftruncate(fd, 100)
        assert len(fs.files["a"]) == 100
        assert os.fstat(fd).st_size == 100
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(fs.path("new"), "wb") as f:
        f.write(b"hello")
    assert fs.files["new"] == b"hello"
    assert sorted(os.listdir(fs.mountpoint)) == ["a", "new"]
    os.unlink(fs.path("new"))
    assert "new" not in fs.files
    fs.files["set"] = bytearray(b"by the test")
    with open(fs.path("set"), "rb") as f:
        assert f.read() == b"by the test"
    assert fs.entries("read")[0] == ("read", "a", 250, 10)
    assert fs.count("fsync") == 1


def test_cached_mode(make_fs: Callable[..., FuseFS]) -> None:
    fs = make_fs(files={"a": b"cached"}, direct_io=False)
    with open(fs.path("a"), "rb") as f:
        assert f.read() == b"cached"
    fd = os.open(fs.path("a"), os.O_RDWR)
    try:
        os.pwrite(fd, b"C", 0)
    finally:
        os.close(fd)
    assert fs.files["a"] == b"Cached"


def test_fail(fs: FuseFS) -> None:
    fs.fail("read", errno.EIO, count=2, name="a")
    fd = os.open(fs.path("a"), os.O_RDONLY)
    try:
        for _ in range(2):
            with pytest.raises(OSError) as info:
                os.pread(fd, 10, 0)
            assert info.value.errno == errno.EIO
        assert os.pread(fd, 2, 0) == b"\x00\x01"
    finally:
        os.close(fd)
    fs.fail("open", errno.EACCES)
    with pytest.raises(PermissionError):
        os.open(fs.path("a"), os.O_RDONLY)


def test_short(fs: FuseFS) -> None:
    fs.short("read", 100, count=1)
    fs.short("write", 3, count=1)
    fd = os.open(fs.path("a"), os.O_RDWR)
    try:
        assert os.pread(fd, 4096, 0) == bytes(range(100))
        assert os.pread(fd, 300, 0) == bytes(range(256)) + bytes(range(44))
        assert os.pwrite(fd, b"abcdef", 0) == 3
        assert fs.files["a"][:6] == b"abc\x03\x04\x05"
    finally:
        os.close(fd)


def test_stall_release(fs: FuseFS) -> None:
    fd = os.open(fs.path("a"), os.O_RDONLY)
    try:
        stall = fs.stall("read", "a")
        call = Call(lambda: os.pread(fd, 4, 0))
        stall.wait_arrived(WAIT)
        assert call.is_alive()
        # Other requests are served while one is held.
        assert os.fstat(fd).st_size == 4096
        assert os.pread(fd, 2, 2) == b"\x02\x03"
        fs.files["a"][0] = 0xFF  # the reply is computed at release
        stall.release()
        assert call.finish() == b"\xff\x01\x02\x03"
        assert stall.replied.wait(WAIT)  # (set by the daemon thread just after its reply)
        assert not stall.interrupted.is_set()
        assert not stall.timed_out
        assert stall.request == ("read", "a", 0, 4)
    finally:
        os.close(fd)


def test_stall_release_with_error(fs: FuseFS) -> None:
    stall = fs.stall("fsync")
    fd = os.open(fs.path("a"), os.O_RDWR)
    try:
        call = Call(lambda: os.fsync(fd))
        stall.wait_arrived(WAIT)
        stall.release(errno.EIO)
        with pytest.raises(OSError) as info:
            call.finish()
        assert info.value.errno == errno.EIO
    finally:
        os.close(fd)


def test_stall_released_before_arrival_is_disarmed(fs: FuseFS) -> None:
    stall = fs.stall("read")
    stall.release()
    with open(fs.path("a"), "rb") as f:
        assert len(f.read()) == 4096
    assert not stall.arrived.is_set()


def test_stall_times_out(fs: FuseFS) -> None:
    stall = fs.stall("read", timeout=0.05)
    with open(fs.path("a"), "rb") as f:
        assert len(f.read()) == 4096
    assert stall.timed_out
    assert stall.replied.wait(WAIT)  # (set by the daemon thread just after its reply)


@pytest.fixture
def usr1() -> Iterator[threading.Event]:
    got = threading.Event()
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: got.set())
    yield got
    signal.signal(signal.SIGUSR1, old)


@pytest.mark.parametrize("honour", [True, False])
def test_interrupt(make_fs: Callable[..., FuseFS], usr1: threading.Event, honour: bool) -> None:
    fs = make_fs(files={"a": b"0123456789"}, honour_interrupt=honour)
    fd = os.open(fs.path("a"), os.O_RDONLY)
    try:
        stall = fs.stall("read", "a")
        call = Call(lambda: os.pread(fd, 4, 0))
        stall.wait_arrived(WAIT)
        assert call.ident is not None
        signal.pthread_kill(call.ident, signal.SIGUSR1)
        assert stall.interrupted.wait(WAIT)
        # (usr1 is set only when the main thread next runs Python code.)
        if honour:
            # The read failed with EINTR, which os.pread retried (PEP 475):
            # the second READ was not stalled.
            assert call.finish() == b"0123"
            assert stall.reply_error == errno.EINTR
            assert fs.count("read") == 2
        else:
            # The kernel keeps waiting for the reply.
            assert call.is_alive()
            assert not stall.replied.is_set()
            stall.release()
            assert call.finish() == b"0123"
            assert stall.reply_error == 0
            assert fs.count("read") == 1
        assert fs.count("interrupt") == 1
    finally:
        os.close(fd)


def test_close_with_a_stalled_request(make_fs: Callable[..., FuseFS]) -> None:
    fs = make_fs(files={"a": b"data"})
    fd = os.open(fs.path("a"), os.O_RDONLY)
    try:
        stall = fs.stall("read")
        call = Call(lambda: os.pread(fd, 4, 0))
        stall.wait_arrived(WAIT)
        fs.close()
        with pytest.raises(OSError) as info:
            call.finish()
        assert info.value.errno == errno.ECONNABORTED
        assert not os.path.ismount(fs.mountpoint)
        with pytest.raises(OSError) as info:
            os.pread(fd, 4, 0)
        assert info.value.errno == errno.ENOTCONN
    finally:
        # close() sends FLUSH, which fails too; the fd is closed all the same.
        with pytest.raises(OSError) as info:
            os.close(fd)
        assert info.value.errno == errno.ENOTCONN

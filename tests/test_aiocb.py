"""FreeBSD's control blocks as cffi lays them out, and their bookkeeping (any OS)."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from trio_aio._freebsd import _aiocb as A
from trio_aio._freebsd._aiocb import Job, JobList, ffi

pytestmark = pytest.mark.backends("threads")  # nothing here depends on the backend

# offsetof/sizeof in FreeBSD 14's <sys/aio.h> and <sys/signal.h> on LP64
# (amd64, arm64, riscv64, powerpc64), worked out from the headers by hand.
AIOCB = {
    "aio_fildes": 0,
    "aio_offset": 8,
    "aio_buf": 16,
    "aio_nbytes": 24,
    "__spare__": 32,
    "__spare2__": 40,
    "aio_lio_opcode": 48,
    "aio_reqprio": 52,
    "_aiocb_private": 56,
    "aio_sigevent": 80,
}
SIGEVENT = {"sigev_notify": 0, "sigev_signo": 4, "sigev_value": 8, "_sigev_un": 16}
LP64 = ffi.sizeof("void *") == 8 and ffi.sizeof("long") == 8


@pytest.mark.skipif(not LP64, reason="the figures are for LP64 FreeBSD")
def test_the_layout_is_freebsd_14s() -> None:
    assert {f: ffi.offsetof("struct aiocb", f) for f in AIOCB} == AIOCB
    assert ffi.sizeof("struct aiocb") == 160
    assert {f: ffi.offsetof("struct sigevent", f) for f in SIGEVENT} == SIGEVENT
    assert ffi.sizeof("struct sigevent") == 80
    assert ffi.offsetof("struct __aiocb_private", "error") == 8


_PROBE = r"""
#include <aio.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#define F(s, f) printf("%s %s %zu\n", #s, #f, offsetof(struct s, f))
int main(void) {
    F(aiocb, aio_fildes); F(aiocb, aio_offset); F(aiocb, aio_buf);
    F(aiocb, aio_nbytes); F(aiocb, aio_lio_opcode); F(aiocb, aio_reqprio);
    F(aiocb, _aiocb_private); F(aiocb, aio_sigevent);
    F(sigevent, sigev_notify); F(sigevent, sigev_notify_kqueue);
    F(sigevent, sigev_value); F(sigevent, sigev_notify_kevent_flags);
    printf("size aiocb %zu\nsize sigevent %zu\n", sizeof(struct aiocb), sizeof(struct sigevent));
    printf("const SIGEV_KEVENT %d\nconst AIO_LISTIO_MAX %d\nconst O_DSYNC %d\n",
           SIGEV_KEVENT, AIO_LISTIO_MAX, O_DSYNC);
    return 0;
}
"""


@pytest.mark.skipif(not sys.platform.startswith("freebsd"), reason="needs FreeBSD's <aio.h>")
def test_the_layout_matches_the_system_header(tmp_path: Path) -> None:
    """On FreeBSD, compile offsetof() against the real header and compare."""
    cc = shutil.which("cc")
    if cc is None:  # pragma: no cover
        pytest.skip("no C compiler")
    source = tmp_path / "probe.c"
    source.write_text("#include <fcntl.h>\n" + _PROBE)
    subprocess.run([cc, str(source), "-o", str(tmp_path / "probe")], check=True)
    out = subprocess.run([str(tmp_path / "probe")], capture_output=True, text=True, check=True)
    aliases = {"sigev_notify_kqueue": "sigev_signo", "sigev_notify_kevent_flags": "_sigev_un"}
    for line in out.stdout.splitlines():
        kind, name, value = line.split()
        if kind == "size":
            assert ffi.sizeof(f"struct {name}") == int(value), line
        elif kind == "const":
            assert getattr(A, name) == int(value), line
        else:
            assert ffi.offsetof(f"struct {kind}", aliases.get(name, name)) == int(value), line


def test_load_libc_says_why_not_here() -> None:
    if sys.platform.startswith("freebsd"):  # pragma: no cover
        assert A.load_libc() is A.load_libc()
        return
    with pytest.raises(OSError, match="FreeBSD") as info:
        A.load_libc()
    assert info.value.errno == errno.ENOSYS


class StubLibc:
    """Answers as told; records the calls."""

    def __init__(self, **answers: Any) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.errno = 0

    def _answer(self, name: str) -> int:
        self.calls.append(name)
        value = self.answers.get(name, 0)
        if isinstance(value, tuple):
            value, self.errno = value
        return int(value)

    def aio_read(self, cb: Any) -> int:
        return self._answer("aio_read")

    def aio_write(self, cb: Any) -> int:
        return self._answer("aio_write")

    def aio_readv(self, cb: Any) -> int:
        return self._answer("aio_readv")

    def aio_writev(self, cb: Any) -> int:
        return self._answer("aio_writev")

    def aio_fsync(self, op: int, cb: Any) -> int:
        return self._answer("aio_fsync")

    def aio_error(self, cb: Any) -> int:
        return self._answer("aio_error")

    def aio_return(self, cb: Any) -> int:
        return self._answer("aio_return")

    def aio_cancel(self, fd: int, cb: Any) -> int:
        return self._answer("aio_cancel")

    def lio_listio(self, mode: int, cbs: Any, n: int, sig: Any) -> int:
        return self._answer("lio_listio")


def _address(cdata: Any) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def test_a_transfer_fills_the_control_block_and_keeps_its_buffer() -> None:
    buf = bytearray(4096)
    job = Job.transfer(StubLibc(), 7, buf, 1 << 40, write=False)
    cb = job.cb
    assert (cb.aio_fildes, cb.aio_offset, cb.aio_nbytes) == (7, 1 << 40, 4096)
    assert cb.aio_lio_opcode == A.LIO_READ
    assert _address(cb.aio_buf) == _address(ffi.from_buffer(buf))
    assert (cb._aiocb_private.status, cb._aiocb_private.error) == (0, 0)
    assert cb.aio_sigevent.sigev_notify == A.SIGEV_NONE
    assert job.ident == _address(cb)
    with pytest.raises(BufferError):
        buf.append(0)  # the kernel may write into it: it cannot move
    job.release()
    buf.append(0)


def test_a_write_needs_no_writable_buffer_and_a_read_does() -> None:
    job = Job.transfer(StubLibc(), 3, b"abc", 0, write=True)
    assert job.cb.aio_lio_opcode == A.LIO_WRITE
    with pytest.raises(BufferError):
        Job.transfer(StubLibc(), 3, b"abc", 0, write=False)


def test_register_asks_for_a_oneshot_kevent_on_the_kqueue() -> None:
    job = Job(StubLibc(), 3, 0)
    job.register(42, 0xABC)
    sig = job.cb.aio_sigevent
    assert sig.sigev_notify == A.SIGEV_KEVENT
    assert sig.sigev_signo == 42  # sigev_notify_kqueue
    assert _address(sig.sigev_value.sival_ptr) == 0xABC
    assert sig._sigev_un._kevent_flags == A.EV_ONESHOT


def test_a_vectored_job_points_at_an_iovec_array() -> None:
    bufs = [bytearray(3), bytearray(5)]
    job = Job.vectored(StubLibc(), 3, bufs, 10, write=False)
    assert job.cb.aio_nbytes == 2  # aio_iovcnt
    iov = ffi.cast("struct iovec *", job.cb.aio_buf)
    assert [iov[i].iov_len for i in range(2)] == [3, 5]
    assert _address(iov[1].iov_base) == _address(ffi.from_buffer(bufs[1]))


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ({"aio_error": 0, "aio_return": 4096}, 4096),
        ({"aio_error": errno.EIO, "aio_return": (-1, errno.EIO)}, errno.EIO),
        ({"aio_error": errno.ECANCELED, "aio_return": (-1, errno.ECANCELED)}, errno.ECANCELED),
        # refused in a list: no kernel job (aio_return says EINVAL), aio_error says why
        ({"aio_error": errno.EAGAIN, "aio_return": (-1, errno.EINVAL)}, errno.EAGAIN),
    ],
)
def test_collect_maps_aio_error_and_aio_return(answers: dict[str, Any], expected: int) -> None:
    libc = StubLibc(**answers)
    buf = bytearray(8)
    job = Job.transfer(libc, 3, buf, 0, write=False)
    res = job.collect()
    if isinstance(res, OSError):
        assert res.errno == expected
    else:
        assert res == expected
    assert libc.calls == ["aio_error", "aio_return"]  # aio_return exactly once
    buf.append(0)  # released


def test_collecting_a_job_in_progress_is_a_bug() -> None:
    job = Job(StubLibc(aio_error=errno.EINPROGRESS), 3, 0)
    assert not job.done()
    with pytest.raises(RuntimeError, match="before it finished"):
        job.collect()


def test_submit_reports_a_refusal_and_cancel_needs_a_submission() -> None:
    libc = StubLibc(aio_read=(-1, errno.EAGAIN))
    job = Job.transfer(libc, 3, bytearray(1), 0, write=False)
    refused = job.submit("read")
    assert refused is not None and refused.errno == errno.EAGAIN
    job.cancel()
    assert libc.calls == ["aio_read"]  # nothing to cancel: the kernel never had it
    libc.answers["aio_read"] = 0
    assert job.submit("read") is None
    job.cancel()
    job.cancel()
    assert libc.calls == ["aio_read", "aio_read", "aio_cancel"]  # once
    assert job.cancel_requested


def test_a_list_is_an_array_of_control_block_pointers_at_a_stable_address() -> None:
    jobs = [Job(StubLibc(), 3, i) for i in range(A.AIO_LISTIO_MAX)]
    jobs_list = JobList(StubLibc(), jobs)
    assert jobs_list.ident == _address(jobs_list.array)
    assert [_address(jobs_list.array[i]) for i in range(len(jobs))] == [j.ident for j in jobs]
    jobs_list.register(5, jobs_list.ident)
    assert jobs_list.sig.sigev_notify == A.SIGEV_KEVENT
    assert jobs_list.sig.sigev_signo == 5
    assert jobs_list.sig._sigev_un._kevent_flags == 0  # EVFILT_LIO: level-triggered
    assert all(j.cb.aio_sigevent.sigev_notify == A.SIGEV_NONE for j in jobs)
    with pytest.raises(ValueError, match="1 to 16"):
        JobList(StubLibc(), [*jobs, Job(StubLibc(), 3, 0)])
    with pytest.raises(ValueError, match="1 to 16"):
        JobList(StubLibc(), [])


@pytest.mark.parametrize(
    ("answer", "whole_failure"),
    [(0, None), ((-1, errno.EAGAIN), None), ((-1, errno.EIO), None), ((-1, errno.EINVAL), 22)],
)
def test_a_list_fails_as_a_whole_only_when_no_job_was_queued(
    answer: Any, whole_failure: int | None
) -> None:
    libc = StubLibc(lio_listio=answer)
    jobs_list = JobList(libc, [Job(libc, 3, 0), Job(libc, 3, 1)])
    failure = jobs_list.submit()
    assert (failure.errno if failure else None) == whole_failure
    jobs_list.cancel()
    assert libc.calls.count("aio_cancel") == (0 if whole_failure else 2)

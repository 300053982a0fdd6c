"""cffi build script for the io_uring ring (API mode, compiled at install time).

setuptools runs it through ``cffi_modules`` in ``setup.py``; it compiles
``ring.c`` against the kernel's UAPI header ``<linux/io_uring.h>`` and nothing
else.  On platforms without io_uring the extension is skipped (see setup.py).
"""

from __future__ import annotations

from pathlib import Path

from cffi import FFI

CDEF = """
struct tai_ring {
    int fd;
    unsigned sq_entries;
    unsigned cq_entries;
    unsigned features;
    unsigned flags;
    ...;
};

int tai_setup(struct tai_ring *r, unsigned entries, unsigned cq_entries, unsigned flags);
void tai_teardown(struct tai_ring *r);
unsigned tai_sq_space(struct tai_ring *r);
unsigned tai_sq_pending(struct tai_ring *r);
int tai_prep(struct tai_ring *r, uint8_t opcode, uint8_t sqe_flags, int32_t fd,
             uint64_t addr, uint32_t len, uint64_t off, uint32_t op_flags,
             uint64_t user_data);
int tai_submit(struct tai_ring *r, unsigned min_complete, unsigned flags);
int tai_submit_some(struct tai_ring *r, unsigned limit, unsigned min_complete, unsigned flags);
void tai_retract(struct tai_ring *r);
unsigned tai_cq_ready(struct tai_ring *r);
unsigned tai_reap(struct tai_ring *r, uint64_t *user_data, int32_t *res, unsigned max);
unsigned tai_sq_flags(struct tai_ring *r);
int tai_probe(int fd, uint8_t *ops, unsigned n);

/* Only the fields we read; cffi takes the real layout from <linux/stat.h>. */
struct statx_timestamp { int64_t tv_sec; uint32_t tv_nsec; ...; };
struct statx {
    uint32_t stx_mask;
    uint32_t stx_blksize;
    uint32_t stx_nlink;
    uint32_t stx_uid;
    uint32_t stx_gid;
    uint16_t stx_mode;
    uint64_t stx_ino;
    uint64_t stx_size;
    uint64_t stx_blocks;
    struct statx_timestamp stx_atime;
    struct statx_timestamp stx_ctime;
    struct statx_timestamp stx_mtime;
    uint32_t stx_rdev_major;
    uint32_t stx_rdev_minor;
    uint32_t stx_dev_major;
    uint32_t stx_dev_minor;
    ...;
};

struct iovec { void *iov_base; size_t iov_len; ...; };


void tai_statx_dioalign(const struct statx *sx, uint32_t *mem, uint32_t *off);

/* Values from <linux/io_uring.h>, checked against trio_aio/_ring/_constants.py
   by the test suite. */
#define IORING_OP_NOP ...
#define IORING_OP_READV ...
#define IORING_OP_WRITEV ...
#define IORING_OP_FSYNC ...
#define IORING_OP_OPENAT ...
#define IORING_OP_CLOSE ...
#define IORING_OP_STATX ...
#define IORING_OP_READ ...
#define IORING_OP_WRITE ...
#define IORING_OP_FALLOCATE ...
#define IORING_OP_ASYNC_CANCEL ...
#define IOSQE_ASYNC ...
"""

SOURCE = (
    "#include <sys/uio.h>\n#include <linux/stat.h>\n"
    + Path(__file__).with_name("ring.c").read_text()
)

ffibuilder = FFI()
ffibuilder.cdef(CDEF)
# The limited API: one wheel (cp310-abi3) serves every CPython from 3.10 on.
ffibuilder.set_source(
    "trio_aio._ring._cring", SOURCE, extra_compile_args=["-O2"], py_limited_api=True
)

if __name__ == "__main__":  # pragma: no cover - manual builds
    ffibuilder.compile(verbose=True)

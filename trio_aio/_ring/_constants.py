"""io_uring ABI numbers.

Opcode numbers and flag bits are kernel ABI and never change once released, so
they are written down here rather than taken from whatever ``<linux/io_uring.h>``
the build machine has (Debian 12's is 6.1, which lacks ``FTRUNCATE``).  The
test suite checks every one the compiled header knows against these values.
"""

from __future__ import annotations

# Opcodes, with the first kernel that has each one.
IORING_OP_NOP = 0  # 5.1
IORING_OP_READV = 1  # 5.1
IORING_OP_WRITEV = 2  # 5.1
IORING_OP_FSYNC = 3  # 5.1
IORING_OP_FALLOCATE = 17  # 5.6
IORING_OP_OPENAT = 18  # 5.6
IORING_OP_CLOSE = 19  # 5.6
IORING_OP_STATX = 21  # 5.6
IORING_OP_READ = 22  # 5.6
IORING_OP_WRITE = 23  # 5.6
IORING_OP_ASYNC_CANCEL = 14  # 5.5
IORING_OP_FTRUNCATE = 55  # 6.9

OPCODE_NAMES = {
    IORING_OP_NOP: ("IORING_OP_NOP", "5.1"),
    IORING_OP_READV: ("IORING_OP_READV", "5.1"),
    IORING_OP_WRITEV: ("IORING_OP_WRITEV", "5.1"),
    IORING_OP_FSYNC: ("IORING_OP_FSYNC", "5.1"),
    IORING_OP_ASYNC_CANCEL: ("IORING_OP_ASYNC_CANCEL", "5.5"),
    IORING_OP_FALLOCATE: ("IORING_OP_FALLOCATE", "5.6"),
    IORING_OP_OPENAT: ("IORING_OP_OPENAT", "5.6"),
    IORING_OP_CLOSE: ("IORING_OP_CLOSE", "5.6"),
    IORING_OP_STATX: ("IORING_OP_STATX", "5.6"),
    IORING_OP_READ: ("IORING_OP_READ", "5.6"),
    IORING_OP_WRITE: ("IORING_OP_WRITE", "5.6"),
    IORING_OP_FTRUNCATE: ("IORING_OP_FTRUNCATE", "6.9"),
}

# What the engine cannot work without.  FTRUNCATE is optional: truncate()
# falls back to a worker thread on kernels older than 6.9.
REQUIRED_OPCODES = (
    IORING_OP_READV,
    IORING_OP_WRITEV,
    IORING_OP_READ,
    IORING_OP_WRITE,
    IORING_OP_ASYNC_CANCEL,
    IORING_OP_FSYNC,
    IORING_OP_OPENAT,
    IORING_OP_CLOSE,
    IORING_OP_STATX,
    IORING_OP_FALLOCATE,
)

# sqe->flags
IOSQE_ASYNC = 1 << 4  # 5.6: issue from an io-wq worker, never inline in io_uring_enter

# io_uring_setup flags
IORING_SETUP_CLAMP = 1 << 4  # 5.6

# io_uring_params.features
IORING_FEAT_SINGLE_MMAP = 1 << 0  # 5.4
IORING_FEAT_NODROP = 1 << 1  # 5.5
IORING_FEAT_RW_CUR_POS = 1 << 3  # 5.6

# io_uring_enter flags
IORING_ENTER_GETEVENTS = 1 << 0

# sq_ring->flags
IORING_SQ_CQ_OVERFLOW = 1 << 1

# fsync_flags
IORING_FSYNC_DATASYNC = 1 << 0

# An offset of -1 (as u64) means "the file's current position" (RW_CUR_POS).
CURRENT_POSITION = (1 << 64) - 1

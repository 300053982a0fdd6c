/*
 * The C half of trio_aio's io_uring ring: mechanics only, no policy.
 *
 * It sets a ring up (io_uring_setup + the three mmaps), writes SQEs into the
 * submission ring, publishes them with io_uring_enter, copies CQEs out of the
 * completion ring, and probes the supported opcodes.  Which operations to
 * queue, when to submit, what a result means and how many may be in flight
 * are all decided in Python: trio_aio/_ring/_engine.py (the queue and the
 * operations' states), _ring/_driver.py (when to submit and reap) and
 * trio_aio/_backends/_uring.py (what each operation is).
 *
 * Only the kernel's UAPI header is needed: no liburing.
 *
 * Some facts about the shared rings, written down so nobody has to rediscover
 * them:
 *
 * - The kernel reads SQEs only inside io_uring_enter (we never use SQPOLL), and
 *   only those between its head and the tail we have published.  So an SQE we
 *   have written but not published is still entirely ours.
 * - Userspace owns the SQ tail and the CQ head; the kernel owns the SQ head and
 *   the CQ tail.  Our stores to what we own are release stores, our loads of
 *   what the kernel owns are acquire loads (the same barriers liburing uses).
 * - With IORING_FEAT_SINGLE_MMAP (5.4) the SQ and CQ rings share one mapping.
 * - With IORING_FEAT_NODROP (5.5) a completion that finds the CQ ring full is
 *   kept on a kernel list and IORING_SQ_CQ_OVERFLOW is set in the SQ flags;
 *   io_uring_enter with IORING_ENTER_GETEVENTS moves it into the ring once
 *   there is room.  While that list is non-empty, older kernels refuse new
 *   submissions with EBUSY.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/io_uring.h>
#include <linux/stat.h>

#ifndef __NR_io_uring_setup
#define __NR_io_uring_setup 425
#endif
#ifndef __NR_io_uring_enter
#define __NR_io_uring_enter 426
#endif
#ifndef __NR_io_uring_register
#define __NR_io_uring_register 427
#endif

struct tai_ring {
    int fd;
    unsigned sq_entries;
    unsigned cq_entries;
    unsigned features;
    unsigned flags;
    /* submission ring */
    unsigned *sq_khead;
    unsigned *sq_ktail;
    unsigned *sq_kflags;
    unsigned *sq_kdropped;
    unsigned *sq_array;
    unsigned sq_mask;
    unsigned sq_tail; /* our tail; published to *sq_ktail by tai_publish */
    struct io_uring_sqe *sqes;
    /* completion ring */
    unsigned *cq_khead;
    unsigned *cq_ktail;
    unsigned cq_mask;
    struct io_uring_cqe *cqes;
    /* mappings */
    void *sq_ring;
    size_t sq_ring_size;
    void *cq_ring;
    size_t cq_ring_size;
    size_t sqes_size;
};

static int tai_sys_setup(unsigned entries, struct io_uring_params *p)
{
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int tai_sys_enter(int fd, unsigned to_submit, unsigned min_complete,
                         unsigned flags)
{
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags,
                        NULL, (size_t)0);
}

static void tai_unmap(struct tai_ring *r)
{
    if (r->sqes != NULL && r->sqes != MAP_FAILED)
        munmap(r->sqes, r->sqes_size);
    if (r->cq_ring != NULL && r->cq_ring != MAP_FAILED && r->cq_ring != r->sq_ring)
        munmap(r->cq_ring, r->cq_ring_size);
    if (r->sq_ring != NULL && r->sq_ring != MAP_FAILED)
        munmap(r->sq_ring, r->sq_ring_size);
    r->sqes = NULL;
    r->cq_ring = NULL;
    r->sq_ring = NULL;
}

/* Set up a ring.  Returns 0, or -errno (nothing is left open on failure). */
static int tai_setup(struct tai_ring *r, unsigned entries, unsigned cq_entries,
                     unsigned flags)
{
    struct io_uring_params p;
    unsigned i;
    int fd, err;

    memset(r, 0, sizeof(*r));
    r->fd = -1;
    memset(&p, 0, sizeof(p));
    p.flags = flags;
    if (cq_entries) {
        p.flags |= IORING_SETUP_CQSIZE;
        p.cq_entries = cq_entries;
    }
    fd = tai_sys_setup(entries, &p);
    if (fd < 0)
        return -errno;

    r->sq_ring_size = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    r->cq_ring_size = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        if (r->cq_ring_size > r->sq_ring_size)
            r->sq_ring_size = r->cq_ring_size;
        r->cq_ring_size = r->sq_ring_size;
    }
    r->sq_ring = mmap(NULL, r->sq_ring_size, PROT_READ | PROT_WRITE,
                      MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQ_RING);
    if (r->sq_ring == MAP_FAILED)
        goto fail;
    if (p.features & IORING_FEAT_SINGLE_MMAP) {
        r->cq_ring = r->sq_ring;
    } else {
        r->cq_ring = mmap(NULL, r->cq_ring_size, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_CQ_RING);
        if (r->cq_ring == MAP_FAILED)
            goto fail;
    }
    r->sqes_size = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(NULL, r->sqes_size, PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_POPULATE, fd, IORING_OFF_SQES);
    if (r->sqes == MAP_FAILED)
        goto fail;

    r->fd = fd;
    r->sq_entries = p.sq_entries;
    r->cq_entries = p.cq_entries;
    r->features = p.features;
    r->flags = p.flags;
    r->sq_khead = (unsigned *)((char *)r->sq_ring + p.sq_off.head);
    r->sq_ktail = (unsigned *)((char *)r->sq_ring + p.sq_off.tail);
    r->sq_kflags = (unsigned *)((char *)r->sq_ring + p.sq_off.flags);
    r->sq_kdropped = (unsigned *)((char *)r->sq_ring + p.sq_off.dropped);
    r->sq_array = (unsigned *)((char *)r->sq_ring + p.sq_off.array);
    r->sq_mask = *(unsigned *)((char *)r->sq_ring + p.sq_off.ring_mask);
    r->sq_tail = *r->sq_ktail;
    r->cq_khead = (unsigned *)((char *)r->cq_ring + p.cq_off.head);
    r->cq_ktail = (unsigned *)((char *)r->cq_ring + p.cq_off.tail);
    r->cq_mask = *(unsigned *)((char *)r->cq_ring + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)((char *)r->cq_ring + p.cq_off.cqes);
    /* An identity map: SQE slot i is always array entry i. */
    for (i = 0; i < p.sq_entries; i++)
        r->sq_array[i] = i;
    return 0;

fail:
    err = errno;
    tai_unmap(r);
    close(fd);
    r->fd = -1;
    return -err;
}

/* Unmap and close.  Safe to call twice. */
static void tai_teardown(struct tai_ring *r)
{
    tai_unmap(r);
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
}

/* Free SQ slots we can still fill. */
static unsigned tai_sq_space(struct tai_ring *r)
{
    unsigned head = __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
    return r->sq_entries - (r->sq_tail - head);
}

/* SQEs written and not yet consumed by the kernel. */
static unsigned tai_sq_pending(struct tai_ring *r)
{
    unsigned head = __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
    return r->sq_tail - head;
}

/* Write one SQE.  The arguments map one to one onto the SQE's fields (the
 * kernel reads `off` as addr2 for STATX, `op_flags` as rw_flags, fsync_flags,
 * open_flags, cancel_flags, ... depending on the opcode).  Returns 0, or
 * -EBUSY if the submission ring is full. */
static int tai_prep(struct tai_ring *r, uint8_t opcode, uint8_t sqe_flags,
                    int32_t fd, uint64_t addr, uint32_t len, uint64_t off,
                    uint32_t op_flags, uint64_t user_data)
{
    struct io_uring_sqe *sqe;

    if (tai_sq_space(r) == 0)
        return -EBUSY;
    sqe = &r->sqes[r->sq_tail & r->sq_mask];
    memset(sqe, 0, sizeof(*sqe));
    sqe->opcode = opcode;
    sqe->flags = sqe_flags;
    sqe->fd = fd;
    sqe->addr = addr;
    sqe->len = len;
    sqe->off = off;
    sqe->rw_flags = (__kernel_rwf_t)op_flags;
    sqe->user_data = user_data;
    r->sq_tail++;
    return 0;
}

/* Publish the written SQEs and call io_uring_enter once, asking the kernel to
 * consume at most `limit` of them (tests use a small limit to make a partial
 * submission happen).  Returns the number the kernel consumed, or -errno
 * (EINTR is retried here). */
static int tai_submit_some(struct tai_ring *r, unsigned limit,
                           unsigned min_complete, unsigned flags)
{
    unsigned to_submit;
    int ret;

    __atomic_store_n(r->sq_ktail, r->sq_tail, __ATOMIC_RELEASE);
    to_submit = tai_sq_pending(r);
    if (to_submit > limit)
        to_submit = limit;
    if (min_complete)
        flags |= IORING_ENTER_GETEVENTS;
    do {
        ret = tai_sys_enter(r->fd, to_submit, min_complete, flags);
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : ret;
}

/* Publish the written SQEs and call io_uring_enter once for all of them. */
static int tai_submit(struct tai_ring *r, unsigned min_complete, unsigned flags)
{
    return tai_submit_some(r, (unsigned)-1, min_complete, flags);
}

/* Take back every published SQE the kernel has not consumed (after a failed
 * or partial io_uring_enter).  Safe only because the kernel reads SQEs solely
 * inside io_uring_enter, which only our own thread calls. */
static void tai_retract(struct tai_ring *r)
{
    r->sq_tail = __atomic_load_n(r->sq_khead, __ATOMIC_ACQUIRE);
    __atomic_store_n(r->sq_ktail, r->sq_tail, __ATOMIC_RELEASE);
}

/* CQEs waiting to be reaped. */
static unsigned tai_cq_ready(struct tai_ring *r)
{
    return __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE) - *r->cq_khead;
}

/* Copy up to `max` CQEs out and release their slots.  Returns the count. */
static unsigned tai_reap(struct tai_ring *r, uint64_t *user_data, int32_t *res,
                         unsigned max)
{
    unsigned head = *r->cq_khead;
    unsigned tail = __atomic_load_n(r->cq_ktail, __ATOMIC_ACQUIRE);
    unsigned n = 0;

    while (head != tail && n < max) {
        struct io_uring_cqe *cqe = &r->cqes[head & r->cq_mask];
        user_data[n] = cqe->user_data;
        res[n] = cqe->res;
        head++;
        n++;
    }
    __atomic_store_n(r->cq_khead, head, __ATOMIC_RELEASE);
    return n;
}

static unsigned tai_sq_flags(struct tai_ring *r)
{
    return __atomic_load_n(r->sq_kflags, __ATOMIC_ACQUIRE);
}

/* Fill ops[0..n) with 1 for each opcode the kernel supports.  Returns the
 * kernel's last known opcode, or -errno. */
static int tai_probe(int fd, uint8_t *ops, unsigned n)
{
    /* struct io_uring_probe ends in a flexible array of 256 io_uring_probe_op */
    char storage[sizeof(struct io_uring_probe) + 256 * sizeof(struct io_uring_probe_op)];
    struct io_uring_probe *probe = (struct io_uring_probe *)storage;
    unsigned i;
    int ret;

    memset(storage, 0, sizeof(storage));
    ret = (int)syscall(__NR_io_uring_register, fd, IORING_REGISTER_PROBE, probe, 256);
    if (ret < 0)
        return -errno;
    for (i = 0; i < n; i++)
        ops[i] = (i <= probe->last_op && (probe->ops[i].flags & IO_URING_OP_SUPPORTED)) ? 1 : 0;
    return probe->last_op;
}

/* Direct-I/O alignment from a statx result (STATX_DIOALIGN, Linux 6.1):
   0 and 0 where the headers or the kernel do not report it. */
void tai_statx_dioalign(const struct statx *sx, uint32_t *mem, uint32_t *off)
{
#ifdef STATX_DIOALIGN
    if (sx->stx_mask & STATX_DIOALIGN) {
        *mem = sx->stx_dio_mem_align;
        *off = sx->stx_dio_offset_align;
        return;
    }
#endif
    *mem = 0;
    *off = 0;
}

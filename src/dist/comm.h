/* comm.h — the communicator of the tensor/expert-parallel engine: one rank's handle on a group of `world`
 * ranks, and the four collectives the partitioned forward needs (docs/MULTI_GPU.md). Two implementations
 * behind one small table of functions:
 *
 *   comm_threads.c  ranks are threads of one process sharing host memory (the CPU backend, CI tests).
 *                   Deterministic: every element of a reduction is summed in rank order 0, 1, ..., N-1,
 *                   whichever thread does the arithmetic, so every rank holds bitwise-identical results.
 *   comm_nccl.c     NCCL, one rank per GPU, collectives enqueued on the caller's CUDA stream (so they are
 *                   captured in the decode CUDA graph). libnccl is loaded with dlopen at creation: no
 *                   link-time dependency, and a clear DSV4_ERR_UNSUPPORTED when it is absent.
 *
 * Contract common to both: every rank calls the same collectives in the same order with the same counts
 * (the forward's control flow is replicated, so this holds by construction). Buffers are host memory for
 * the thread communicator and device memory for NCCL. `stream` is a cudaStream_t for NCCL and ignored
 * (pass NULL) by the threads. A failure on one rank mid-step is propagated with dsv4_comm_abort: peers
 * blocked in (or later entering) a collective return DSV4_ERR_INTERNAL instead of waiting forever. */
#ifndef DSV4_DIST_COMM_H
#define DSV4_DIST_COMM_H

#include <stddef.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dsv4_comm_dtype {
    DSV4_COMM_F32 = 0,   /* float */
    DSV4_COMM_BF16 = 1   /* uint16_t holding bfloat16 bits; sums round to bf16 after every addition */
} dsv4_comm_dtype;

typedef struct dsv4_comm dsv4_comm;

/* The implementation table. Every function returns DSV4_OK or fills err. */
typedef struct dsv4_comm_ops {
    const char *name;    /* "threads", "nccl" */
    dsv4_status (*allreduce_sum)(dsv4_comm *c, void *buf, size_t count, dsv4_comm_dtype dt, void *stream,
                                 dsv4_err *err);
    dsv4_status (*allgather)(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                             dsv4_err *err);
    dsv4_status (*alltoall)(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                            dsv4_err *err);
    dsv4_status (*barrier)(dsv4_comm *c, void *stream, dsv4_err *err);
    void (*abort)(dsv4_comm *c);
    void (*destroy)(dsv4_comm *c);
} dsv4_comm_ops;

struct dsv4_comm {
    const dsv4_comm_ops *ops;  /* borrowed (static table) */
    int rank, world;           /* 0 <= rank < world */
    void *impl;                /* owned by the implementation */
};

static inline int dsv4_comm_rank(const dsv4_comm *c) { return c ? c->rank : 0; }
static inline int dsv4_comm_world(const dsv4_comm *c) { return c ? c->world : 1; }

/* In place: buf[count] on every rank becomes the element-wise sum over ranks. */
dsv4_status dsv4_comm_allreduce_sum(dsv4_comm *c, void *buf, size_t count, dsv4_comm_dtype dt, void *stream,
                                    dsv4_err *err);
/* recv[world * bytes] = the `bytes` of send of rank 0, then rank 1, ... (rank-major). send may equal
 * recv + rank * bytes (in place). */
dsv4_status dsv4_comm_allgather(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                                dsv4_err *err);
/* send[world * bytes]: block p goes to rank p; recv[world * bytes]: block p came from rank p. send and
 * recv must not overlap. */
dsv4_status dsv4_comm_alltoall(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                               dsv4_err *err);
/* Returns when every rank has entered (threads) / orders the stream after every rank's prior work (NCCL). */
dsv4_status dsv4_comm_barrier(dsv4_comm *c, void *stream, dsv4_err *err);
/* Marks the group failed: every pending and later collective of every rank returns DSV4_ERR_INTERNAL. */
void dsv4_comm_abort(dsv4_comm *c);
/* Frees this rank's handle (NULL is fine). Each rank destroys its own. */
void dsv4_comm_destroy(dsv4_comm *c);

/* ---- implementations ---------------------------------------------------------------------------------- */

/* Creates the `world` handles of one group of threads (comms[world], one per rank thread). On failure
 * nothing is allocated. */
dsv4_status dsv4_comm_threads_create(int world, dsv4_comm **comms, dsv4_err *err);

/* Creates one NCCL communicator per device of devices[world] in this process (ncclCommInitAll), for a
 * host thread per GPU. lib: path or soname of libnccl (NULL: "libnccl.so.2", then "libnccl.so", found by
 * the dynamic loader, i.e. LD_LIBRARY_PATH). Builds without DSV4_HAVE_CUDA, or a missing library, give
 * DSV4_ERR_UNSUPPORTED with a message naming what was tried. NVLink multicast (NCCL_NVLS_ENABLE) is left to
 * the environment: dsv4 never sets NCCL variables. */
dsv4_status dsv4_comm_nccl_create(int world, const int *devices, const char *lib, dsv4_comm **comms,
                                  dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

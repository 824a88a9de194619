/* comm_nccl.c — the communicator of comm.h over NCCL: one rank per GPU, all ranks in this process (a
 * host thread drives each GPU; docs/MULTI_GPU.md says why), collectives enqueued on the caller's CUDA
 * stream so a decode step captured as a CUDA graph contains them.
 *
 * libnccl is opened with dlopen when the communicator is created, not linked: the GPU machines get NCCL
 * from a Python wheel (nvidia/nccl/lib), a build must not depend on where that is, and a machine without it
 * gets one clear error instead of a binary that does not start. The few NCCL types used are declared here
 * from the stable ABI of nccl.h (values unchanged since NCCL 2.0; bfloat16 = 9 since 2.10).
 *
 * All-to-all is a grouped ncclSend/ncclRecv per peer (works with every NCCL since 2.7; ncclAlltoAll only
 * exists in recent releases). Barrier is a one-element all-reduce on a scratch float per device.
 * NCCL_NVLS_ENABLE (NVLink multicast) and every other NCCL_* variable are left to the environment. */
#include "dist/comm.h"

#include <stdlib.h>
#include <string.h>

#include "core/status.h"

#ifndef DSV4_HAVE_CUDA

dsv4_status dsv4_comm_nccl_create(int world, const int *devices, const char *lib, dsv4_comm **comms,
                                  dsv4_err *err) {
    (void)world; (void)devices; (void)lib; (void)comms;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "comm nccl: this build has no CUDA backend (built with cuda=0)");
}

#else /* DSV4_HAVE_CUDA */

#include <dlfcn.h>

/* ---- the NCCL ABI subset (values of nccl.h; stable since NCCL 2.0, bf16 since 2.10) ------------------- */
typedef struct ncclComm *ncclComm_t;
typedef int ncclResult_t;               /* ncclSuccess = 0 */
enum { NCCL_SUCCESS = 0, NCCL_SUM = 0, NCCL_UINT8 = 1, NCCL_FLOAT32 = 7, NCCL_BFLOAT16 = 9 };


/* CUDA runtime entry points used here (cudart is linked in every DSV4_HAVE_CUDA build; declared rather
 * than included because C translation units are not compiled with the CUDA include path). cudaError_t is
 * an int-sized enum, cudaSuccess = 0; streams are opaque pointers. */
extern int cudaGetDevice(int *device);
extern int cudaSetDevice(int device);
extern int cudaMalloc(void **p, size_t bytes);
extern int cudaFree(void *p);
extern const char *cudaGetErrorString(int e);

typedef struct nccl_api {
    void *dl;
    ncclResult_t (*get_version)(int *);
    ncclResult_t (*comm_init_all)(ncclComm_t *, int, const int *);
    ncclResult_t (*comm_destroy)(ncclComm_t);
    ncclResult_t (*comm_abort)(ncclComm_t);
    const char *(*error_string)(ncclResult_t);
    ncclResult_t (*all_reduce)(const void *, void *, size_t, int, int, ncclComm_t, void *);
    ncclResult_t (*all_gather)(const void *, void *, size_t, int, ncclComm_t, void *);
    ncclResult_t (*send)(const void *, size_t, int, int, ncclComm_t, void *);
    ncclResult_t (*recv)(void *, size_t, int, int, ncclComm_t, void *);
    ncclResult_t (*group_start)(void);
    ncclResult_t (*group_end)(void);
    int refs;                 /* rank handles using this table */
    /* The group (all its ranks live in this process): abort reaches every rank's communicator. */
    ncclComm_t *group;        /* owned [world]: each rank's communicator, for the group-wide abort */
    int world;
    volatile int aborted;     /* set once by the first abort; later collectives of every rank fail */
} nccl_api;

typedef struct nccl_rank {
    nccl_api *api;            /* shared by the group's ranks; freed (and dlclose'd) by the last */
    ncclComm_t comm;          /* owned */
    int device;
    float *scratch;           /* owned device float for the barrier */
} nccl_rank;

/* The one check macro for NCCL calls: on failure fills err with the expression, NCCL's message, file and
 * line, and returns DSV4_ERR_CUDA. */
#define NCCL_CHECK(api, err, expr)                                                                         \
    do {                                                                                                   \
        ncclResult_t r__ = (expr);                                                                         \
        if (r__ != NCCL_SUCCESS)                                                                           \
            return dsv4_err_set(err, DSV4_ERR_CUDA, "%s failed: %s (%s:%d)", #expr,                         \
                                (api)->error_string ? (api)->error_string(r__) : "?", __FILE__, __LINE__); \
    } while (0)

static dsv4_status load_api(const char *lib, nccl_api **out, dsv4_err *err) {
    const char *names[] = {lib, "libnccl.so.2", "libnccl.so"};
    void *dl = NULL;
    for (size_t i = lib ? 0 : 1; i < sizeof names / sizeof names[0] && !dl; i++) dl = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!dl)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "comm nccl: cannot load %s (%s); put NCCL's lib directory "
                            "(e.g. site-packages/nvidia/nccl/lib) on LD_LIBRARY_PATH", lib ? lib : "libnccl.so.2",
                            dlerror());
    nccl_api *a = calloc(1, sizeof *a);
    if (!a) { dlclose(dl); return dsv4_err_set(err, DSV4_ERR_NOMEM, "comm nccl: out of memory"); }
    a->dl = dl;
    struct { void **slot; const char *sym; } syms[] = {
        {(void **)&a->get_version, "ncclGetVersion"},   {(void **)&a->comm_init_all, "ncclCommInitAll"},
        {(void **)&a->comm_destroy, "ncclCommDestroy"}, {(void **)&a->comm_abort, "ncclCommAbort"},
        {(void **)&a->error_string, "ncclGetErrorString"}, {(void **)&a->all_reduce, "ncclAllReduce"},
        {(void **)&a->all_gather, "ncclAllGather"},     {(void **)&a->send, "ncclSend"},
        {(void **)&a->recv, "ncclRecv"},                {(void **)&a->group_start, "ncclGroupStart"},
        {(void **)&a->group_end, "ncclGroupEnd"},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *p = dlsym(dl, syms[i].sym);
        if (!p) {
            dlclose(dl);
            free(a);
            return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "comm nccl: %s lacks %s (NCCL >= 2.10 needed)",
                                lib ? lib : "libnccl.so.2", syms[i].sym);
        }
        memcpy(syms[i].slot, &p, sizeof p);   /* object -> function pointer, as POSIX dlsym prescribes */
    }
    int v = 0;
    if (a->get_version(&v) != NCCL_SUCCESS || v < 21000) {
        dlclose(dl);
        free(a);
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "comm nccl: NCCL version code %d < 21000 (bf16 needs 2.10)", v);
    }
    *out = a;
    return DSV4_OK;
}

static void api_release(nccl_api *a) {
    if (a && --a->refs == 0) {
        dlclose(a->dl);
        free(a->group);
        free(a);
    }
}

#define ABORTED_CHECK(r, err)                                                                              \
    do {                                                                                                   \
        if ((r)->api->aborted)                                                                             \
            return dsv4_err_set(err, DSV4_ERR_INTERNAL, "comm nccl: a rank failed (group aborted)");      \
    } while (0)

static dsv4_status n_allreduce(dsv4_comm *c, void *buf, size_t count, dsv4_comm_dtype dt, void *stream,
                               dsv4_err *err) {
    nccl_rank *r = c->impl;
    ABORTED_CHECK(r, err);
    NCCL_CHECK(r->api, err, r->api->all_reduce(buf, buf, count, dt == DSV4_COMM_F32 ? NCCL_FLOAT32 : NCCL_BFLOAT16,
                                               NCCL_SUM, r->comm, stream));
    return DSV4_OK;
}

static dsv4_status n_allgather(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                               dsv4_err *err) {
    nccl_rank *r = c->impl;
    ABORTED_CHECK(r, err);
    NCCL_CHECK(r->api, err, r->api->all_gather(send, recv, bytes, NCCL_UINT8, r->comm, stream));
    return DSV4_OK;
}

static dsv4_status n_alltoall(dsv4_comm *c, const void *send, void *recv, size_t bytes, void *stream,
                              dsv4_err *err) {
    nccl_rank *r = c->impl;
    ABORTED_CHECK(r, err);
    NCCL_CHECK(r->api, err, r->api->group_start());
    for (int p = 0; p < c->world; p++) {
        ncclResult_t s = r->api->send((const char *)send + (size_t)p * bytes, bytes, NCCL_UINT8, p, r->comm, stream);
        ncclResult_t q = s == NCCL_SUCCESS ? r->api->recv((char *)recv + (size_t)p * bytes, bytes, NCCL_UINT8, p,
                                                          r->comm, stream)
                                           : s;
        if (q != NCCL_SUCCESS) {
            r->api->group_end();
            return dsv4_err_set(err, DSV4_ERR_CUDA, "ncclSend/ncclRecv to rank %d failed: %s", p,
                                r->api->error_string(q));
        }
    }
    NCCL_CHECK(r->api, err, r->api->group_end());
    return DSV4_OK;
}

static dsv4_status n_barrier(dsv4_comm *c, void *stream, dsv4_err *err) {
    nccl_rank *r = c->impl;
    ABORTED_CHECK(r, err);
    NCCL_CHECK(r->api, err, r->api->all_reduce(r->scratch, r->scratch, 1, NCCL_FLOAT32, NCCL_SUM, r->comm, stream));
    return DSV4_OK;
}

/* Group-wide, as comm.h's contract asks: every rank's communicator is aborted (ncclCommAbort also makes
 * NCCL kernels already waiting for a peer return), so peers blocked in a collective of this step — or in a
 * stream wait behind one — are released instead of hanging. Another rank's thread may be about to call NCCL
 * on its (now aborted) communicator: it sees `aborted` first in all but a narrow window; after an abort the
 * engine must be recreated (docs/MULTI_GPU.md). */
static void n_abort(dsv4_comm *c) {
    nccl_rank *r = c->impl;
    nccl_api *a = r->api;
    if (a->aborted) return;
    a->aborted = 1;
    for (int i = 0; i < a->world; i++)
        if (a->group[i]) a->comm_abort(a->group[i]);
}

static void n_destroy(dsv4_comm *c) {
    nccl_rank *r = c->impl;
    int prev = 0;
    cudaGetDevice(&prev);
    cudaSetDevice(r->device);
    if (r->scratch) cudaFree(r->scratch);
    if (r->comm && !r->api->aborted) r->api->comm_destroy(r->comm);   /* an abort already freed it */
    if (r->api->group) r->api->group[c->rank] = NULL;
    cudaSetDevice(prev);
    api_release(r->api);
    free(r);
    free(c);
}

static const dsv4_comm_ops nccl_ops = {"nccl", n_allreduce, n_allgather, n_alltoall, n_barrier, n_abort,
                                       n_destroy};

dsv4_status dsv4_comm_nccl_create(int world, const int *devices, const char *lib, dsv4_comm **comms,
                                  dsv4_err *err) {
    if (world < 1 || !devices || !comms) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "comm nccl: world %d", world);
    nccl_api *api = NULL;
    DSV4_TRY(load_api(lib, &api, err));
    ncclComm_t *nc = calloc((size_t)world, sizeof *nc);
    if (!nc) { api_release(api); return dsv4_err_set(err, DSV4_ERR_NOMEM, "comm nccl: out of memory"); }
    api->refs = 1;   /* held by this function until the handles take it */
    if (!(api->group = calloc((size_t)world, sizeof *api->group))) {
        free(nc);
        api_release(api);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "comm nccl: out of memory");
    }
    api->world = world;
    ncclResult_t rc = api->comm_init_all(nc, world, devices);
    if (rc != NCCL_SUCCESS) {
        dsv4_status st = dsv4_err_set(err, DSV4_ERR_CUDA, "ncclCommInitAll(%d devices) failed: %s", world,
                                      api->error_string(rc));
        free(nc);
        api_release(api);
        return st;
    }
    int prev = 0;
    cudaGetDevice(&prev);
    dsv4_status st = DSV4_OK;
    int made = 0;
    for (; made < world; made++) {
        dsv4_comm *c = calloc(1, sizeof *c);
        nccl_rank *r = calloc(1, sizeof *r);
        int ce = c && r ? cudaSetDevice(devices[made]) : 0;
        if (ce == 0 && c && r) ce = cudaMalloc((void **)&r->scratch, sizeof(float));
        if (!c || !r || ce != 0) {
            st = !c || !r ? dsv4_err_set(err, DSV4_ERR_NOMEM, "comm nccl: out of memory")
                          : dsv4_err_set(err, DSV4_ERR_CUDA, "comm nccl: device %d: %s", devices[made],
                                         cudaGetErrorString(ce));
            free(c);
            free(r);
            break;
        }
        *r = (nccl_rank){api, nc[made], devices[made], r->scratch};
        api->group[made] = nc[made];
        nc[made] = NULL;
        api->refs++;
        *c = (dsv4_comm){&nccl_ops, made, world, r};
        comms[made] = c;
    }
    cudaSetDevice(prev);
    if (st != DSV4_OK) {
        for (int i = 0; i < made; i++) n_destroy(comms[i]);
        for (int i = made; i < world; i++) if (nc[i]) api->comm_destroy(nc[i]);
    }
    free(nc);
    api_release(api);
    return st;
}

#endif /* DSV4_HAVE_CUDA */

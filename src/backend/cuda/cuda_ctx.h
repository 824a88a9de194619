/* cuda_ctx.h — the CUDA backend's context: one device, one stream, one cuBLASLt handle and the device
 * workspaces the launchers use (no process-global CUDA state anywhere in dsv4). Also the thin C wrappers
 * (allocation, copies, events, pinned host memory, graph capture and replay) that C callers — tests, benches,
 * the engine — use so that they never include a CUDA header. Plain C; the check macro at the bottom is for
 * .cu files only.
 *
 * Device memory is taken here, at context creation and by dsv4_cuda_alloc, never inside a step: launchers
 * only use the workspace the context already holds and fail with DSV4_ERR_CAPACITY when it is too small. */
#ifndef DSV4_BACKEND_CUDA_CUDA_CTX_H
#define DSV4_BACKEND_CUDA_CUDA_CTX_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Number of CUDA devices visible; 0 when there is no driver or no device (never an error). */
int dsv4_cuda_device_count(void);

#define DSV4_CUDA_SPLITK_COUNTERS 65536  /* tiles a split-K launch may use (counters are self-resetting) */

/* Which kernel dsv4_cuda_linear_fp8 runs for M > 16 (the decode GEMV keeps M <= 16 either way). */
#define DSV4_CUDA_FP8_GEMM_MMA 0       /* own mma.sync tile kernels (linear.cu), the default */
#define DSV4_CUDA_FP8_GEMM_CUBLASLT 1  /* cuBLASLt block-scaled FP8 GEMM (linear_lt.cu) */

typedef struct dsv4_cuda_lt_cache dsv4_cuda_lt_cache; /* linear_lt.cu: cuBLASLt plans, prepared FP8 scales */

typedef struct dsv4_cuda_ctx {
    int device;                 /* CUDA device ordinal */
    int sm_count;               /* multiprocessors of that device */
    size_t l2_bytes;            /* L2 cache size */
    void *stream;               /* owned cudaStream_t (non-blocking) every launcher enqueues on */
    void *lt;                   /* owned cublasLtHandle_t */
    void *lt_ws;                /* owned device buffer [lt_ws_bytes]: cuBLASLt workspace */
    size_t lt_ws_bytes;
    void *ws;                   /* owned device buffer [ws_bytes]: split-K partial sums (fp32) */
    size_t ws_bytes;
    int *counters;              /* owned device [DSV4_CUDA_SPLITK_COUNTERS] int, zero between launches */
    dsv4_cuda_lt_cache *lt_cache; /* owned, made on first use: one cuBLASLt plan per shape (the heuristic runs
                                   * once per shape) and the FP32 weight scales prepared at load */
    int fp8_gemm;               /* DSV4_CUDA_FP8_GEMM_*: set by the owner after creation (0 = MMA) */
} dsv4_cuda_ctx;

/* Creates a context on `device`: a non-blocking stream, a cuBLASLt handle, a cuBLASLt workspace of
 * 32 MiB and a split-K workspace of ws_bytes (0 picks 64 MiB). On failure nothing is left allocated. */
dsv4_status dsv4_cuda_ctx_create(int device, size_t ws_bytes, dsv4_cuda_ctx **out, dsv4_err *err);
void dsv4_cuda_ctx_destroy(dsv4_cuda_ctx *ctx);  /* NULL is fine; synchronizes the stream first */

/* ---- C-side helpers (all on ctx's device; copies are stream-ordered on ctx->stream) -------------------- */
dsv4_status dsv4_cuda_alloc(dsv4_cuda_ctx *ctx, size_t bytes, void **p, dsv4_err *err);
void dsv4_cuda_free(dsv4_cuda_ctx *ctx, void *p);
dsv4_status dsv4_cuda_upload(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes, dsv4_err *err);
/* Download waits for the stream, so the host buffer is ready on return. */
dsv4_status dsv4_cuda_download(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes, dsv4_err *err);
dsv4_status dsv4_cuda_copy(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes, dsv4_err *err);
dsv4_status dsv4_cuda_memset(dsv4_cuda_ctx *ctx, void *dst, int byte, size_t bytes, dsv4_err *err);
dsv4_status dsv4_cuda_sync(dsv4_cuda_ctx *ctx, dsv4_err *err);

/* Events for timing: create, record on ctx->stream, elapsed time between two recorded events. */
dsv4_status dsv4_cuda_event_create(void **ev, dsv4_err *err);
void dsv4_cuda_event_destroy(void *ev);
dsv4_status dsv4_cuda_event_record(dsv4_cuda_ctx *ctx, void *ev, dsv4_err *err);
dsv4_status dsv4_cuda_event_elapsed_ms(void *start, void *stop, float *ms, dsv4_err *err);

/* Device name and peak numbers, for logs. */
void dsv4_cuda_describe(const dsv4_cuda_ctx *ctx, char *buf, size_t n);

/* Makes ctx's device current on the calling host thread (a thread per GPU; the device is per thread). */
dsv4_status dsv4_glue_set_device(dsv4_cuda_ctx *ctx, dsv4_err *err);

/* ---- graphs and pinned host memory (the decode step of forward_cuda.c is one graph replay) ------------- */
dsv4_status dsv4_glue_host_alloc(size_t bytes, void **p, dsv4_err *err);
/* Stream-ordered host-to-device copy that does not wait (src must be pinned and stay untouched until the
 * stream passes the copy; dsv4_cuda_upload waits instead). */
dsv4_status dsv4_glue_upload_async(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes, dsv4_err *err);
void dsv4_glue_host_free(void *p);
dsv4_status dsv4_glue_capture_begin(dsv4_cuda_ctx *ctx, dsv4_err *err);
/* Ends the capture begun on ctx's stream. ok = 0 aborts it (after a failed enqueue; *exec stays NULL). */
dsv4_status dsv4_glue_capture_end(dsv4_cuda_ctx *ctx, int ok, void **exec, dsv4_err *err);
dsv4_status dsv4_glue_graph_launch(dsv4_cuda_ctx *ctx, void *exec, dsv4_err *err);
void dsv4_glue_graph_destroy(void *exec);

#ifdef __cplusplus
}
#endif

/* ---- the one check macro (CUDA runtime and cuBLAS/cuBLASLt), .cu files only ---------------------------- */
#ifdef __CUDACC__
#include <cublasLt.h>
#include <cuda_runtime.h>

#include "core/status.h"

static inline bool dsv4_cuda_ok_(cudaError_t e) { return e == cudaSuccess; }
static inline bool dsv4_cuda_ok_(cublasStatus_t e) { return e == CUBLAS_STATUS_SUCCESS; }
static inline const char *dsv4_cuda_str_(cudaError_t e) { return cudaGetErrorString(e); }
static inline const char *dsv4_cuda_str_(cublasStatus_t e) { return cublasGetStatusString(e); }

/* Evaluates expr (a cudaError_t or cublasStatus_t); on failure fills err with the expression, the
 * library's message, file and line, and returns DSV4_ERR_CUDA from the enclosing function. */
#define DSV4_CUDA_CHECK(err, expr)                                                                   \
    do {                                                                                             \
        auto e__ = (expr);                                                                           \
        if (!dsv4_cuda_ok_(e__))                                                                     \
            return dsv4_err_set((err), DSV4_ERR_CUDA, "%s failed: %s (%s:%d)", #expr,                 \
                                dsv4_cuda_str_(e__), __FILE__, __LINE__);                             \
    } while (0)

/* After a kernel launch: launch-configuration errors surface here (asynchronous faults surface at the
 * next synchronizing call, which is checked too). */
#define DSV4_CUDA_CHECK_LAUNCH(err) DSV4_CUDA_CHECK(err, cudaGetLastError())
#endif

#endif

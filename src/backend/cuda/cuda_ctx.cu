/* cuda_ctx.cu — context creation/destruction and the C-side memory/copy/event wrappers (see cuda_ctx.h).
 * Owns no global state; every function acts on the context or pointers it is given. */
#include "backend/cuda/cuda_ctx.h"

#include "backend/cuda/cuda_linear.h" /* dsv4_cuda_lt_cache_destroy */

#include <stdio.h>
#include <stdlib.h>

extern "C" int dsv4_cuda_device_count(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError(); /* clear the sticky "no device / no driver" error */
        return 0;
    }
    return n;
}

static dsv4_status ctx_init(dsv4_cuda_ctx *c, int device, size_t ws_bytes, dsv4_err *err) {
    cudaDeviceProp prop;
    DSV4_CUDA_CHECK(err, cudaSetDevice(device));
    DSV4_CUDA_CHECK(err, cudaGetDeviceProperties(&prop, device));
    if (prop.major < 9)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "device %d (%s) is sm_%d%d; dsv4's CUDA kernels need sm_90a",
                            device, prop.name, prop.major, prop.minor);
    c->device = device;
    c->sm_count = prop.multiProcessorCount;
    c->l2_bytes = (size_t)prop.l2CacheSize;
    cudaStream_t s;
    DSV4_CUDA_CHECK(err, cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    c->stream = s;
    cublasLtHandle_t lt;
    DSV4_CUDA_CHECK(err, cublasLtCreate(&lt));
    c->lt = lt;
    c->lt_ws_bytes = (size_t)32 << 20;
    DSV4_CUDA_CHECK(err, cudaMalloc(&c->lt_ws, c->lt_ws_bytes));
    c->ws_bytes = ws_bytes ? ws_bytes : ((size_t)64 << 20);
    DSV4_CUDA_CHECK(err, cudaMalloc(&c->ws, c->ws_bytes));
    DSV4_CUDA_CHECK(err, cudaMalloc((void **)&c->counters, DSV4_CUDA_SPLITK_COUNTERS * sizeof(int)));
    DSV4_CUDA_CHECK(err, cudaMemsetAsync(c->counters, 0, DSV4_CUDA_SPLITK_COUNTERS * sizeof(int), s));
    DSV4_CUDA_CHECK(err, cudaStreamSynchronize(s));
    return DSV4_OK;
}

extern "C" void dsv4_cuda_ctx_destroy(dsv4_cuda_ctx *c) {
    if (!c) return;
    if (c->device >= 0) cudaSetDevice(c->device);
    if (c->stream) cudaStreamSynchronize((cudaStream_t)c->stream);
    /* Teardown: errors here cannot be acted on; each release is still attempted. */
    dsv4_cuda_lt_cache_destroy(c);
    if (c->counters) cudaFree(c->counters);
    if (c->ws) cudaFree(c->ws);
    if (c->lt_ws) cudaFree(c->lt_ws);
    if (c->lt) cublasLtDestroy((cublasLtHandle_t)c->lt);
    if (c->stream) cudaStreamDestroy((cudaStream_t)c->stream);
    free(c);
}

extern "C" dsv4_status dsv4_cuda_ctx_create(int device, size_t ws_bytes, dsv4_cuda_ctx **out, dsv4_err *err) {
    *out = NULL;
    dsv4_cuda_ctx *c = (dsv4_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return dsv4_err_set(err, DSV4_ERR_NOMEM, "dsv4_cuda_ctx_create: out of host memory");
    c->device = -1;
    dsv4_status st = ctx_init(c, device, ws_bytes, err);
    if (st != DSV4_OK) {
        dsv4_cuda_ctx_destroy(c);
        return st;
    }
    *out = c;
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_alloc(dsv4_cuda_ctx *ctx, size_t bytes, void **p, dsv4_err *err) {
    *p = NULL;
    DSV4_CUDA_CHECK(err, cudaSetDevice(ctx->device));
    cudaError_t e = cudaMalloc(p, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        *p = NULL;
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "cudaMalloc(%zu) failed: %s (%s:%d)", bytes, cudaGetErrorString(e),
                            __FILE__, __LINE__);
    }
    return DSV4_OK;
}

extern "C" void dsv4_cuda_free(dsv4_cuda_ctx *ctx, void *p) {
    (void)ctx;
    if (p) cudaFree(p);
}

extern "C" dsv4_status dsv4_cuda_upload(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes,
                                        dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, (cudaStream_t)ctx->stream));
    /* src is pageable host memory the caller may free right after: finish the copy before returning. */
    DSV4_CUDA_CHECK(err, cudaStreamSynchronize((cudaStream_t)ctx->stream));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_download(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes,
                                          dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, (cudaStream_t)ctx->stream));
    DSV4_CUDA_CHECK(err, cudaStreamSynchronize((cudaStream_t)ctx->stream));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_copy(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, (cudaStream_t)ctx->stream));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_memset(dsv4_cuda_ctx *ctx, void *dst, int byte, size_t bytes, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaMemsetAsync(dst, byte, bytes, (cudaStream_t)ctx->stream));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_sync(dsv4_cuda_ctx *ctx, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaStreamSynchronize((cudaStream_t)ctx->stream));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_event_create(void **ev, dsv4_err *err) {
    cudaEvent_t e;
    DSV4_CUDA_CHECK(err, cudaEventCreate(&e));
    *ev = e;
    return DSV4_OK;
}

extern "C" void dsv4_cuda_event_destroy(void *ev) {
    if (ev) cudaEventDestroy((cudaEvent_t)ev);
}

extern "C" dsv4_status dsv4_cuda_event_record(dsv4_cuda_ctx *ctx, void *ev, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaEventRecord((cudaEvent_t)ev, (cudaStream_t)ctx->stream));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_event_elapsed_ms(void *start, void *stop, float *ms, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaEventSynchronize((cudaEvent_t)stop));
    DSV4_CUDA_CHECK(err, cudaEventElapsedTime(ms, (cudaEvent_t)start, (cudaEvent_t)stop));
    return DSV4_OK;
}

extern "C" void dsv4_cuda_describe(const dsv4_cuda_ctx *ctx, char *buf, size_t n) {
    cudaDeviceProp prop;
    if (cudaGetDeviceProperties(&prop, ctx->device) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(buf, n, "device %d (properties unavailable)", ctx->device);
        return;
    }
    int drv = 0, rt = 0;
    cudaDriverGetVersion(&drv);
    cudaRuntimeGetVersion(&rt);
    snprintf(buf, n, "%s, sm_%d%d, %d SMs, %.0f MiB, L2 %.0f MiB, driver %d, runtime %d", prop.name, prop.major,
             prop.minor, prop.multiProcessorCount, prop.totalGlobalMem / 1048576.0, prop.l2CacheSize / 1048576.0,
             drv, rt);
}

/* ==== device selection, graphs, pinned memory (forward_cuda.c: a decode step is one graph replay) ======== */

extern "C" dsv4_status dsv4_glue_set_device(dsv4_cuda_ctx *ctx, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaSetDevice(ctx->device));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_host_alloc(size_t bytes, void **p, dsv4_err *err) {
    *p = NULL;
    DSV4_CUDA_CHECK(err, cudaMallocHost(p, bytes ? bytes : 1));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_upload_async(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes,
                                              dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, (cudaStream_t)ctx->stream));
    return DSV4_OK;
}

extern "C" void dsv4_glue_host_free(void *p) {
    if (p) (void)cudaFreeHost(p);
}

extern "C" dsv4_status dsv4_glue_capture_begin(dsv4_cuda_ctx *ctx, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaStreamBeginCapture((cudaStream_t)ctx->stream, cudaStreamCaptureModeThreadLocal));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_capture_end(dsv4_cuda_ctx *ctx, int ok, void **exec, dsv4_err *err) {
    *exec = NULL;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture((cudaStream_t)ctx->stream, &g);
    if (!ok) {
        if (g) cudaGraphDestroy(g);
        (void)cudaGetLastError();
        return DSV4_OK;
    }
    DSV4_CUDA_CHECK(err, e);
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    DSV4_CUDA_CHECK(err, e);
    *exec = (void *)x;
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_graph_launch(dsv4_cuda_ctx *ctx, void *exec, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaGraphLaunch((cudaGraphExec_t)exec, (cudaStream_t)ctx->stream));
    return DSV4_OK;
}

extern "C" void dsv4_glue_graph_destroy(void *exec) {
    if (exec) (void)cudaGraphExecDestroy((cudaGraphExec_t)exec);
}

/* elementwise.cu — element-wise and row-movement kernels of the CUDA forward (see cuda_elementwise.h): fill,
 * wo_a dequant, hc broadcast, scale, regroup, vocab-split embedding, conversions, vocab interleave, row
 * gather. Must not allocate device memory or synchronize. */
#include "backend/cuda/cuda_elementwise.h"
#include "backend/cuda/kernels/glue_common.cuh"

__global__ void fill32_kernel(uint32_t *dst, uint32_t v, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = v;
}

extern "C" dsv4_status dsv4_glue_fill32(dsv4_cuda_ctx *ctx, void *dst, uint32_t pattern, size_t n_words,
                                        dsv4_err *err) {
    if (!n_words) return DSV4_OK;
    size_t b = (n_words + 255) / 256;
    fill32_kernel<<<(unsigned)(b < 65535 ? b : 65535), 256, 0, CST(ctx)>>>((uint32_t *)dst, pattern, n_words);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void dequant_kernel(const uint8_t *w, const uint8_t *s, int out, int in, uint16_t *y) {
    long n = (long)out * in;
    int sc = (in + 127) / 128;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int o = (int)(i / in), c = (int)(i % in);
        y[i] = f2bf(ldexpf(e4m3_val(w[i]), (int)s[(size_t)(o / 128) * sc + c / 128] - 127));
    }
}

extern "C" dsv4_status dsv4_glue_dequant_fp8_bf16(dsv4_cuda_ctx *ctx, const uint8_t *w, const uint8_t *scale,
                                                  int out, int in, uint16_t *y, dsv4_err *err) {
    long n = (long)out * in;
    dequant_kernel<<<nblk(n < (1L << 24) ? n : (1L << 24), 256), 256, 0, CST(ctx)>>>(w, scale, out, in, y);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void broadcast_kernel(const uint16_t *x, int rows, int hc, int D, uint16_t *X) {
    long n = (long)rows * hc * D;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        long r = i / ((long)hc * D);
        X[i] = x[r * D + i % D];
    }
}

extern "C" dsv4_status dsv4_glue_broadcast_hc(dsv4_cuda_ctx *ctx, const uint16_t *x, int rows, int hc, int D,
                                              uint16_t *X, dsv4_err *err) {
    long n = (long)rows * hc * D;
    if (!n) return DSV4_OK;
    broadcast_kernel<<<nblk(n, 256), 256, 0, CST(ctx)>>>(x, rows, hc, D, X);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void scale_kernel(uint16_t *x, long n, float s) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) x[i] = f2bf(__fmul_rn(bf2f(x[i]), s));
}

extern "C" dsv4_status dsv4_glue_scale_bf16(dsv4_cuda_ctx *ctx, uint16_t *x, long n, float s, dsv4_err *err) {
    if (!n) return DSV4_OK;
    scale_kernel<<<nblk(n, 256), 256, 0, CST(ctx)>>>(x, n, s);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void regroup_kernel(const uint16_t *src, uint16_t *dst, int rows, int G, int cols, int split) {
    long n = (long)rows * G * cols;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int c = (int)(i % cols);
        long t = i / cols;
        int r = (int)(t % rows), g = (int)(t / rows); /* i indexes [g][r][c] */
        size_t flat = ((size_t)r * G + g) * cols + c;  /* [r][g][c] */
        if (split) dst[i] = src[flat];
        else dst[flat] = src[i];
    }
}

extern "C" dsv4_status dsv4_glue_regroup(dsv4_cuda_ctx *ctx, const uint16_t *src, uint16_t *dst, int rows, int G,
                                         int cols, int split, dsv4_err *err) {
    long n = (long)rows * G * cols;
    if (!n) return DSV4_OK;
    regroup_kernel<<<nblk(n < (1L << 22) ? n : (1L << 22), 256), 256, 0, CST(ctx)>>>(src, dst, rows, G, cols, split);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void embed_part_kernel(const uint16_t *table, int v0, int nv, int D, const int32_t *tokens, float *out) {
    const int r = blockIdx.x, t = tokens[r] - v0;
    const int own = t >= 0 && t < nv;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        out[(size_t)r * D + d] = own ? bf2f(table[(size_t)t * D + d]) : -0.0f;
}

extern "C" dsv4_status dsv4_glue_embed_part(dsv4_cuda_ctx *ctx, const uint16_t *table, int v0, int nv, int D,
                                            const int32_t *tokens, int rows, float *out, dsv4_err *err) {
    if (!rows) return DSV4_OK;
    embed_part_kernel<<<rows, 256, 0, CST(ctx)>>>(table, v0, nv, D, tokens, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void bf16_to_f32_kernel(const uint16_t *x, long n, float *y) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = bf2f(x[i]);
}

__global__ void f32_to_bf16_kernel(const float *x, long n, uint16_t *y) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = f2bf(x[i]);
}

extern "C" dsv4_status dsv4_glue_bf16_to_f32(dsv4_cuda_ctx *ctx, const uint16_t *x, long n, float *y, dsv4_err *err) {
    if (n <= 0) return DSV4_OK;
    bf16_to_f32_kernel<<<nblk(n < (1L << 22) ? n : (1L << 22), 256), 256, 0, CST(ctx)>>>(x, n, y);
    GLUE_CHECK(err);
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_f32_to_bf16(dsv4_cuda_ctx *ctx, const float *x, long n, uint16_t *y, dsv4_err *err) {
    if (n <= 0) return DSV4_OK;
    f32_to_bf16_kernel<<<nblk(n < (1L << 22) ? n : (1L << 22), 256), 256, 0, CST(ctx)>>>(x, n, y);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void vocab_interleave_kernel(const float *all, int world, int n, int nv, float *out) {
    const int i = blockIdx.x;                     /* output row */
    const long V = (long)world * nv;
    for (long v = threadIdx.x; v < V; v += blockDim.x) {
        const int r = (int)(v / nv), j = (int)(v % nv);
        out[(size_t)i * V + v] = all[((size_t)r * n + i) * nv + j];
    }
}

extern "C" dsv4_status dsv4_glue_vocab_interleave(dsv4_cuda_ctx *ctx, const float *all, int world, int n, int nv,
                                                  float *out, dsv4_err *err) {
    if (!n) return DSV4_OK;
    vocab_interleave_kernel<<<n, 256, 0, CST(ctx)>>>(all, world, n, nv, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void gather_rows_kernel(const uint16_t *src, int elems, const int32_t *idx, uint16_t *dst) {
    const int i = blockIdx.x;
    const uint16_t *s = src + (size_t)idx[i] * elems;
    for (int c = threadIdx.x; c < elems; c += blockDim.x) dst[(size_t)i * elems + c] = s[c];
}

extern "C" dsv4_status dsv4_glue_gather_rows(dsv4_cuda_ctx *ctx, const uint16_t *src, int elems, const int32_t *idx,
                                             int n, uint16_t *dst, dsv4_err *err) {
    if (!n) return DSV4_OK;
    gather_rows_kernel<<<n, 256, 0, CST(ctx)>>>(src, elems, idx, dst);
    GLUE_CHECK(err);
    return DSV4_OK;
}

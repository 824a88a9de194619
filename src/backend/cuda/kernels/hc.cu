/* hc.cu — hyper-connection kernels (spec §3.9, §4.2, §4.9): hc_pre (mix GEMV with the rsqrt norm, Sinkhorn
 * split, weighted stream sum), hc_post and hc_head, batched over tokens (see ops_cuda.h; CPU twin
 * backend/cpu/hc.c). Must not allocate or synchronize.
 *
 * hc_pre / hc_head: one CTA per token. The mix projection [(2+hc)·hc, hc·D] · v and Σv² accumulate in fp64
 * like the CPU (order differs; the FP32 results agree to the last bit in practice), the Sinkhorn split runs
 * on one thread in exactly the CPU's sequence of FP32 operations, and the stream sum is per element in
 * stream order. fn is read once per token (from L2 when many tokens run: 1.5 MiB for Flash). */
#include "backend/cuda/kernels/ops_common.cuh"

#define HC_MAX 8
#define HC_THREADS 256

/* Mix accumulation: acc[m] = Σ_i fn[m][i]·v_i, ss = Σ v_i², block-reduced in a fixed order. Results in
 * mix_out[NM] (FP32, already × r) on every thread after the call. */
template <int NM>
__device__ void hc_mix_block(const uint16_t *X, int n, const float *__restrict__ fn, float norm_eps, float *mix_out) {
    __shared__ double red[HC_THREADS / 32][NM + 1];
    double acc[NM + 1];
#pragma unroll
    for (int m = 0; m <= NM; m++) acc[m] = 0.0;
    for (int i = threadIdx.x; i < n; i += HC_THREADS) {
        double v = bf2f(X[i]);
        acc[NM] += v * v;
#pragma unroll
        for (int m = 0; m < NM; m++) acc[m] += (double)fn[(size_t)m * n + i] * v;
    }
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
#pragma unroll
    for (int m = 0; m <= NM; m++) {
        double t = warp_sum_d(acc[m]);
        if (lane == 0) red[w][m] = t;
    }
    __syncthreads();
    if (threadIdx.x <= NM) {
        double t = 0.0;
        for (int k = 0; k < HC_THREADS / 32; k++) t += red[k][threadIdx.x];
        red[0][threadIdx.x] = t; /* row 0 was already read by this thread only (column threadIdx.x) */
    }
    __syncthreads();
    float r = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn((float)(red[0][NM] / n), norm_eps)));
    for (int m = threadIdx.x; m < NM; m += HC_THREADS) mix_out[m] = __fmul_rn((float)red[0][m], r);
    __syncthreads();
}

/* dsv4_cpu_hc_sinkhorn, one thread. */
__device__ void hc_sinkhorn(const float *mix, const float *scale, const float *base, int hc, int iters, float eps,
                            float *pre, float *post, float *C) {
    for (int j = 0; j < hc; j++)
        pre[j] = __fadd_rn(sigmoid_f(__fadd_rn(__fmul_rn(mix[j], scale[0]), base[j])), eps);
    for (int j = 0; j < hc; j++)
        post[j] = __fmul_rn(2.0f, sigmoid_f(__fadd_rn(__fmul_rn(mix[hc + j], scale[1]), base[hc + j])));
    for (int j = 0; j < hc * hc; j++) C[j] = __fadd_rn(__fmul_rn(mix[2 * hc + j], scale[2]), base[2 * hc + j]);
    for (int j = 0; j < hc; j++) {
        float m = C[j * hc];
        for (int k = 1; k < hc; k++) m = C[j * hc + k] > m ? C[j * hc + k] : m;
        float s = 0.0f;
        for (int k = 0; k < hc; k++) {
            C[j * hc + k] = exp_f(__fsub_rn(C[j * hc + k], m));
            s = __fadd_rn(s, C[j * hc + k]);
        }
        for (int k = 0; k < hc; k++) C[j * hc + k] = __fadd_rn(__fdiv_rn(C[j * hc + k], s), eps);
    }
    float sum[HC_MAX];
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int j = 0; j < hc; j++) {
                float s = 0.0f;
                for (int k = 0; k < hc; k++) s = __fadd_rn(s, C[j * hc + k]);
                for (int k = 0; k < hc; k++) C[j * hc + k] = __fdiv_rn(C[j * hc + k], __fadd_rn(s, eps));
            }
        }
        for (int k = 0; k < hc; k++) {
            sum[k] = 0.0f;
            for (int j = 0; j < hc; j++) sum[k] = __fadd_rn(sum[k], C[j * hc + k]);
        }
        for (int j = 0; j < hc; j++)
            for (int k = 0; k < hc; k++) C[j * hc + k] = __fdiv_rn(C[j * hc + k], __fadd_rn(sum[k], eps));
    }
}

/* y[d] = bf16(Σ_h pre[h]·X[h][d]), stream order from +0. */
__device__ void hc_collapse(const uint16_t *X, const float *pre, int hc, int D, uint16_t *y) {
    for (int d = threadIdx.x; d < D; d += HC_THREADS) {
        float s = 0.0f;
        for (int h = 0; h < hc; h++) s = __fadd_rn(s, __fmul_rn(pre[h], bf2f(X[(size_t)h * D + d])));
        y[d] = f2bf(s);
    }
}

template <int HC>
__global__ void __launch_bounds__(HC_THREADS) hc_pre_kernel(dsv4_cuda_hc_params p, const uint16_t *X, uint16_t *x,
                                                            float *post, float *comb) {
    constexpr int NM = (2 + HC) * HC;
    __shared__ float mix[NM], pre[HC], pst[HC], C[HC * HC];
    const uint16_t *Xr = X + (size_t)blockIdx.x * HC * p.D;
    hc_mix_block<NM>(Xr, HC * p.D, p.fn, p.norm_eps, mix);
    if (threadIdx.x == 0) {
        hc_sinkhorn(mix, p.scale, p.base, HC, p.iters, p.hc_eps, pre, pst, C);
        for (int j = 0; j < HC; j++) post[(size_t)blockIdx.x * HC + j] = pst[j];
        for (int j = 0; j < HC * HC; j++) comb[(size_t)blockIdx.x * HC * HC + j] = C[j];
    }
    __syncthreads();
    hc_collapse(Xr, pre, HC, p.D, x + (size_t)blockIdx.x * p.D);
}

template <int HC>
__global__ void __launch_bounds__(HC_THREADS) hc_head_kernel(dsv4_cuda_hc_params p, const uint16_t *X, uint16_t *y) {
    __shared__ float mix[HC], pre[HC];
    const uint16_t *Xr = X + (size_t)blockIdx.x * HC * p.D;
    hc_mix_block<HC>(Xr, HC * p.D, p.fn, p.norm_eps, mix);
    if (threadIdx.x < HC)
        pre[threadIdx.x] = __fadd_rn(
            sigmoid_f(__fadd_rn(__fmul_rn(mix[threadIdx.x], p.scale[0]), p.base[threadIdx.x])), p.hc_eps);
    __syncthreads();
    hc_collapse(Xr, pre, HC, p.D, y + (size_t)blockIdx.x * p.D);
}

/* One thread per (row, k, d). */
__global__ void hc_post_kernel(int n_rows, int hc, int D, const uint16_t *a, const uint16_t *residual,
                               const float *post, const float *comb, uint16_t *X_out) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n_rows * hc * D) return;
    int d = (int)(i % D);
    long rk = i / D;
    int k = (int)(rk % hc);
    long r = rk / hc;
    const uint16_t *res = residual + (size_t)r * hc * D + d;
    const float *cb = comb + (size_t)r * hc * hc;
    float s = 0.0f;
    for (int j = 0; j < hc; j++) s = __fadd_rn(s, __fmul_rn(cb[j * hc + k], bf2f(res[(size_t)j * D])));
    X_out[i] = f2bf(__fadd_rn(__fmul_rn(post[r * hc + k], bf2f(a[(size_t)r * D + d])), s));
}

static dsv4_status hc_check(const dsv4_cuda_hc_params *p, const char *fn, dsv4_err *err) {
    if (!p || p->hc < 1 || p->hc > HC_MAX || p->D < 1 || p->n_rows < 0) return ops_bad(err, fn, "bad shape");
    return DSV4_OK;
}

#define HC_SWITCH(hc, LAUNCH)                                                                           \
    switch (hc) {                                                                                       \
    case 1: LAUNCH(1); break;                                                                           \
    case 2: LAUNCH(2); break;                                                                           \
    case 3: LAUNCH(3); break;                                                                           \
    case 4: LAUNCH(4); break;                                                                           \
    case 5: LAUNCH(5); break;                                                                           \
    case 6: LAUNCH(6); break;                                                                           \
    case 7: LAUNCH(7); break;                                                                           \
    default: LAUNCH(8); break;                                                                          \
    }

extern "C" dsv4_status dsv4_cuda_hc_pre(dsv4_cuda_ctx *ctx, const dsv4_cuda_hc_params *p, const uint16_t *X,
                                        uint16_t *x, float *post, float *comb, dsv4_err *err) {
    dsv4_status st = hc_check(p, "dsv4_cuda_hc_pre", err);
    if (st != DSV4_OK) return st;
    if (p->iters < 1) return ops_bad(err, "dsv4_cuda_hc_pre", "iters < 1");
    if (p->n_rows == 0) return DSV4_OK;
    cudaStream_t s = (cudaStream_t)ctx->stream;
#define HC_PRE(H) hc_pre_kernel<H><<<p->n_rows, HC_THREADS, 0, s>>>(*p, X, x, post, comb)
    HC_SWITCH(p->hc, HC_PRE)
#undef HC_PRE
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_hc_head(dsv4_cuda_ctx *ctx, const dsv4_cuda_hc_params *p, const uint16_t *X,
                                         uint16_t *y, dsv4_err *err) {
    dsv4_status st = hc_check(p, "dsv4_cuda_hc_head", err);
    if (st != DSV4_OK) return st;
    if (p->n_rows == 0) return DSV4_OK;
    cudaStream_t s = (cudaStream_t)ctx->stream;
#define HC_HEAD(H) hc_head_kernel<H><<<p->n_rows, HC_THREADS, 0, s>>>(*p, X, y)
    HC_SWITCH(p->hc, HC_HEAD)
#undef HC_HEAD
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_hc_post(dsv4_cuda_ctx *ctx, const dsv4_cuda_hc_params *p, const uint16_t *a,
                                         const uint16_t *residual, const float *post, const float *comb,
                                         uint16_t *X_out, dsv4_err *err) {
    dsv4_status st = hc_check(p, "dsv4_cuda_hc_post", err);
    if (st != DSV4_OK) return st;
    long total = (long)p->n_rows * p->hc * p->D;
    if (total == 0) return DSV4_OK;
    hc_post_kernel<<<(unsigned)((total + 255) / 256), 256, 0, (cudaStream_t)ctx->stream>>>(
        p->n_rows, p->hc, p->D, a, residual, post, comb, X_out);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

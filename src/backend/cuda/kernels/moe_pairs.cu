/* moe_pairs.cu — routed experts per (row, expert slot) pair and the per-row combine, whole or split around the
 * tensor-parallel all-reduce (see cuda_moe_pairs.h). Must not allocate device memory or synchronize. */
#include "backend/cuda/cuda_moe_pairs.h"
#include "backend/cuda/kernels/glue_common.cuh"

#define MOE_WARPS 8

/* One warp per output n of one pair; lane l takes the K blocks l, l+32, ... (32-wide for FP4, 128 for FP8):
 * per block P = Σ q_x·q_w in FP32 (products exact), C += P·s_x·s_w; then a fixed-order warp sum. */
__global__ void __launch_bounds__(MOE_WARPS * 32) moe_expert_kernel(const uint8_t *xq, const uint8_t *xs, int K,
                                                                    int in_div, const int32_t *experts, int e0,
                                                                    int ne, const uint8_t *w, const uint8_t *s,
                                                                    size_t w_stride, size_t s_stride, int fp4, int N,
                                                                    uint16_t *y) {
    const int p = blockIdx.y, lane = threadIdx.x & 31;
    const int n = blockIdx.x * MOE_WARPS + (threadIdx.x >> 5);
    if (n >= N) return;
    const int e = experts[p] - e0, row = p / in_div;
    if (e < 0 || e >= ne) {              /* another rank's expert: a defined zero, never read by the combine */
        if (lane == 0) y[(size_t)p * N + n] = 0;
        return;
    }
    const uint8_t *x = xq + (size_t)row * K;
    const uint8_t *xsr = xs + (size_t)row * (K / 128);
    float C = 0.0f;
    if (fp4) {
        const uint8_t *wr = w + e * w_stride + (size_t)n * (K / 2);
        const uint8_t *sr = s + e * s_stride + (size_t)n * (K / 32);
        for (int kb = lane; kb < K / 32; kb += 32) {
            uint4 wv = *reinterpret_cast<const uint4 *>(wr + kb * 16);
            uint4 x0 = *reinterpret_cast<const uint4 *>(x + kb * 32);
            uint4 x1 = *reinterpret_cast<const uint4 *>(x + kb * 32 + 16);
            const uint8_t *wb = reinterpret_cast<const uint8_t *>(&wv);
            uint8_t xb[32];
            *reinterpret_cast<uint4 *>(xb) = x0;
            *reinterpret_cast<uint4 *>(xb + 16) = x1;
            float P = 0.0f;
#pragma unroll
            for (int i = 0; i < 16; i++) {
                P = __fadd_rn(P, __fmul_rn(e4m3_val(xb[2 * i]), e2m1_val(wb[i] & 15)));
                P = __fadd_rn(P, __fmul_rn(e4m3_val(xb[2 * i + 1]), e2m1_val(wb[i] >> 4)));
            }
            float sx = ldexpf(1.0f, (int)xsr[kb / 4] - 127), sw = ldexpf(1.0f, (int)sr[kb] - 127);
            C = __fadd_rn(C, __fmul_rn(__fmul_rn(P, sx), sw));
        }
    } else {
        const uint8_t *wr = w + e * w_stride + (size_t)n * K;
        const uint8_t *sr = s + e * s_stride + (size_t)(n / 128) * (K / 128);
        for (int kb = lane; kb < K / 128; kb += 32) {
            float P = 0.0f;
            for (int i = 0; i < 128; i += 16) {
                uint4 wv = *reinterpret_cast<const uint4 *>(wr + kb * 128 + i);
                uint4 xv = *reinterpret_cast<const uint4 *>(x + kb * 128 + i);
                const uint8_t *wb = reinterpret_cast<const uint8_t *>(&wv), *xb = reinterpret_cast<const uint8_t *>(&xv);
#pragma unroll
                for (int q = 0; q < 16; q++) P = __fadd_rn(P, __fmul_rn(e4m3_val(xb[q]), e4m3_val(wb[q])));
            }
            float sx = ldexpf(1.0f, (int)xsr[kb] - 127), sw = ldexpf(1.0f, (int)sr[kb] - 127);
            C = __fadd_rn(C, __fmul_rn(__fmul_rn(P, sx), sw));
        }
    }
    for (int o = 16; o > 0; o >>= 1) C = __fadd_rn(C, __shfl_xor_sync(0xffffffffu, C, o));
    if (lane == 0) y[(size_t)p * N + n] = f2bf(C);
}

extern "C" dsv4_status dsv4_glue_moe_expert(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int K, int in_div,
                                            const int32_t *experts, int e0, int ne, int n_pairs, const uint8_t *w,
                                            const uint8_t *s, size_t w_stride, size_t s_stride, int fp4, int N,
                                            uint16_t *y, dsv4_err *err) {
    if (K % 128 || N < 1 || in_div < 1 || e0 < 0 || ne < 1) return ops_bad(err, "dsv4_glue_moe_expert", "bad shape");
    if (!n_pairs) return DSV4_OK;
    if (n_pairs > 65535) return ops_bad(err, "dsv4_glue_moe_expert", "too many pairs");
    dim3 grid(nblk(N, MOE_WARPS), (unsigned)n_pairs);
    moe_expert_kernel<<<grid, MOE_WARPS * 32, 0, CST(ctx)>>>(xq, xs, K, in_div, experts, e0, ne, w, s, w_stride,
                                                             s_stride, fp4, N, y);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void moe_combine_kernel(const uint16_t *ey, const int32_t *experts, int k, int D, const uint16_t *sy,
                                   uint16_t *out) {
    const int r = blockIdx.x;
    int order[16];
    for (int j = 0; j < k; j++) order[j] = j;
    const int32_t *ex = experts + (size_t)r * k;
    for (int a = 1; a < k; a++)
        for (int b = a; b > 0 && ex[order[b]] < ex[order[b - 1]]; b--) {
            int t = order[b]; order[b] = order[b - 1]; order[b - 1] = t;
        }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) acc = __fadd_rn(acc, bf2f(ey[((size_t)r * k + order[j]) * D + d]));
        acc = __fadd_rn(acc, bf2f(sy[(size_t)r * D + d]));
        out[(size_t)r * D + d] = f2bf(acc);
    }
}

extern "C" dsv4_status dsv4_glue_moe_combine(dsv4_cuda_ctx *ctx, const uint16_t *ey, const int32_t *experts, int rows,
                                             int k, int D, const uint16_t *sy, uint16_t *out, dsv4_err *err) {
    if (k > 16) return ops_bad(err, "dsv4_glue_moe_combine", "k > 16");
    if (!rows) return DSV4_OK;
    moe_combine_kernel<<<rows, 256, 0, CST(ctx)>>>(ey, experts, k, D, sy, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

/* The combine split at the official all-reduce point: the FP32 partial of this rank's experts (same order and
 * additions as moe_combine_kernel, other ranks' experts skipped), then bf16(partial + shared). */
__global__ void moe_partial_kernel(const uint16_t *ey, const int32_t *experts, int k, int D, int e0, int ne,
                                   float *part) {
    const int r = blockIdx.x;
    int order[16];
    for (int j = 0; j < k; j++) order[j] = j;
    const int32_t *ex = experts + (size_t)r * k;
    for (int a = 1; a < k; a++)
        for (int b = a; b > 0 && ex[order[b]] < ex[order[b - 1]]; b--) {
            int t = order[b]; order[b] = order[b - 1]; order[b - 1] = t;
        }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) {
            const int e = ex[order[j]] - e0;
            if (e >= 0 && e < ne) acc = __fadd_rn(acc, bf2f(ey[((size_t)r * k + order[j]) * D + d]));
        }
        part[(size_t)r * D + d] = acc;
    }
}

extern "C" dsv4_status dsv4_glue_moe_partial(dsv4_cuda_ctx *ctx, const uint16_t *ey, const int32_t *experts, int rows,
                                             int k, int D, int e0, int ne, float *part, dsv4_err *err) {
    if (k > 16) return ops_bad(err, "dsv4_glue_moe_partial", "k > 16");
    if (!rows) return DSV4_OK;
    moe_partial_kernel<<<rows, 256, 0, CST(ctx)>>>(ey, experts, k, D, e0, ne, part);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void add_bf16_kernel(const float *part, const uint16_t *sy, long n, uint16_t *out) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = f2bf(__fadd_rn(part[i], bf2f(sy[i])));
}

extern "C" dsv4_status dsv4_glue_moe_finish(dsv4_cuda_ctx *ctx, const float *part, const uint16_t *sy, long n,
                                            uint16_t *out, dsv4_err *err) {
    if (n <= 0) return DSV4_OK;
    add_bf16_kernel<<<nblk(n < (1L << 22) ? n : (1L << 22), 256), 256, 0, CST(ctx)>>>(part, sy, n, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

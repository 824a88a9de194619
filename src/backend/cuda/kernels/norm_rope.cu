/* norm_rope.cu — RMSNorm (weighted/unweighted), the BF16-arithmetic per-head q norm with fused RoPE,
 * RoPE / inverse RoPE, FP8 fake-quant (KV, block 64) and Hadamard-128 + FP4 fake-quant (indexer), batched
 * over rows (see ops_cuda.h; CPU twins in backend/cpu/norm_rope.c and quant.c).
 * Must not allocate or synchronize. Rounding points follow the CPU reference exactly; every FP32 op the CPU
 * rounds separately is an explicit _rn intrinsic so nvcc cannot contract it into an FMA. */
#include "backend/cuda/kernels/ops_common.cuh"

/* ==== RMSNorm ========================================================================================= */

/* One CTA per row. Σx² in fp64 (as the CPU), var = (float)(Σ/n), r = 1/sqrt(var + eps) (IEEE), then
 * bf16(w · (x · r)). */
__global__ void rmsnorm_kernel(const uint16_t *__restrict__ x, int ld_x, const uint16_t *__restrict__ w, int n,
                               float eps, uint16_t *y, int ld_y) {
    __shared__ double sh[33];
    const uint16_t *xr = x + (size_t)blockIdx.x * ld_x;
    double ss = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        double v = bf2f(xr[i]);
        ss += v * v;
    }
    ss = block_sum_d(ss, sh);
    float var = (float)(ss / n);
    float r = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(var, eps)));
    uint16_t *yr = y + (size_t)blockIdx.x * ld_y;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float v = __fmul_rn(bf2f(xr[i]), r);
        if (w) v = __fmul_rn(bf2f(w[i]), v);
        yr[i] = f2bf(v);
    }
}

extern "C" dsv4_status dsv4_cuda_rmsnorm(dsv4_cuda_ctx *ctx, const uint16_t *x, int ld_x, const uint16_t *w,
                                         int n_rows, int n, float eps, uint16_t *y, int ld_y, dsv4_err *err) {
    if (n < 1 || ld_x < n || ld_y < n || n_rows < 0) return ops_bad(err, "dsv4_cuda_rmsnorm", "bad shape");
    if (n_rows == 0) return DSV4_OK;
    int threads = n >= 4096 ? 512 : (n >= 1024 ? 256 : 128);
    rmsnorm_kernel<<<n_rows, threads, 0, (cudaStream_t)ctx->stream>>>(x, ld_x, w, n, eps, y, ld_y);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== per-head q norm (BF16 arithmetic) + RoPE ========================================================= */

/* One warp per (row, head). Rounding points of dsv4_cpu_rmsnorm_bf16_arith: bf16(x²), mean → bf16,
 * + eps → bf16, 1/sqrt → bf16, x·r → bf16. Lane l owns the pairs (2(l+32k), 2(l+32k)+1). */
__global__ void qnorm_rope_kernel(uint16_t *x, int n_heads, int hd, float eps, const int32_t *positions,
                                  dsv4_rope rope, int n_vec) {
    int vec = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (vec >= n_vec) return;
    int lane = threadIdx.x & 31;
    uint32_t *v = reinterpret_cast<uint32_t *>(x + (size_t)vec * hd);
    int npairs = hd >> 1;
    double ss = 0.0;
    for (int p = lane; p < npairs; p += 32) {
        uint32_t u = v[p];
        float a = bf2f((uint16_t)(u & 0xffffu)), b = bf2f((uint16_t)(u >> 16));
        ss += (double)bfr(__fmul_rn(a, a));
        ss += (double)bfr(__fmul_rn(b, b));
    }
    ss = warp_sum_d(ss);
    float mean = bfr((float)(ss / hd));
    float t = bfr(__fadd_rn(mean, eps));
    float r = bfr(__fdiv_rn(1.0f, __fsqrt_rn(t)));
    int rd = rope.rope_dim, first_pair = (hd - rd) >> 1;
    int32_t pos = positions ? positions[vec / n_heads] : 0;
    for (int p = lane; p < npairs; p += 32) {
        uint32_t u = v[p];
        float a = bfr(__fmul_rn(bf2f((uint16_t)(u & 0xffffu)), r));
        float b = bfr(__fmul_rn(bf2f((uint16_t)(u >> 16)), r));
        if (positions && p >= first_pair) rope_pair(a, b, pos, rope.inv_freq[p - first_pair], 0);
        v[p] = (uint32_t)f2bf(a) | ((uint32_t)f2bf(b) << 16);
    }
}

extern "C" dsv4_status dsv4_cuda_qnorm_rope(dsv4_cuda_ctx *ctx, uint16_t *x, int n_rows, int n_heads, int hd,
                                            float eps, const int32_t *positions, const dsv4_rope *rope,
                                            dsv4_err *err) {
    if (hd < 2 || hd > 1024 || (hd & 1) || n_heads < 1 || n_rows < 0)
        return ops_bad(err, "dsv4_cuda_qnorm_rope", "bad shape");
    dsv4_rope r = {};
    if (positions) {
        if (!rope || rope->rope_dim > hd || (rope->rope_dim & 1))
            return ops_bad(err, "dsv4_cuda_qnorm_rope", "rope_dim must be even and <= hd");
        r = *rope;
    }
    int n_vec = n_rows * n_heads;
    if (n_vec == 0) return DSV4_OK;
    qnorm_rope_kernel<<<(n_vec + 7) / 8, 256, 0, (cudaStream_t)ctx->stream>>>(x, n_heads, hd, eps, positions, r,
                                                                              n_vec);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== RoPE ============================================================================================= */

/* One thread per (row, head, pair). */
__global__ void rope_kernel(uint16_t *x, int n_rows, int ld, int n_heads, int head_stride, int off,
                            const int32_t *positions, dsv4_rope rope, int inverse) {
    int half = rope.rope_dim >> 1;
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    long total = (long)n_rows * n_heads * half;
    if (i >= total) return;
    int p = (int)(i % half);
    long rh = i / half;
    int h = (int)(rh % n_heads);
    int r = (int)(rh / n_heads);
    uint16_t *e = x + (size_t)r * ld + (size_t)h * head_stride + off + 2 * p;
    float a = bf2f(e[0]), b = bf2f(e[1]);
    rope_pair(a, b, positions[r], rope.inv_freq[p], inverse);
    e[0] = f2bf(a);
    e[1] = f2bf(b);
}

extern "C" dsv4_status dsv4_cuda_rope(dsv4_cuda_ctx *ctx, uint16_t *x, int n_rows, int ld, int n_heads,
                                      int head_stride, int off, const int32_t *positions, const dsv4_rope *rope,
                                      int inverse, dsv4_err *err) {
    if (!rope || rope->rope_dim < 2 || (rope->rope_dim & 1) || rope->rope_dim > 128 || n_rows < 0 || n_heads < 1)
        return ops_bad(err, "dsv4_cuda_rope", "bad shape");
    long total = (long)n_rows * n_heads * (rope->rope_dim / 2);
    if (total == 0) return DSV4_OK;
    rope_kernel<<<(unsigned)((total + 255) / 256), 256, 0, (cudaStream_t)ctx->stream>>>(
        x, n_rows, ld, n_heads, head_stride, off, positions, *rope, inverse);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== FP8 fake-quant =================================================================================== */

/* One warp per (row, block); lane handles block/32 elements. */
__global__ void fake_quant_fp8_kernel(uint16_t *x, int n_rows, int ld, int n, int block) {
    int nb = n / block;
    long wid = (long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (wid >= (long)n_rows * nb) return;
    int lane = threadIdx.x & 31;
    uint16_t *b = x + (size_t)(wid / nb) * ld + (size_t)(wid % nb) * block;
    int per = block >> 5;
    float v[4];
    float amax = 0.0f;
#pragma unroll
    for (int j = 0; j < 4; j++)
        if (j < per) {
            v[j] = bf2f(b[lane * per + j]);
            amax = fmaxf(amax, fabsf(v[j]));
        }
    amax = warp_max(amax);
    int e = pow2_scale_exp(amax, 1e-4f, 1.0f / 448.0f);
#pragma unroll
    for (int j = 0; j < 4; j++)
        if (j < per) b[lane * per + j] = f2bf(fq_fp8(v[j], e));
}

extern "C" dsv4_status dsv4_cuda_fake_quant_fp8(dsv4_cuda_ctx *ctx, uint16_t *x, int n_rows, int ld, int n,
                                                int block, dsv4_err *err) {
    if ((block != 32 && block != 64 && block != 128) || n < block || n % block || ld < n || n_rows < 0)
        return ops_bad(err, "dsv4_cuda_fake_quant_fp8", "bad shape");
    long warps = (long)n_rows * (n / block);
    if (warps == 0) return DSV4_OK;
    fake_quant_fp8_kernel<<<(unsigned)((warps + 7) / 8), 256, 0, (cudaStream_t)ctx->stream>>>(x, n_rows, ld, n,
                                                                                              block);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== Hadamard-128 + FP4 fake-quant ==================================================================== */

/* One warp per 128-vector: hadamard_fp4_warp (ops_common.cuh). */
__global__ void hadamard_fp4_kernel(uint16_t *x, int n_vec) {
    int vec = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (vec >= n_vec) return;
    int lane = threadIdx.x & 31;
    uint2 *p = reinterpret_cast<uint2 *>(x + (size_t)vec * 128) + lane;
    uint2 u = *p;
    float t[4] = {bf2f((uint16_t)(u.x & 0xffffu)), bf2f((uint16_t)(u.x >> 16)), bf2f((uint16_t)(u.y & 0xffffu)),
                  bf2f((uint16_t)(u.y >> 16))};
    hadamard_fp4_warp(t, lane);
    u.x = (uint32_t)f2bf(t[0]) | ((uint32_t)f2bf(t[1]) << 16);
    u.y = (uint32_t)f2bf(t[2]) | ((uint32_t)f2bf(t[3]) << 16);
    *p = u;
}

extern "C" dsv4_status dsv4_cuda_hadamard_fp4(dsv4_cuda_ctx *ctx, uint16_t *x, int n_vec, dsv4_err *err) {
    if (n_vec < 0) return ops_bad(err, "dsv4_cuda_hadamard_fp4", "bad shape");
    if (n_vec == 0) return DSV4_OK;
    hadamard_fp4_kernel<<<(n_vec + 7) / 8, 256, 0, (cudaStream_t)ctx->stream>>>(x, n_vec);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

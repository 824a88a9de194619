/* moe.cu — MoE router (sqrt-softplus, bias for selection only, top-k with ties to the lower expert id, hash
 * ids through tid2eid, normalised weights × route_scale), the clamped SwiGLU with the routing weight
 * (spec §4.8), the embedding gather (§4.1) and the greedy argmax over the vocabulary. See ops_cuda.h; CPU
 * twins dsv4_cpu_route, dsv4_cpu_swiglu, dsv4_cpu_embed (backend/cpu/moe.c, norm_rope.c). Must not
 * allocate or synchronize. Every FP32 step is the CPU's, in the CPU's order: bitwise agreement expected. */
#include "backend/cuda/kernels/ops_common.cuh"

/* ==== router =========================================================================================== */

#define ROUTE_WARPS 4
#define ROUTE_MAX_E 1024
#define ROUTE_MAX_K 16

__device__ __forceinline__ float sqrt_softplus(float z) {
    float sp = z > 20.0f ? z : log1p_f(exp_f(z));
    return __fsqrt_rn(sp);
}

/* One warp per token.
 * Shared memory: sel[warp][e] is written and later read by the same lane only (e ≡ lane mod 32), so no lane
 * ever reads another lane's shared data. The chosen experts travel in registers: the xor-butterfly
 * reduction leaves every lane holding the same winner (ranks_before is a strict total order), each lane
 * records it in pick[] and the lane owning that expert sets a bit in its `taken` mask. (The earlier
 * version kept the list in a shared `chosen` array written by lane 0 and read by every lane: correct only
 * through the placement of __syncwarp, and reported by compute-sanitizer racecheck as 16 hazards between
 * that read and write. With no shared list there is nothing to order.) */
__global__ void __launch_bounds__(ROUTE_WARPS * 32) route_kernel(const float *logits, int n_rows, int E,
                                                                 const float *bias, const int64_t *tid2eid,
                                                                 const int32_t *tokens, int k, float route_scale,
                                                                 int32_t *experts, float *weights) {
    __shared__ float sel[ROUTE_WARPS][ROUTE_MAX_E];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * ROUTE_WARPS + warp;
    if (r >= n_rows) return;
    const float *z = logits + (size_t)r * E;
    int pick[ROUTE_MAX_K];   /* the same in every lane of the warp */
    if (tid2eid) {
        for (int i = 0; i < k; i++) {
            int64_t e = tid2eid[(size_t)tokens[r] * k + i];
            pick[i] = (e >= 0 && e < E) ? (int)e : -1;
        }
    } else {
        /* E <= ROUTE_MAX_E = 32 * 32: lane owns experts lane + 32 j, j < 32, one bit each in `taken`. */
        unsigned taken = 0u;
        for (int e = lane; e < E; e += 32) sel[warp][e] = __fadd_rn(sqrt_softplus(z[e]), bias ? bias[e] : 0.0f);
        for (int i = 0; i < k; i++) {
            float bv = 0.0f;
            int bi = -1;
            for (int e = lane, j = 0; e < E; e += 32, j++) {
                if ((taken >> j) & 1u) continue;
                float v = sel[warp][e];
                if (bi < 0 || ranks_before(v, e, bv, bi)) {
                    bv = v;
                    bi = e;
                }
            }
            for (int o = 16; o > 0; o >>= 1) {
                float ov = __shfl_xor_sync(0xffffffffu, bv, o);
                int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                if (oi >= 0 && (bi < 0 || ranks_before(ov, oi, bv, bi))) {
                    bv = ov;
                    bi = oi;
                }
            }
            pick[i] = bi;
            if (bi >= 0 && (bi & 31) == lane) taken |= 1u << (bi >> 5);
        }
    }
    if (lane == 0) {
        float w[ROUTE_MAX_K], sum = 0.0f;
        for (int i = 0; i < k; i++) {
            int e = pick[i];
            w[i] = e >= 0 ? sqrt_softplus(z[e]) : 0.0f;
            sum = __fadd_rn(sum, w[i]);
        }
        for (int i = 0; i < k; i++) {
            experts[(size_t)r * k + i] = pick[i];
            weights[(size_t)r * k + i] = __fmul_rn(__fdiv_rn(w[i], sum), route_scale);
        }
    }
}

extern "C" dsv4_status dsv4_cuda_route(dsv4_cuda_ctx *ctx, const float *logits, int n_rows, int E, const float *bias,
                                       const int64_t *tid2eid, const int32_t *tokens, int k, float route_scale,
                                       int32_t *experts, float *weights, dsv4_err *err) {
    if (E < 1 || E > ROUTE_MAX_E || k < 1 || k > ROUTE_MAX_K || k > E || n_rows < 0 || (tid2eid && !tokens))
        return ops_bad(err, "dsv4_cuda_route", "bad shape (E <= 1024, k <= 16, tokens needed with tid2eid)");
    if (n_rows == 0) return DSV4_OK;
    route_kernel<<<(n_rows + ROUTE_WARPS - 1) / ROUTE_WARPS, ROUTE_WARPS * 32, 0, (cudaStream_t)ctx->stream>>>(
        logits, n_rows, E, bias, tid2eid, tokens, k, route_scale, experts, weights);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== SwiGLU =========================================================================================== */

__global__ void swiglu_kernel(const uint16_t *gate, const uint16_t *up, int ld_in, int n_rows, int n, float limit,
                              const float *weight, uint16_t *h, int ld_out) {
    long i = (long)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (long)n_rows * n) return;
    int r = (int)(i / n), c = (int)(i % n);
    float g = bf2f(gate[(size_t)r * ld_in + c]), u = bf2f(up[(size_t)r * ld_in + c]);
    h[(size_t)r * ld_out + c] = swiglu_one(g, u, limit, weight ? weight[r] : 1.0f);
}

extern "C" dsv4_status dsv4_cuda_swiglu(dsv4_cuda_ctx *ctx, const uint16_t *gate, const uint16_t *up, int ld_in,
                                        int n_rows, int n, float limit, const float *weight, uint16_t *h, int ld_out,
                                        dsv4_err *err) {
    if (n < 1 || ld_in < n || ld_out < n || n_rows < 0) return ops_bad(err, "dsv4_cuda_swiglu", "bad shape");
    long total = (long)n_rows * n;
    if (total == 0) return DSV4_OK;
    swiglu_kernel<<<(unsigned)((total + 255) / 256), 256, 0, (cudaStream_t)ctx->stream>>>(gate, up, ld_in, n_rows, n,
                                                                                         limit, weight, h, ld_out);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== embedding ======================================================================================== */

__global__ void embed_kernel(const uint16_t *table, int vocab, int D, const int32_t *tokens, uint16_t *out) {
    const int r = blockIdx.x;
    const int t = tokens[r];
    uint16_t *o = out + (size_t)r * D;
    const bool ok = t >= 0 && t < vocab;
    const uint16_t *src = table + (size_t)(ok ? t : 0) * D;
    if ((D & 7) == 0) {
        for (int i = threadIdx.x; i < D / 8; i += blockDim.x)
            reinterpret_cast<uint4 *>(o)[i] = ok ? reinterpret_cast<const uint4 *>(src)[i] : make_uint4(0, 0, 0, 0);
    } else {
        for (int i = threadIdx.x; i < D; i += blockDim.x) o[i] = ok ? src[i] : (uint16_t)0;
    }
}

extern "C" dsv4_status dsv4_cuda_embed(dsv4_cuda_ctx *ctx, const uint16_t *table, int vocab, int D,
                                       const int32_t *tokens, int n_rows, uint16_t *out, dsv4_err *err) {
    if (D < 1 || vocab < 1 || n_rows < 0) return ops_bad(err, "dsv4_cuda_embed", "bad shape");
    if (n_rows == 0) return DSV4_OK;
    embed_kernel<<<n_rows, 256, 0, (cudaStream_t)ctx->stream>>>(table, vocab, D, tokens, out);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== argmax =========================================================================================== */

#define ARGMAX_THREADS 512

__global__ void __launch_bounds__(ARGMAX_THREADS) argmax_kernel(const float *logits, long ld, int V, int32_t *out) {
    __shared__ float bv_sh[ARGMAX_THREADS / 32];
    __shared__ int bi_sh[ARGMAX_THREADS / 32];
    const float *x = logits + (size_t)blockIdx.x * ld;
    float bv = 0.0f;
    int bi = -1;
    for (int i = threadIdx.x; i < V; i += ARGMAX_THREADS) {
        float v = x[i];
        if (bi < 0 || ranks_before(v, i, bv, bi)) {
            bv = v;
            bi = i;
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        int oi = __shfl_xor_sync(0xffffffffu, bi, o);
        if (oi >= 0 && (bi < 0 || ranks_before(ov, oi, bv, bi))) {
            bv = ov;
            bi = oi;
        }
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        bv_sh[warp] = bv;
        bi_sh[warp] = bi;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        for (int w = 1; w < ARGMAX_THREADS / 32; w++)
            if (bi_sh[w] >= 0 && (bi < 0 || ranks_before(bv_sh[w], bi_sh[w], bv, bi))) {
                bv = bv_sh[w];
                bi = bi_sh[w];
            }
        out[blockIdx.x] = bi;
    }
}

extern "C" dsv4_status dsv4_cuda_argmax(dsv4_cuda_ctx *ctx, const float *logits, int n_rows, long ld, int V,
                                        int32_t *out, dsv4_err *err) {
    if (V < 1 || ld < V || n_rows < 0) return ops_bad(err, "dsv4_cuda_argmax", "bad shape");
    if (n_rows == 0) return DSV4_OK;
    argmax_kernel<<<n_rows, ARGMAX_THREADS, 0, (cudaStream_t)ctx->stream>>>(logits, ld, V, out);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

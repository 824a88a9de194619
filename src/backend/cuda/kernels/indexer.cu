/* indexer.cu — Lightning Indexer scores (spec §4.6 step 4) with the official BF16 rounding points, and the
 * deterministic top-k shared by the indexer (k ≤ 2048) and any other caller. See ops_cuda.h; CPU twins
 * dsv4_cpu_indexer_scores and dsv4_cpu_topk (backend/cpu/indexer.c). Must not allocate or synchronize.
 *
 * Scores: one thread per (query, key), the query's 64×128 q held in shared memory as FP32. The 128-term dot
 * product is a chain of FP32 FMAs; on FP4-fake-quantized inputs (what the model feeds: q and keys are both
 * Hadamard + FP4) every partial sum is exactly representable, so the dot equals the CPU's fp64 one and the
 * scores are bitwise the CPU's. On arbitrary BF16 inputs the dot may differ in its last FP32 bits, which
 * after the bf16 rounding changes a score by one BF16 ulp in rare cases (docs/NUMERICS.md).
 *
 * Top-k: one CTA per row. A 4-digit (8-bit) radix select on an order-preserving 32-bit key finds the k-th
 * largest key T and how many elements equal to T are needed; a sweep in index order takes every key > T
 * and the lowest-index keys == T (block prefix count, deterministic); a bitonic sort of the k candidates on
 * (key, ~index) then gives exactly dsv4_cpu_topk's order (a strict total order: the output is unique). */
#include "backend/cuda/kernels/ops_common.cuh"

/* ==== scores =========================================================================================== */

#define IDX_THREADS 256
#define IDX_NH 64
#define IDX_DH 128

__global__ void __launch_bounds__(IDX_THREADS) indexer_scores_kernel(dsv4_cuda_indexer_params p) {
    __shared__ __align__(16) float qs[IDX_NH * IDX_DH];
    __shared__ float wsh[IDX_NH];
    const int qi = blockIdx.y;
    const int nk = p.n_keys[qi];
    if ((int)blockIdx.x * IDX_THREADS >= nk) {
        /* a block past the query's live keys: only the −inf padding (no q load), so the cost of a query
         * follows its visible keys, not max_keys */
        const int kw = blockIdx.x * IDX_THREADS + threadIdx.x;
        if (kw < p.max_keys) p.scores[(size_t)qi * p.ld_scores + kw] = -INFINITY;
        return;
    }
    const uint16_t *q = p.q + (size_t)qi * p.nh * IDX_DH;
    for (int i = threadIdx.x; i < p.nh * IDX_DH; i += IDX_THREADS) qs[i] = bf2f(q[i]);
    if (threadIdx.x < p.nh) wsh[threadIdx.x] = bf2f(p.w[(size_t)qi * p.nh + threadIdx.x]);
    __syncthreads();
    const int kw = blockIdx.x * IDX_THREADS + threadIdx.x;
    if (kw >= p.max_keys) return;
    float *out = p.scores + (size_t)qi * p.ld_scores + kw;
    if (kw >= nk) {
        *out = -INFINITY;
        return;
    }
    const long row = (long)(p.key_start ? p.key_start[qi] : 0) + kw;
    const uint4 *kr = reinterpret_cast<const uint4 *>(p.keys + (size_t)row * IDX_DH);
    float k[IDX_DH];
#pragma unroll
    for (int i = 0; i < IDX_DH / 8; i++) {
        uint4 u = kr[i];
        uint32_t w4[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
        for (int j = 0; j < 4; j++) {
            k[8 * i + 2 * j] = bf2f((uint16_t)(w4[j] & 0xffffu));
            k[8 * i + 2 * j + 1] = bf2f((uint16_t)(w4[j] >> 16));
        }
    }
    double sum = 0.0;
    for (int h = 0; h < p.nh; h++) {
        const float4 *qh = reinterpret_cast<const float4 *>(qs + h * IDX_DH);
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < IDX_DH / 4; i++) {
            float4 qq = qh[i];
            dot = fmaf(qq.x, k[4 * i], dot);
            dot = fmaf(qq.y, k[4 * i + 1], dot);
            dot = fmaf(qq.z, k[4 * i + 2], dot);
            dot = fmaf(qq.w, k[4 * i + 3], dot);
        }
        dot = bfr(dot);
        if (!(dot > 0.0f)) dot = 0.0f;
        sum += (double)bfr(__fmul_rn(wsh[h], dot));
    }
    *out = bfr((float)sum);
}

extern "C" dsv4_status dsv4_cuda_indexer_scores(dsv4_cuda_ctx *ctx, const dsv4_cuda_indexer_params *p,
                                                dsv4_err *err) {
    if (!p || p->dh != IDX_DH || p->nh < 1 || p->nh > IDX_NH || p->n_q < 0 || p->max_keys < 0 ||
        p->ld_scores < p->max_keys)
        return ops_bad(err, "dsv4_cuda_indexer_scores", "bad shape (dh must be 128, nh <= 64)");
    if (p->n_q == 0 || p->max_keys == 0) return DSV4_OK;
    if (p->n_q > 65535) return ops_bad(err, "dsv4_cuda_indexer_scores", "n_q > 65535");
    dim3 grid((unsigned)((p->max_keys + IDX_THREADS - 1) / IDX_THREADS), (unsigned)p->n_q);
    indexer_scores_kernel<<<grid, IDX_THREADS, 0, (cudaStream_t)ctx->stream>>>(*p);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== top-k ============================================================================================ */

#define TOPK_THREADS 1024
#define TOPK_MAX 2048

__global__ void __launch_bounds__(TOPK_THREADS) topk_kernel(const float *scores, long ld, const int32_t *nrow,
                                                            int n_all, int k, int32_t *out, int ld_out) {
    __shared__ unsigned long long cand[TOPK_MAX];
    __shared__ int hist[256];
    __shared__ int warp_cnt[TOPK_THREADS / 32];
    __shared__ uint32_t sel_prefix;
    __shared__ int sel_remaining, n_gt, eq_base;
    const int r = blockIdx.x, tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float *s = scores + (size_t)r * ld;
    int32_t *o = out + (size_t)r * ld_out;
    const int n = nrow ? nrow[r] : n_all;
    const int kk = min(k, max(n, 0));
    for (int j = kk + tid; j < k; j += TOPK_THREADS) o[j] = -1;
    if (kk <= 0) return;

    /* ---- radix select of the kk-th largest 32-bit key ---- */
    uint32_t prefix = 0, mask = 0;
    int remaining = kk;
    for (int shift = 24; shift >= 0; shift -= 8) {
        for (int b = tid; b < 256; b += TOPK_THREADS) hist[b] = 0;
        __syncthreads();
        for (int i = tid; i < n; i += TOPK_THREADS) {
            uint32_t key = score_key(s[i]);
            if ((key & mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], 1);
        }
        __syncthreads();
        if (tid == 0) {
            int acc = 0, b = 255;
            for (; b > 0; b--) {
                if (acc + hist[b] >= remaining) break;
                acc += hist[b];
            }
            sel_prefix = prefix | ((uint32_t)b << shift);
            sel_remaining = remaining - acc;
        }
        __syncthreads();
        prefix = sel_prefix;
        remaining = sel_remaining;
        mask |= 255u << shift;
    }
    const uint32_t T = prefix;   /* key of the kk-th element */
    const int need_eq = remaining; /* elements == T to take (lowest indices) */

    /* ---- collect: every key > T, and the first need_eq keys == T in index order ---- */
    if (tid == 0) {
        n_gt = 0;
        eq_base = 0;
    }
    __syncthreads();
    const int n_gt_total = kk - need_eq;
    for (int c0 = 0; c0 < n; c0 += TOPK_THREADS) {
        int i = c0 + tid;
        uint32_t key = i < n ? score_key(s[i]) : 0u;
        bool gt = i < n && key > T, eq = i < n && key == T;
        unsigned long long k64 = ((unsigned long long)key << 32) | (uint32_t)(0xffffffffu - (uint32_t)i);
        if (gt) cand[atomicAdd(&n_gt, 1)] = k64;
        unsigned bal = __ballot_sync(0xffffffffu, eq);
        if (lane == 0) warp_cnt[warp] = __popc(bal);
        __syncthreads();
        int before = eq_base;
        for (int w = 0; w < warp; w++) before += warp_cnt[w];
        int rank = before + __popc(bal & ((1u << lane) - 1u));
        if (eq && rank < need_eq) cand[n_gt_total + rank] = k64;
        __syncthreads();
        if (tid == 0) {
            int t = 0;
            for (int w = 0; w < TOPK_THREADS / 32; w++) t += warp_cnt[w];
            eq_base += t;
        }
        __syncthreads();
        if (eq_base >= need_eq && n_gt == n_gt_total && c0 + TOPK_THREADS < n) {
            /* everything found; the remaining elements cannot contribute */
            break;
        }
    }

    /* ---- bitonic sort, descending, padded to a power of two with 0 (below every real key) ---- */
    int P = 1;
    while (P < kk) P <<= 1;
    for (int j = kk + tid; j < P; j += TOPK_THREADS) cand[j] = 0ull;
    __syncthreads();
    for (int size = 2; size <= P; size <<= 1)
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = tid; i < P; i += TOPK_THREADS) {
                int j = i ^ stride;
                if (j > i) {
                    unsigned long long a = cand[i], b = cand[j];
                    bool desc = (i & size) == 0;
                    if (desc ? a < b : a > b) {
                        cand[i] = b;
                        cand[j] = a;
                    }
                }
            }
            __syncthreads();
        }
    for (int j = tid; j < kk; j += TOPK_THREADS) o[j] = (int32_t)(0xffffffffu - (uint32_t)(cand[j] & 0xffffffffull));
}

extern "C" dsv4_status dsv4_cuda_topk(dsv4_cuda_ctx *ctx, const float *scores, int n_rows, long ld_scores,
                                      const int32_t *n, int n_all, int k, int32_t *out, int ld_out, dsv4_err *err) {
    if (k < 1 || k > TOPK_MAX || n_rows < 0 || ld_out < k || (!n && (n_all < 0 || n_all > ld_scores)))
        return ops_bad(err, "dsv4_cuda_topk", "bad shape (1 <= k <= 2048)");
    if (n_rows == 0) return DSV4_OK;
    topk_kernel<<<n_rows, TOPK_THREADS, 0, (cudaStream_t)ctx->stream>>>(scores, ld_scores, n, n_all, k, out, ld_out);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* attention.cu — sparse attention with a per-head sink (spec §3.8) for decode and prefill, with the inverse
 * RoPE of §4.3 step 5 fused (see ops_cuda.h; CPU twin backend/cpu/attention.c). Must not allocate or
 * synchronize; the FP32 score buffer is the caller's workspace.
 *
 * ==== Shape of the work ==============================================================================
 * One CTA of 512 threads per (query row, group of ≤ 64 heads). K = V is one 512-dim row shared by every
 * head (MQA), so the CTA loads each gathered KV row into shared memory once per pass and all 64 heads use
 * it; Flash (H = 64) loads each row once per pass, Pro (H = 128) twice (two CTAs).
 *
 * Pass 1, per tile of 32 index-list entries: s = fl32(q_h · kv_j) · scale for 64 heads × 32 rows (thread =
 * one row × 4 heads, FP32 FMAs over 512 dims), written to the workspace; a running max per head.
 * Pass 2, per tile: p = bf16(exp(s − m)) (fp64 exp rounded to FP32, as the CPU's expf), Z += exp (fp64, as
 * the CPU), then o += p · kv (thread = 2 columns × 32 heads, FP32). out = bf16(o / Z'), Z' = Z + exp(sink −
 * m), then the inverse RoPE of the output pair (the thread owns both values of a pair).
 * The rounding points are the CPU reference's (global max, not the official kernel's online blocks); the
 * dot products and the P·V sum are FP32 in a different order from the CPU's fp64, which is the whole
 * difference (docs/NUMERICS.md, "CUDA ops (non-GEMM)").
 *
 * Shared memory: q [64][512] bf16 (64 KiB), kv tile [32][514] bf16 (rows padded by one word so that the 32
 * lanes of a warp, one row each, hit 32 banks), P [32][64] f32, per-head max and Z. ~106 KiB. */
#include "backend/cuda/kernels/ops_common.cuh"

#define ATT_HD 512
#define ATT_HB 64             /* heads per CTA */
#define ATT_TK 32             /* index-list entries per tile */
#define ATT_THREADS 512
#define ATT_KSTRIDE 257       /* words per kv tile row */

struct att_smem {
    uint32_t q[ATT_HB * (ATT_HD / 2)];
    uint32_t k[ATT_TK * ATT_KSTRIDE];
    float P[ATT_TK * ATT_HB];
    double Z[ATT_HB];
    float m[ATT_HB];
    int valid[ATT_TK];
};

/* Loads the tile's rows (zeros for empty / out-of-range entries, so 0 · row never makes a NaN). */
__device__ __forceinline__ void att_load_tile(att_smem &sm, const uint16_t *__restrict__ kv,
                                              const int32_t *__restrict__ idx, int j0, int K) {
    for (int f = threadIdx.x; f < ATT_TK * (ATT_HD / 8); f += ATT_THREADS) {
        int row = f / (ATT_HD / 8), c4 = f % (ATT_HD / 8);
        int j = j0 + row;
        int r = j < K ? idx[j] : -1;
        uint4 u = make_uint4(0, 0, 0, 0);
        if (r >= 0) u = *reinterpret_cast<const uint4 *>(kv + (size_t)r * ATT_HD + c4 * 8);
        uint32_t *d = sm.k + row * ATT_KSTRIDE + c4 * 4;
        d[0] = u.x; d[1] = u.y; d[2] = u.z; d[3] = u.w;
        if (c4 == 0) sm.valid[row] = r >= 0;
    }
}

__global__ void __launch_bounds__(ATT_THREADS, 1) sparse_attn_kernel(dsv4_cuda_attn_params p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    att_smem &sm = *reinterpret_cast<att_smem *>(smem_raw);
    const int qi = blockIdx.x, hbase = blockIdx.y * ATT_HB;
    const int hc = min(ATT_HB, p.H - hbase);
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int32_t *idx = p.idx + (size_t)qi * p.K;
    float *ws = p.ws + ((size_t)qi * p.H + hbase) * p.K;

    /* q rows of this head group */
    {
        const uint4 *src = reinterpret_cast<const uint4 *>(p.q + ((size_t)qi * p.H + hbase) * ATT_HD);
        uint4 *dst = reinterpret_cast<uint4 *>(sm.q);
        for (int f = tid; f < ATT_HB * ATT_HD / 8; f += ATT_THREADS)
            dst[f] = f < hc * ATT_HD / 8 ? src[f] : make_uint4(0, 0, 0, 0);
    }
    /* Entries at or past the live length are empty: skipping them changes nothing (an empty entry adds
     * nothing to the max, Z or O), so the loops stop at the last live tile. */
    const int K_live = p.n_live ? max(0, min(p.K, p.n_live[qi])) : p.K;
    const int n_tiles = (K_live + ATT_TK - 1) / ATT_TK;

    /* ---- pass 1: scores and max. thread = row `lane` × heads h0..h0+3 ---- */
    const int h0 = warp * 4;
    float mloc[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    for (int t = 0; t < n_tiles; t++) {
        int j0 = t * ATT_TK;
        __syncthreads();
        att_load_tile(sm, p.kv, idx, j0, K_live);
        __syncthreads();
        if (h0 < hc) {
            float acc[4] = {0.f, 0.f, 0.f, 0.f};
            const uint32_t *kr = sm.k + lane * ATT_KSTRIDE;
#pragma unroll 8
            for (int w = 0; w < ATT_HD / 2; w++) {
                uint32_t kw = kr[w];
                float k0 = bf2f((uint16_t)(kw & 0xffffu)), k1 = bf2f((uint16_t)(kw >> 16));
#pragma unroll
                for (int hh = 0; hh < 4; hh++) {
                    uint32_t qw = sm.q[(h0 + hh) * (ATT_HD / 2) + w];
                    acc[hh] = fmaf(bf2f((uint16_t)(qw & 0xffffu)), k0, acc[hh]);
                    acc[hh] = fmaf(bf2f((uint16_t)(qw >> 16)), k1, acc[hh]);
                }
            }
            int j = j0 + lane;
            if (j < p.K) {
                bool v = sm.valid[lane];
#pragma unroll
                for (int hh = 0; hh < 4; hh++) {
                    if (h0 + hh >= hc) break;
                    float s = v ? __fmul_rn(acc[hh], p.scale) : -INFINITY;
                    ws[(size_t)(h0 + hh) * p.K + j] = s;
                    if (v) mloc[hh] = fmaxf(mloc[hh], s);
                }
            }
        }
    }
#pragma unroll
    for (int hh = 0; hh < 4; hh++) {
        float m = warp_max(mloc[hh]);
        if (lane == 0 && h0 + hh < ATT_HB) {
            sm.m[h0 + hh] = m;
            sm.Z[h0 + hh] = 0.0;
        }
    }

    /* ---- pass 2: P = bf16(exp(s − m)), Z, O += P·V. PV thread = column pair cp × heads g*32.. ---- */
    const int cp = tid & 255, g = tid >> 8;
    float acc[32][2];
#pragma unroll
    for (int h = 0; h < 32; h++) acc[h][0] = acc[h][1] = 0.0f;
    double zloc[4] = {0.0, 0.0, 0.0, 0.0};
    for (int t = 0; t < n_tiles; t++) {
        int j0 = t * ATT_TK;
        __syncthreads(); /* also publishes sm.m after pass 1 */
        if (n_tiles > 1) {
            att_load_tile(sm, p.kv, idx, j0, K_live);
            __syncthreads(); /* sm.valid is read below */
        }
        {
            int j = j0 + lane;
#pragma unroll
            for (int hh = 0; hh < 4; hh++) {
                int h = h0 + hh;
                float pv = 0.0f;
                if (h < hc && j < p.K && sm.valid[lane]) {
                    float e = exp_f(__fsub_rn(ws[(size_t)h * p.K + j], sm.m[h]));
                    zloc[hh] += (double)e;
                    pv = bfr(e);
                }
                sm.P[lane * ATT_HB + h] = pv;
            }
        }
        __syncthreads();
        if (g * 32 < hc) {
#pragma unroll 4
            for (int j = 0; j < ATT_TK; j++) {
                uint32_t kw = sm.k[j * ATT_KSTRIDE + cp];
                float k0 = bf2f((uint16_t)(kw & 0xffffu)), k1 = bf2f((uint16_t)(kw >> 16));
                const float4 *pr = reinterpret_cast<const float4 *>(sm.P + j * ATT_HB + g * 32);
#pragma unroll
                for (int i = 0; i < 8; i++) {
                    float4 pp = pr[i];
                    acc[4 * i + 0][0] = fmaf(pp.x, k0, acc[4 * i + 0][0]);
                    acc[4 * i + 0][1] = fmaf(pp.x, k1, acc[4 * i + 0][1]);
                    acc[4 * i + 1][0] = fmaf(pp.y, k0, acc[4 * i + 1][0]);
                    acc[4 * i + 1][1] = fmaf(pp.y, k1, acc[4 * i + 1][1]);
                    acc[4 * i + 2][0] = fmaf(pp.z, k0, acc[4 * i + 2][0]);
                    acc[4 * i + 2][1] = fmaf(pp.z, k1, acc[4 * i + 2][1]);
                    acc[4 * i + 3][0] = fmaf(pp.w, k0, acc[4 * i + 3][0]);
                    acc[4 * i + 3][1] = fmaf(pp.w, k1, acc[4 * i + 3][1]);
                }
            }
        }
    }
#pragma unroll
    for (int hh = 0; hh < 4; hh++) {
        double z = warp_sum_d(zloc[hh]);
        if (lane == 0 && h0 + hh < ATT_HB) sm.Z[h0 + hh] = z;
    }
    __syncthreads();

    /* ---- epilogue ---- */
    const int first_pair = (ATT_HD - p.rope.rope_dim) / 2;
    const bool do_rope = p.inv_rope_pos != nullptr && cp >= first_pair;
    const int32_t pos = p.inv_rope_pos ? p.inv_rope_pos[qi] : 0;
#pragma unroll
    for (int hh = 0; hh < 32; hh++) {
        int h = g * 32 + hh;
        if (h >= hc) break;
        float m = sm.m[h];
        float o0 = 0.0f, o1 = 0.0f;
        if (m != -INFINITY) {
            float z = (float)(sm.Z[h] + (double)exp_f(__fsub_rn(p.sink[hbase + h], m)));
            o0 = bfr(__fdiv_rn(acc[hh][0], z));
            o1 = bfr(__fdiv_rn(acc[hh][1], z));
            if (do_rope) rope_pair(o0, o1, pos, p.rope.inv_freq[cp - first_pair], 1);
        }
        uint32_t *dst = reinterpret_cast<uint32_t *>(p.out + ((size_t)qi * p.H + hbase + h) * ATT_HD);
        dst[cp] = (uint32_t)f2bf(o0) | ((uint32_t)f2bf(o1) << 16);
    }
}

extern "C" size_t dsv4_cuda_sparse_attn_ws_bytes(int n_q, int H, int K) {
    return (size_t)(n_q > 0 ? n_q : 0) * (size_t)(H > 0 ? H : 0) * (size_t)(K > 0 ? K : 0) * sizeof(float);
}

extern "C" dsv4_status dsv4_cuda_sparse_attn(dsv4_cuda_ctx *ctx, const dsv4_cuda_attn_params *p, dsv4_err *err) {
    if (!p || p->hd != ATT_HD || p->H < 1 || p->K < 0 || p->n_q < 0)
        return ops_bad(err, "dsv4_cuda_sparse_attn", "bad shape (hd must be 512)");
    if (p->inv_rope_pos && (p->rope.rope_dim < 2 || (p->rope.rope_dim & 1) || p->rope.rope_dim > 128))
        return ops_bad(err, "dsv4_cuda_sparse_attn", "bad rope_dim");
    if (p->n_q == 0) return DSV4_OK;
    if (p->K > 0 && !p->ws) return ops_bad(err, "dsv4_cuda_sparse_attn", "workspace missing");
    size_t smem = sizeof(att_smem);
    DSV4_CUDA_CHECK(err, cudaFuncSetAttribute(sparse_attn_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                              (int)smem));
    dim3 grid((unsigned)p->n_q, (unsigned)((p->H + ATT_HB - 1) / ATT_HB));
    sparse_attn_kernel<<<grid, ATT_THREADS, smem, (cudaStream_t)ctx->stream>>>(*p);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

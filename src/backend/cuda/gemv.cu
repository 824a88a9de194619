/* gemv.cu — decode GEMV of the FP8 / FP4 block-scaled linears, single and grouped (see gemv.h).
 *
 * Must not: allocate, synchronize, or keep state between launches other than the split-K tickets in
 * ctx->counters, which every launch leaves at zero.
 *
 * ==== Design ==============================================================================================
 * Decode is a pure weight stream (M <= 16 tokens, 1 byte or half a byte per weight, each read once), so the
 * kernel is built around the loads:
 *   - A warp owns 16 weight rows (one m16 tile) and a range of 128-K blocks. Lane (g = lane/4, t = lane%4)
 *     loads rows g and g+8 with 16-byte `ld.global.nc.L1::no_allocate.L2::256B` straight into registers (no
 *     shared-memory staging, no barriers); one warp-wide load instruction reads 8 rows x 64 contiguous bytes.
 *     The loads of the next step (FP8: 2 blocks = 256 B per row; FP4: 4 blocks) are issued before the
 *     current step is computed (two register buffers, loop unrolled by 2 so nothing is copied).
 *   - The weights are the A operand of `mma.sync.m16n8k32.row.col.f32.e4m3.e4m3.f32` (rows = output
 *     features), the tokens the B operand (n = 8 tokens; a second tile for m > 8). The MMA is far from the
 *     bottleneck; it replaces 16 FFMAs + conversions per weight byte with one instruction per 512 bytes.
 *   - K permutation (any bijection inside a promotion block is allowed, as long as A and B use the same
 *     one): FP8 — lane t's 16-byte loads cover block bytes [16t, 16t+16) and [64+16t, 64+16t+16); MMA j of
 *     the block takes 8 of those bytes (j = 0, 1 from the first load, 2, 3 from the second). The activation
 *     fragment is read with the same two 16-byte loads (L1-resident: x is at most 16·K bytes).
 *     FP4 — scales change every 32 k, so one MMA must cover exactly one aligned 32-block: lane t's 16-byte
 *     load is 32-block t of the 128-block (4 words of 8 nibbles); a 4x4 word transpose inside the quad
 *     (4 shuffles) gives lane t word t of every 32-block b, which MMA b uses (k = 32b + 8t .. 8t+7); the
 *     activation fragment is the matching 8 bytes. Nibbles become e4m3 exactly with two byte-permutes
 *     (magnitude table, sign), 11 integer ops per 8 weights.
 *   - Promotion exactly as the tile kernel in linear.cu and the CPU reference: a fresh FP32 P per block,
 *     then C = fma(P, s_x·s_w, C).
 *   - Reduction: the `ks` warps of a CTA that share a row tile write their C fragments to shared memory and
 *     the first adds them in warp order; with `splits` > 1 each CTA writes its FP32 partial to ctx->ws, and
 *     the last CTA to take the ticket adds the pieces in order z = 0..splits-1 and writes bf16. Fixed order
 *     everywhere -> bitwise deterministic.
 *   - Small layers: the plan splits K (inside and across CTAs) until ~16 warps per SM stream, so a 2 MB
 *     layer still spreads over every SM. Grouped: blockIdx.z picks the descriptor; the plan counts the row
 *     tiles of the whole group. */
#include <cuda_bf16.h>
#include <string.h>

#include "backend/cuda/gemv.h"
#include "backend/cuda/kernels/blockscaled.cuh"

#define GEMV_WARPS 8
#define GEMV_THREADS (GEMV_WARPS * 32)
#define FULL 0xffffffffu

/* ---- device helpers: kernels/blockscaled.cuh (g_e8m0, ld_stream16/4, mma16832, fp4x8_to_e4m3,
 * quad_transpose), shared with the grouped MoE kernels ------------------------------------------------- */

struct GemvParams {
    const dsv4_cuda_gemv_desc *descs; /* device array (grouped) or NULL: use `one` */
    dsv4_cuda_gemv_desc one;
    float *part;                      /* [count, splits, mmax, N] fp32 partials (splits > 1) */
    int *counters;                    /* [count * gridDim.x] tickets, zero on entry and exit */
    int N, K, KB;
    int ks, rpc;                      /* warps per row tile, row tiles per CTA (ks * rpc == GEMV_WARPS) */
    int splits, kpw, mmax;
};

/* Per-warp accumulation state and the K loop. FP8: UK = 2 blocks per step; FP4: UK = 4. */
#ifndef GEMV_UK_FP8_1
#define GEMV_UK_FP8_1 2
#define GEMV_UK_FP8_2 1
#define GEMV_UK_FP4_1 3
#define GEMV_UK_FP4_2 1
#endif
template <bool FP4, int NT> struct GemvWarp {
    static constexpr int UK = FP4 ? (NT == 1 ? GEMV_UK_FP4_1 : GEMV_UK_FP4_2) : (NT == 1 ? GEMV_UK_FP8_1 : GEMV_UK_FP8_2);
    float c[NT][4];
    /* step buffers: FP8 [UK][4] (row g: bytes 16t.., 64+16t..; row g+8: same); FP4 [UK][2] (row g, row g+8) */
    struct Buf {
        uint4 w[UK][FP4 ? 2 : 4];
        uint32_t s[FP4 ? UK : 1][2];
    };

    const uint8_t *w0, *w1;   /* this lane's row g / g+8 pointers (offset by the lane's byte position) */
    const uint8_t *s0, *s1;   /* FP4: scale rows g / g+8; FP8: s0 = scale row of the tile */
    const uint8_t *xr;        /* activation row of token g, offset by the lane's byte position */
    const uint8_t *xsr;       /* activation scale row of token 2t */
    int K, KB, lane_t;
    bool xv[NT], sv[NT][2];   /* token nt*8+g / nt*8+2t+e exists (< m) */

    __device__ __forceinline__ void load(Buf &b, int kb, int kb1) {
#pragma unroll
        for (int u = 0; u < UK; u++) {
            if (kb + u < kb1) {
                if (!FP4) {
                    size_t o = (size_t)(kb + u) * 128;
                    b.w[u][0] = ld_stream16(w0 + o);
                    b.w[u][1] = ld_stream16(w0 + o + 64);
                    b.w[u][2] = ld_stream16(w1 + o);
                    b.w[u][3] = ld_stream16(w1 + o + 64);
                } else {
                    size_t o = (size_t)(kb + u) * 64;
                    b.w[u][0] = ld_stream16(w0 + o);
                    b.w[u][1] = ld_stream16(w1 + o);
                    b.s[u][0] = ld_stream4(s0 + (size_t)(kb + u) * 4);
                    b.s[u][1] = ld_stream4(s1 + (size_t)(kb + u) * 4);
                }
            }
        }
    }

    __device__ __forceinline__ void compute(Buf &b, int kb, int kb1) {
#pragma unroll
        for (int u = 0; u < UK; u++) {
            if (kb + u >= kb1) break;
            const int k = kb + u;
            float sx[NT][2];
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int e = 0; e < 2; e++)
                    sx[nt][e] = sv[nt][e] ? g_e8m0(__ldg(xsr + (size_t)(nt * 8 + e) * KB + k)) : 0.0f;
            if (!FP4) {
                const float sw = g_e8m0(__ldg(s0 + k));
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    uint4 x0 = make_uint4(0, 0, 0, 0), x1 = x0;
                    if (xv[nt]) {
                        const uint8_t *xp = xr + (size_t)nt * 8 * K + (size_t)k * 128;
                        x0 = __ldg(reinterpret_cast<const uint4 *>(xp));
                        x1 = __ldg(reinterpret_cast<const uint4 *>(xp + 64));
                    }
                    float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                    const uint4 &a = b.w[u][0], &ah = b.w[u][1], &c8 = b.w[u][2], &c8h = b.w[u][3];
                    mma16832(p, a.x, c8.x, a.y, c8.y, x0.x, x0.y);
                    mma16832(p, a.z, c8.z, a.w, c8.w, x0.z, x0.w);
                    mma16832(p, ah.x, c8h.x, ah.y, c8h.y, x1.x, x1.y);
                    mma16832(p, ah.z, c8h.z, ah.w, c8h.w, x1.z, x1.w);
                    const float f0 = sx[nt][0] * sw, f1 = sx[nt][1] * sw;
                    c[nt][0] = fmaf(p[0], f0, c[nt][0]);
                    c[nt][1] = fmaf(p[1], f1, c[nt][1]);
                    c[nt][2] = fmaf(p[2], f0, c[nt][2]);
                    c[nt][3] = fmaf(p[3], f1, c[nt][3]);
                }
            } else {
                uint32_t r0 = b.w[u][0].x, r1 = b.w[u][0].y, r2 = b.w[u][0].z, r3 = b.w[u][0].w;
                uint32_t q0 = b.w[u][1].x, q1 = b.w[u][1].y, q2 = b.w[u][1].z, q3 = b.w[u][1].w;
                quad_transpose(r0, r1, r2, r3, lane_t);
                quad_transpose(q0, q1, q2, q3, lane_t);
                const uint32_t rg[4] = {r0, r1, r2, r3}, rq[4] = {q0, q1, q2, q3};
                uint2 xf[NT][4];
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int bb = 0; bb < 4; bb++)
                        xf[nt][bb] = xv[nt] ? __ldg(reinterpret_cast<const uint2 *>(xr + (size_t)nt * 8 * K +
                                                                                      (size_t)k * 128 + bb * 32))
                                            : make_uint2(0, 0);
#pragma unroll
                for (int bb = 0; bb < 4; bb++) {
                    uint32_t a0, a2, a1, a3;
                    fp4x8_to_e4m3(rg[bb], a0, a2);
                    fp4x8_to_e4m3(rq[bb], a1, a3);
                    const float wg = g_e8m0((b.s[u][0] >> (8 * bb)) & 0xffu);
                    const float wq = g_e8m0((b.s[u][1] >> (8 * bb)) & 0xffu);
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        float p[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        mma16832(p, a0, a1, a2, a3, xf[nt][bb].x, xf[nt][bb].y);
                        c[nt][0] = fmaf(p[0], sx[nt][0] * wg, c[nt][0]);
                        c[nt][1] = fmaf(p[1], sx[nt][1] * wg, c[nt][1]);
                        c[nt][2] = fmaf(p[2], sx[nt][0] * wq, c[nt][2]);
                        c[nt][3] = fmaf(p[3], sx[nt][1] * wq, c[nt][3]);
                    }
                }
            }
        }
    }

    __device__ __forceinline__ void run(int kb0, int kb1) {
        Buf A, B;
        int kb = kb0;
        if (kb >= kb1) return;
        load(A, kb, kb1);
#pragma unroll 1
        for (;;) {
            if (kb + UK < kb1) load(B, kb + UK, kb1);
            compute(A, kb, kb1);
            kb += UK;
            if (kb >= kb1) break;
            if (kb + UK < kb1) load(A, kb + UK, kb1);
            compute(B, kb, kb1);
            kb += UK;
            if (kb >= kb1) break;
        }
    }
};

template <bool FP4, int NT>
__global__ void __launch_bounds__(GEMV_THREADS, 2) gemv_kernel(const GemvParams p) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int gi = blockIdx.z;
    const dsv4_cuda_gemv_desc d = p.descs ? p.descs[gi] : p.one;
    const int m = d.m;
    const int rt = warp % p.rpc, s = warp / p.rpc;
    const int n0 = (blockIdx.x * p.rpc + rt) * 16;
    const int slice = blockIdx.y * p.ks + s;
    const int kb0 = slice * p.kpw;
    const int kb1 = min(p.KB, kb0 + p.kpw);

    GemvWarp<FP4, NT> wp;
    wp.K = p.K;
    wp.KB = p.KB;
    wp.lane_t = t;
    if (!FP4) {
        wp.w0 = d.w + (size_t)(n0 + g) * p.K + 16 * t;
        wp.w1 = wp.w0 + (size_t)8 * p.K;
        wp.s0 = d.ws + (size_t)(n0 >> 7) * p.KB;
        wp.s1 = wp.s0;
    } else {
        wp.w0 = d.w + (size_t)(n0 + g) * (p.K / 2) + 16 * t;
        wp.w1 = wp.w0 + (size_t)8 * (p.K / 2);
        wp.s0 = d.ws + (size_t)(n0 + g) * (p.K / 32);
        wp.s1 = wp.s0 + (size_t)8 * (p.K / 32);
    }
    wp.xr = d.xq + (size_t)g * p.K + (FP4 ? 8 * t : 16 * t);
    wp.xsr = d.xs + (size_t)(2 * t) * p.KB;
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        wp.xv[nt] = nt * 8 + g < m;
#pragma unroll
        for (int e = 0; e < 2; e++) wp.sv[nt][e] = nt * 8 + 2 * t + e < m;
#pragma unroll
        for (int r = 0; r < 4; r++) wp.c[nt][r] = 0.0f;
    }
    wp.run(kb0, kb1);

    /* ---- in-CTA reduction over the ks warps of a row tile, in warp order ---- */
    __shared__ float red[GEMV_WARPS][NT * 4][32];
    if (p.ks > 1) {
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int r = 0; r < 4; r++) red[warp][nt * 4 + r][lane] = wp.c[nt][r];
        __syncthreads();
        if (s == 0)
            for (int ss = 1; ss < p.ks; ss++)
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int r = 0; r < 4; r++) wp.c[nt][r] += red[rt + ss * p.rpc][nt * 4 + r][lane];
    }

    if (p.splits == 1) {
        if (s == 0)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int r = 0; r < 4; r++) {
                    int tok = nt * 8 + 2 * t + (r & 1), n = n0 + g + 8 * (r >> 1);
                    if (tok < m) d.y[(size_t)tok * p.N + n] = __bfloat16_as_ushort(__float2bfloat16_rn(wp.c[nt][r]));
                }
        return;
    }

    /* ---- split-K across CTAs: partial -> ws, the last CTA of the row group sums z = 0.. in order ---- */
    float *part = p.part + (size_t)gi * p.splits * p.mmax * p.N;
    if (s == 0)
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int r = 0; r < 4; r++) {
                int tok = nt * 8 + 2 * t + (r & 1), n = n0 + g + 8 * (r >> 1);
                if (tok < m) __stcg(part + ((size_t)blockIdx.y * p.mmax + tok) * p.N + n, wp.c[nt][r]);
            }
    __threadfence();
    __syncthreads();
    __shared__ int is_last;
    const int ticket = gi * gridDim.x + blockIdx.x;
    if (threadIdx.x == 0) is_last = atomicAdd(p.counters + ticket, 1) == p.splits - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    const int rows = p.rpc * 16, nb = blockIdx.x * rows;
    for (int e = threadIdx.x; e < m * rows; e += GEMV_THREADS) {
        int tok = e / rows, n = nb + e % rows;
        float acc = 0.0f;
        for (int z = 0; z < p.splits; z++) acc += __ldcg(part + ((size_t)z * p.mmax + tok) * p.N + n);
        d.y[(size_t)tok * p.N + n] = __bfloat16_as_ushort(__float2bfloat16_rn(acc));
    }
    if (threadIdx.x == 0) p.counters[ticket] = 0;
}

/* ==== plan and launchers ================================================================================= */

/* Plan: at least ~16 streaming warps per SM (2 resident CTAs of 8 warps; the kernel is capped at 128
 * registers), and at most GEMV_KPW_MAX(_FP4) blocks per warp, so that big and grouped launches are cut into
 * many short CTAs (several waves: small tail) rather than one long wave; K is split inside the CTA first
 * (shared-memory reduction), across CTAs only when 8 warps per row tile are not enough. */
#ifndef GEMV_KPW_MAX
#define GEMV_KPW_MAX 8     /* FP8 (8 = 1 KB per row per warp) */
#endif
#ifndef GEMV_KPW_MAX_FP4
#define GEMV_KPW_MAX_FP4 4 /* FP4: its warps are latency-bound on the nibble expansion; more, shorter ones */
#endif
#ifndef GEMV_WARPS_PER_SM
#define GEMV_WARPS_PER_SM 16
#endif
extern "C" void dsv4_cuda_gemv_plan_get(const dsv4_cuda_ctx *ctx, int count, int max_m, int K, int N, int fp4,
                                        dsv4_cuda_gemv_plan *pl) {
    const int kpw_max = fp4 ? GEMV_KPW_MAX_FP4 : GEMV_KPW_MAX;
    if (count < 1) count = 1;
    if (max_m < 1) max_m = 1;
    const int KB = K / 128 > 0 ? K / 128 : 1;
    const long T = (long)count * (N / 16 > 0 ? N / 16 : 1);
    const long target = (long)ctx->sm_count * GEMV_WARPS_PER_SM;
    long kst = (target + T - 1) / T;
    const long kst_b = (KB + kpw_max - 1) / kpw_max;
    if (kst < kst_b) kst = kst_b;
    if (kst > KB) kst = KB;
    int ks = 1;
    while (ks * 2 <= kst && ks * 2 <= GEMV_WARPS) ks *= 2;
    int splits = (int)(kst / ks);
    if (splits < 1) splits = 1;
    while ((KB + ks * splits - 1) / (ks * splits) > kpw_max) splits++;
    const int rpc = GEMV_WARPS / ks;
    const long groups = (long)count * (N / 16 / rpc > 0 ? N / 16 / rpc : 1);
    while (splits > 1 && ((size_t)count * splits * max_m * N * sizeof(float) > ctx->ws_bytes ||
                          groups > DSV4_CUDA_SPLITK_COUNTERS))
        splits--;
    int kpw = (KB + ks * splits - 1) / (ks * splits);
    splits = ((KB + kpw - 1) / kpw + ks - 1) / ks;
    pl->nt = max_m > 8 ? 2 : 1;
    pl->ks = ks;
    pl->rows = rpc * 16;
    pl->splits = splits;
    pl->kpw = kpw;
    pl->ctas = (int)(groups * splits);
}

template <bool FP4, int NT>
static dsv4_status gemv_launch(dsv4_cuda_ctx *ctx, const GemvParams &p, int count, dsv4_err *err) {
    dim3 grid((unsigned)(p.N / 16 / p.rpc), (unsigned)p.splits, (unsigned)count);
    gemv_kernel<FP4, NT><<<grid, GEMV_THREADS, 0, (cudaStream_t)ctx->stream>>>(p);
    DSV4_CUDA_CHECK_LAUNCH(err);
    return DSV4_OK;
}

static dsv4_status gemv_run(dsv4_cuda_ctx *ctx, int fp4, const dsv4_cuda_gemv_desc *descs,
                            const dsv4_cuda_gemv_desc *one, int count, int max_m, int K, int N, const char *name,
                            dsv4_err *err) {
    if (max_m < 1 || max_m > DSV4_CUDA_GEMV_MAX_M || K < 128 || K % 128 || N < 128 || N % 128 || count < 1 ||
        count > 65535)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                            "%s: M=%d K=%d N=%d count=%d (need 1<=M<=%d, K%%128==0, N%%128==0)", name, max_m, K, N,
                            count, DSV4_CUDA_GEMV_MAX_M);
    dsv4_cuda_gemv_plan pl;
    dsv4_cuda_gemv_plan_get(ctx, count, max_m, K, N, fp4, &pl);
    if (pl.splits > 1 && (size_t)count * pl.splits * max_m * N * sizeof(float) > ctx->ws_bytes)
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "%s: split-K workspace too small", name);
    GemvParams p;
    p.descs = descs;
    if (one) p.one = *one;
    else memset(&p.one, 0, sizeof p.one);
    p.part = (float *)ctx->ws;
    p.counters = ctx->counters;
    p.N = N;
    p.K = K;
    p.KB = K / 128;
    p.ks = pl.ks;
    p.rpc = GEMV_WARPS / pl.ks;
    p.splits = pl.splits;
    p.kpw = pl.kpw;
    p.mmax = max_m;
    if (fp4) return pl.nt == 1 ? gemv_launch<true, 1>(ctx, p, count, err) : gemv_launch<true, 2>(ctx, p, count, err);
    return pl.nt == 1 ? gemv_launch<false, 1>(ctx, p, count, err) : gemv_launch<false, 2>(ctx, p, count, err);
}

extern "C" dsv4_status dsv4_cuda_gemv(dsv4_cuda_ctx *ctx, int fp4, const uint8_t *xq, const uint8_t *xs, int M, int K,
                                      const uint8_t *w, const uint8_t *ws, int N, uint16_t *y, dsv4_err *err) {
    const char *name = fp4 ? "dsv4_cuda_gemv(fp4)" : "dsv4_cuda_gemv(fp8)";
    if (((uintptr_t)xq | (uintptr_t)w) & 15 || ((uintptr_t)y & 3) || (fp4 && ((uintptr_t)ws & 3)))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s: xq, w must be 16-byte aligned, y (and FP4 ws) 4-byte",
                            name);
    dsv4_cuda_gemv_desc one;
    one.w = w;
    one.ws = ws;
    one.xq = xq;
    one.xs = xs;
    one.y = y;
    one.m = M;
    one.reserved = 0;
    return gemv_run(ctx, fp4, NULL, &one, 1, M, K, N, name, err);
}

extern "C" dsv4_status dsv4_cuda_gemv_grouped(dsv4_cuda_ctx *ctx, int fp4, const dsv4_cuda_gemv_desc *descs,
                                              int count, int max_m, int K, int N, dsv4_err *err) {
    if (!descs) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "dsv4_cuda_gemv_grouped: descs is NULL");
    return gemv_run(ctx, fp4, descs, NULL, count, max_m, K, N,
                    fp4 ? "dsv4_cuda_gemv_grouped(fp4)" : "dsv4_cuda_gemv_grouped(fp8)", err);
}

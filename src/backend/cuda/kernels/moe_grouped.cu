/* moe_grouped.cu — routed experts grouped by expert (see cuda_moe.h): the device sort of the step's pairs,
 * the w1+w3 kernel with the SwiGLU epilogue, the act_quant of the live rows, the w2 kernel with the scatter.
 *
 * Must not: allocate, synchronize, or read anything on the host that depends on the routing (the live
 * counts stay on the device; grids are sized by the pair count, CTAs past the live tiles exit).
 *
 * ==== Design ==============================================================================================
 * Sort (one CTA of 16 warps). Warp w owns a contiguous segment of the pairs. Pass 1: each warp counts its
 * segment per expert (__match_any_sync groups the lanes of one expert; the group's first lane adds the
 * group size to the warp's own counter row, so no atomics). Then per expert: the per-warp counters become
 * exclusive prefixes, and one block scan over the experts of (pairs, tiles) gives each expert its first
 * sorted position and its first tile. Pass 2 places every pair at first[e] + warp prefix + rank among the
 * equal lanes before it: the order inside an expert is the pair order (stable, deterministic). Tiles are
 * {expert, first position, rows ≤ bt}; nothing is padded, so the intermediates are exactly [pairs, I].
 *
 * Expert GEMMs ("swap AB", as the decode GEMV in gemv.cu, whose helpers and fragment layout these kernels
 * reuse): the weights are the A operand of mma.sync.m16n8k32 e4m3 (a warp owns 16 output features, loads
 * its weight rows with 16-byte streaming loads straight into registers, FP4 expanded exactly to e4m3 with
 * the per-32 scales applied at promotion), the tile's pair rows are the B operand (8 rows per MMA, NT = 1, 2
 * or 4 such groups: bt = 8·NT). A CTA = 8 warps = (8/ks) row tiles × ks K slices; the ks slices of a row
 * tile are added in slice order through shared memory by slice 0, which runs the epilogue. grid.x covers
 * the output features, grid.y the tiles (max_tiles; CTAs with blockIdx.y ≥ *n_tiles return at once).
 *   - w1+w3 (NM = 2): each warp streams the same 16 rows of w1 and of w3, so the gate and up values of a
 *     (row, feature) meet in one thread: g = bf16(C1), u = bf16(C3), h = swiglu_one(g, u, lim, weight) is
 *     written to h[sorted position] (the B operand gathers x rows pair / k: x is L1/L2 resident).
 *   - w2 (NM = 1): reads ĥ rows in sorted order, writes y[pair] = bf16(C): the scatter back to [row·k + slot];
 *     the per-row combine in ascending expert id stays dsv4_glue_moe_combine / _partial (deterministic).
 *   - ks depends on K only (8 blocks of 128 per warp at least), never on the batch, so a pair's result does
 *     not depend on the other rows of the step; nor does NT (each MMA column is an independent dot product).
 * act_quant between them: the warp body of dsv4_cuda_act_quant_fp8 (blockscaled.cuh), rows < *n_live only.
 *
 * Not yet (docs/PERF.md): shared-memory staging of the B operand for prefill tiles, wgmma, 16-byte output
 * stores, the shared expert in the same launch. */
#include <cuda_bf16.h>

#include "backend/cuda/cuda_moe.h"
#include "backend/cuda/kernels/blockscaled.cuh"
#include "backend/cuda/kernels/ops_common.cuh"

#define MG_WARPS 8
#define MG_THREADS (MG_WARPS * 32)
#define SORT_WARPS 16
#define SORT_THREADS (SORT_WARPS * 32)
#define FULLMASK 0xffffffffu

/* ==== host-side shape helpers ============================================================================ */

static long moe_max_tiles(int pairs, int ne, int bt) {
    long nz = ne < pairs ? ne : pairs;
    return (long)pairs / bt + nz;
}

extern "C" size_t dsv4_cuda_moe_layout_bytes(int pairs, int ne) {
    if (pairs < 0) pairs = 0;
    long mt = moe_max_tiles(pairs, ne, 8); /* the smallest bt has the most tiles */
    size_t b = 16 + (size_t)mt * 16 + (size_t)pairs * 4;
    return (b + 15) & ~(size_t)15;
}

extern "C" int dsv4_cuda_moe_tile_rows(int pairs, int ne) {
    long nz = ne < pairs ? ne : pairs;
    long avg = nz > 0 ? pairs / nz : 0;
    return avg >= 32 ? 32 : avg >= 16 ? 16 : 8;
}

extern "C" void dsv4_cuda_moe_layout_init(void *ws, int pairs, int ne, int bt, dsv4_cuda_moe_layout *lay) {
    if (bt != 8 && bt != 16 && bt != 32) bt = dsv4_cuda_moe_tile_rows(pairs, ne);
    uint8_t *b = (uint8_t *)ws;
    lay->n_tiles = (int32_t *)b;
    lay->n_live = (int32_t *)(b + 4);
    lay->pairs = pairs;
    lay->ne = ne;
    lay->bt = bt;
    lay->max_tiles = (int)moe_max_tiles(pairs, ne, bt);
    lay->tiles = (int32_t *)(b + 16);
    lay->sorted = (int32_t *)(b + 16 + (size_t)lay->max_tiles * 16);
}

/* K split inside a CTA: the largest power of two ≤ 8 that leaves every warp ≥ 8 blocks of 128. */
static int moe_ks(int K) {
    int KB = K / 128, ks = 1;
    while (ks * 2 <= MG_WARPS && KB / (ks * 2) >= 8) ks *= 2;
    return ks;
}

extern "C" void dsv4_cuda_moe_plan_get(const dsv4_cuda_moe_layout *lay, int D, int I, dsv4_cuda_moe_plan *pl) {
    pl->bt = lay->bt;
    pl->max_tiles = lay->max_tiles;
    pl->ks13 = moe_ks(D);
    pl->cols13 = 16 * (MG_WARPS / pl->ks13);
    pl->ks2 = moe_ks(I);
    pl->cols2 = 16 * (MG_WARPS / pl->ks2);
}

/* ==== sort =============================================================================================== */

struct SortParams {
    const int32_t *experts;
    int pairs, e0, ne, bt, max_tiles;
    int32_t *n_tiles, *n_live;
    int4 *tiles;
    int32_t *sorted;
    uint16_t *y_zero;
    int D;
};

/* local expert of pair i (−1: not held here, or i past the segment end) */
__device__ __forceinline__ int local_expert(const SortParams &p, int i, int end) {
    if (i >= end) return -1;
    const int e = p.experts[i] - p.e0;
    return e >= 0 && e < p.ne ? e : -1;
}

__device__ __forceinline__ long long warp_incl_scan(long long v, int lane) {
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        long long t = __shfl_up_sync(FULLMASK, v, o);
        if (lane >= o) v += t;
    }
    return v;
}

__global__ void __launch_bounds__(SORT_THREADS) moe_sort_kernel(const SortParams p) {
    __shared__ int cnt[SORT_WARPS][DSV4_CUDA_MOE_MAX_EXPERTS]; /* per warp, per expert: count, then prefix */
    __shared__ int first[DSV4_CUDA_MOE_MAX_EXPERTS];
    __shared__ long long wsum[SORT_WARPS];
    const int tid = threadIdx.x, w = tid >> 5, lane = tid & 31;
    for (int i = tid; i < SORT_WARPS * DSV4_CUDA_MOE_MAX_EXPERTS; i += SORT_THREADS) (&cnt[0][0])[i] = 0;
    __syncthreads();
    const int seg = (p.pairs + SORT_WARPS - 1) / SORT_WARPS;
    const int s0 = w * seg, s1 = min(p.pairs, s0 + seg);

    /* pass 1: per-warp counts (warp-uniform loop; one writer per counter row) */
    for (int b = s0; b < s1; b += 32) {
        const int e = local_expert(p, b + lane, s1);
        const unsigned peers = __match_any_sync(FULLMASK, e);
        if (e >= 0 && lane == __ffs(peers) - 1) cnt[w][e] += __popc(peers);
        __syncwarp();
    }
    __syncthreads();

    /* per expert (thread tid = expert): warp prefixes, total, tiles; then one scan over the experts */
    int tot = 0;
    if (tid < p.ne)
        for (int ww = 0; ww < SORT_WARPS; ww++) {
            const int c = cnt[ww][tid];
            cnt[ww][tid] = tot;
            tot += c;
        }
    const int nt_e = (tot + p.bt - 1) / p.bt;
    const long long v = ((long long)tot << 32) | (unsigned)nt_e; /* both sums stay below 2^31 */
    const long long incl = warp_incl_scan(v, lane);
    if (lane == 31) wsum[w] = incl;
    __syncthreads();
    if (w == 0) {
        const long long a = lane < SORT_WARPS ? wsum[lane] : 0;
        const long long ai = warp_incl_scan(a, lane);
        __syncwarp();
        if (lane < SORT_WARPS) wsum[lane] = ai - a;
    }
    __syncthreads();
    const long long excl = wsum[w] + incl - v;
    const int f0 = (int)(excl >> 32), tile0 = (int)(excl & 0xffffffffLL);
    if (tid == SORT_THREADS - 1) {
        const long long all = excl + v;
        *p.n_live = (int)(all >> 32);
        *p.n_tiles = min((int)(all & 0xffffffffLL), p.max_tiles);
    }
    if (tid < p.ne) {
        first[tid] = f0;
        for (int i = 0; i < nt_e && tile0 + i < p.max_tiles; i++)
            p.tiles[tile0 + i] = make_int4(tid, f0 + i * p.bt, min(p.bt, tot - i * p.bt), 0);
    }
    __syncthreads();

    /* pass 2: placement, in pair order inside each expert */
    for (int b = s0; b < s1; b += 32) {
        const int i = b + lane;
        const int e = local_expert(p, i, s1);
        const unsigned peers = __match_any_sync(FULLMASK, e);
        const int base = e >= 0 ? cnt[w][e] : 0;
        if (e >= 0) p.sorted[first[e] + base + __popc(peers & ((1u << lane) - 1u))] = i;
        __syncwarp();
        if (e >= 0 && lane == __ffs(peers) - 1) cnt[w][e] = base + __popc(peers);
        __syncwarp();
    }

    /* rows of the pairs not held here: zero, for a combine that reads every slot */
    if (p.y_zero)
        for (int i = w; i < p.pairs; i += SORT_WARPS) {
            const int e = p.experts[i] - p.e0;
            if (e >= 0 && e < p.ne) continue;
            uint16_t *row = p.y_zero + (size_t)i * p.D;
            for (int d = lane; d < p.D; d += 32) row[d] = 0;
        }
}

extern "C" dsv4_status dsv4_cuda_moe_sort(dsv4_cuda_ctx *ctx, const int32_t *experts, int e0,
                                          const dsv4_cuda_moe_layout *lay, uint16_t *y_zero, int D, dsv4_err *err) {
    if (!lay || lay->ne < 1 || lay->ne > DSV4_CUDA_MOE_MAX_EXPERTS || lay->pairs < 0 || e0 < 0 ||
        (lay->bt != 8 && lay->bt != 16 && lay->bt != 32) || (y_zero && D < 1))
        return ops_bad(err, "dsv4_cuda_moe_sort", "bad layout (1 <= ne <= 512, bt 8/16/32) or D");
    if ((uintptr_t)lay->tiles & 15) return ops_bad(err, "dsv4_cuda_moe_sort", "layout workspace not 16-byte aligned");
    if (lay->pairs == 0) return DSV4_OK;
    SortParams p;
    p.experts = experts;
    p.pairs = lay->pairs;
    p.e0 = e0;
    p.ne = lay->ne;
    p.bt = lay->bt;
    p.max_tiles = lay->max_tiles;
    p.n_tiles = lay->n_tiles;
    p.n_live = lay->n_live;
    p.tiles = reinterpret_cast<int4 *>(lay->tiles);
    p.sorted = lay->sorted;
    p.y_zero = y_zero;
    p.D = D;
    moe_sort_kernel<<<1, SORT_THREADS, 0, (cudaStream_t)ctx->stream>>>(p);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* ==== expert GEMMs ======================================================================================= */

struct MoeGemmParams {
    const int4 *tiles;
    const int32_t *n_tiles;
    const int32_t *sorted;
    const uint8_t *xq, *xs;   /* B operand rows: gather_k > 0: row sorted[pos] / gather_k; else row pos */
    int gather_k;
    const uint8_t *w[2], *s[2];
    size_t w_stride, s_stride;
    int N, K, KB, ks, rpc, kpw;
    const float *route_w;     /* w1+w3 epilogue */
    float limit;
    uint16_t *h;              /* w1+w3 out: [pairs, N], sorted order */
    uint16_t *y;              /* w2 out: [pairs, N], pair order */
};

/* One warp: 16 weight rows (of NM matrices) against the tile's rows, over the 128-blocks [kb0, kb1).
 * Fragment layout and K permutation exactly as GemvWarp (gemv.cu). */
template <bool FP4, int NT, int NM> struct MoeWarp {
    static constexpr int UK = NM == 2 ? 1 : 2; /* 128-blocks per step (two step buffers in flight) */
    float c[NM][NT][4];
    struct Buf {
        uint4 w[NM][UK][FP4 ? 2 : 4];
        uint32_t s[NM][UK][2];
    };
    const uint8_t *w0[NM], *w1[NM]; /* this lane's row g / g+8 pointers (offset by the lane's byte position) */
    const uint8_t *s0[NM], *s1[NM]; /* FP4: scale rows g / g+8; FP8: s0 = the tile's scale row */
    const uint8_t *xr[NT];          /* B row of tile row nt·8+g (offset by the lane's byte position), or null */
    const uint8_t *xsr[NT][2];      /* activation scale row of tile row nt·8+2t+e, or null */
    int lane_t;

    __device__ __forceinline__ void load(Buf &b, int kb, int kb1) {
#pragma unroll
        for (int u = 0; u < UK; u++) {
            if (kb + u < kb1) {
#pragma unroll
                for (int m = 0; m < NM; m++) {
                    if (!FP4) {
                        const size_t o = (size_t)(kb + u) * 128;
                        b.w[m][u][0] = ld_stream16(w0[m] + o);
                        b.w[m][u][1] = ld_stream16(w0[m] + o + 64);
                        b.w[m][u][2] = ld_stream16(w1[m] + o);
                        b.w[m][u][3] = ld_stream16(w1[m] + o + 64);
                    } else {
                        const size_t o = (size_t)(kb + u) * 64;
                        b.w[m][u][0] = ld_stream16(w0[m] + o);
                        b.w[m][u][1] = ld_stream16(w1[m] + o);
                        b.s[m][u][0] = ld_stream4(s0[m] + (size_t)(kb + u) * 4);
                        b.s[m][u][1] = ld_stream4(s1[m] + (size_t)(kb + u) * 4);
                    }
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
                for (int e = 0; e < 2; e++) sx[nt][e] = xsr[nt][e] ? g_e8m0(__ldg(xsr[nt][e] + k)) : 0.0f;
            if (!FP4) {
                uint4 x0[NT], x1[NT];
#pragma unroll
                for (int nt = 0; nt < NT; nt++) {
                    x0[nt] = make_uint4(0, 0, 0, 0);
                    x1[nt] = x0[nt];
                    if (xr[nt]) {
                        const uint8_t *xp = xr[nt] + (size_t)k * 128;
                        x0[nt] = __ldg(reinterpret_cast<const uint4 *>(xp));
                        x1[nt] = __ldg(reinterpret_cast<const uint4 *>(xp + 64));
                    }
                }
#pragma unroll
                for (int m = 0; m < NM; m++) {
                    const float sw = g_e8m0(__ldg(s0[m] + k));
                    const uint4 &a = b.w[m][u][0], &ah = b.w[m][u][1], &c8 = b.w[m][u][2], &c8h = b.w[m][u][3];
#pragma unroll
                    for (int nt = 0; nt < NT; nt++) {
                        float pp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                        mma16832(pp, a.x, c8.x, a.y, c8.y, x0[nt].x, x0[nt].y);
                        mma16832(pp, a.z, c8.z, a.w, c8.w, x0[nt].z, x0[nt].w);
                        mma16832(pp, ah.x, c8h.x, ah.y, c8h.y, x1[nt].x, x1[nt].y);
                        mma16832(pp, ah.z, c8h.z, ah.w, c8h.w, x1[nt].z, x1[nt].w);
                        const float f0 = sx[nt][0] * sw, f1 = sx[nt][1] * sw;
                        c[m][nt][0] = fmaf(pp[0], f0, c[m][nt][0]);
                        c[m][nt][1] = fmaf(pp[1], f1, c[m][nt][1]);
                        c[m][nt][2] = fmaf(pp[2], f0, c[m][nt][2]);
                        c[m][nt][3] = fmaf(pp[3], f1, c[m][nt][3]);
                    }
                }
            } else {
                uint2 xf[NT][4];
#pragma unroll
                for (int nt = 0; nt < NT; nt++)
#pragma unroll
                    for (int bb = 0; bb < 4; bb++)
                        xf[nt][bb] = xr[nt] ? __ldg(reinterpret_cast<const uint2 *>(xr[nt] + (size_t)k * 128 + bb * 32))
                                            : make_uint2(0, 0);
#pragma unroll
                for (int m = 0; m < NM; m++) {
                    uint32_t r0 = b.w[m][u][0].x, r1 = b.w[m][u][0].y, r2 = b.w[m][u][0].z, r3 = b.w[m][u][0].w;
                    uint32_t q0 = b.w[m][u][1].x, q1 = b.w[m][u][1].y, q2 = b.w[m][u][1].z, q3 = b.w[m][u][1].w;
                    quad_transpose(r0, r1, r2, r3, lane_t);
                    quad_transpose(q0, q1, q2, q3, lane_t);
                    const uint32_t rg[4] = {r0, r1, r2, r3}, rq[4] = {q0, q1, q2, q3};
#pragma unroll
                    for (int bb = 0; bb < 4; bb++) {
                        uint32_t a0, a2, a1, a3;
                        fp4x8_to_e4m3(rg[bb], a0, a2);
                        fp4x8_to_e4m3(rq[bb], a1, a3);
                        const float wg = g_e8m0((b.s[m][u][0] >> (8 * bb)) & 0xffu);
                        const float wq = g_e8m0((b.s[m][u][1] >> (8 * bb)) & 0xffu);
#pragma unroll
                        for (int nt = 0; nt < NT; nt++) {
                            float pp[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                            mma16832(pp, a0, a1, a2, a3, xf[nt][bb].x, xf[nt][bb].y);
                            c[m][nt][0] = fmaf(pp[0], sx[nt][0] * wg, c[m][nt][0]);
                            c[m][nt][1] = fmaf(pp[1], sx[nt][1] * wg, c[m][nt][1]);
                            c[m][nt][2] = fmaf(pp[2], sx[nt][0] * wq, c[m][nt][2]);
                            c[m][nt][3] = fmaf(pp[3], sx[nt][1] * wq, c[m][nt][3]);
                        }
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

__device__ __forceinline__ int moe_b_row(const MoeGemmParams &p, int pos) {
    return p.gather_k > 0 ? p.sorted[pos] / p.gather_k : pos;
}

template <bool FP4, int NT, int NM>
__global__ void __launch_bounds__(MG_THREADS, NT == 1 ? 2 : 1) moe_gemm_kernel(const MoeGemmParams p) {
    const int tile = blockIdx.y;
    if (tile >= *p.n_tiles) return; /* whole CTA: before any barrier */
    const int4 ti = p.tiles[tile];
    const int ex = ti.x, first = ti.y, cnt = ti.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int rt = warp % p.rpc, sl = warp / p.rpc;
    const int n0 = (blockIdx.x * p.rpc + rt) * 16;
    const int kb0 = sl * p.kpw;
    const int kb1 = min(p.KB, kb0 + p.kpw);

    MoeWarp<FP4, NT, NM> wp;
    wp.lane_t = t;
#pragma unroll
    for (int m = 0; m < NM; m++) {
        const uint8_t *W = p.w[m] + (size_t)ex * p.w_stride, *S = p.s[m] + (size_t)ex * p.s_stride;
        if (!FP4) {
            wp.w0[m] = W + (size_t)(n0 + g) * p.K + 16 * t;
            wp.w1[m] = wp.w0[m] + (size_t)8 * p.K;
            wp.s0[m] = S + (size_t)(n0 >> 7) * p.KB;
            wp.s1[m] = wp.s0[m];
        } else {
            wp.w0[m] = W + (size_t)(n0 + g) * (p.K / 2) + 16 * t;
            wp.w1[m] = wp.w0[m] + (size_t)8 * (p.K / 2);
            wp.s0[m] = S + (size_t)(n0 + g) * (p.K / 32);
            wp.s1[m] = wp.s0[m] + (size_t)8 * (p.K / 32);
        }
#pragma unroll
        for (int nt = 0; nt < NT; nt++)
#pragma unroll
            for (int r = 0; r < 4; r++) wp.c[m][nt][r] = 0.0f;
    }
#pragma unroll
    for (int nt = 0; nt < NT; nt++) {
        const int tr = nt * 8 + g;
        wp.xr[nt] = tr < cnt ? p.xq + (size_t)moe_b_row(p, first + tr) * p.K + (FP4 ? 8 * t : 16 * t) : nullptr;
#pragma unroll
        for (int e = 0; e < 2; e++) {
            const int ts = nt * 8 + 2 * t + e;
            wp.xsr[nt][e] = ts < cnt ? p.xs + (size_t)moe_b_row(p, first + ts) * p.KB : nullptr;
        }
    }
    wp.run(kb0, kb1);

    /* ---- in-CTA reduction over the ks slices of a row tile, in slice order ---- */
    __shared__ float red[MG_WARPS][NM * NT * 4][32];
    if (p.ks > 1) {
#pragma unroll
        for (int m = 0; m < NM; m++)
#pragma unroll
            for (int nt = 0; nt < NT; nt++)
#pragma unroll
                for (int r = 0; r < 4; r++) red[warp][(m * NT + nt) * 4 + r][lane] = wp.c[m][nt][r];
        __syncthreads();
        if (sl == 0)
            for (int ss = 1; ss < p.ks; ss++)
#pragma unroll
                for (int m = 0; m < NM; m++)
#pragma unroll
                    for (int nt = 0; nt < NT; nt++)
#pragma unroll
                        for (int r = 0; r < 4; r++) wp.c[m][nt][r] += red[rt + ss * p.rpc][(m * NT + nt) * 4 + r][lane];
    }
    if (sl != 0) return;

    /* ---- epilogue: C fragment (r) = tile row nt·8 + 2t + (r & 1), feature n0 + g + 8·(r >> 1) ---- */
#pragma unroll
    for (int nt = 0; nt < NT; nt++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            const int tr = nt * 8 + 2 * t + (r & 1), n = n0 + g + 8 * (r >> 1);
            if (tr >= cnt) continue;
            const int pos = first + tr;
            if (NM == 2) {
                const float gv = bfr(wp.c[0][nt][r]), uv = bfr(wp.c[NM - 1][nt][r]);
                p.h[(size_t)pos * p.N + n] = swiglu_one(gv, uv, p.limit, p.route_w[p.sorted[pos]]);
            } else {
                p.y[(size_t)p.sorted[pos] * p.N + n] = f2bf(wp.c[0][nt][r]);
            }
        }
}

/* act_quant of h rows [0, *n_live) (one warp per 128-block, the body of dsv4_cuda_act_quant_fp8) */
__global__ void moe_act_quant_kernel(const uint16_t *__restrict__ h, uint8_t *__restrict__ q,
                                     uint8_t *__restrict__ s, const int32_t *n_live, int KBI) {
    const long blk = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    if (blk >= (long)*n_live * KBI) return;
    act_quant_warp128(h + blk * 128, q + blk * 128, s + blk, threadIdx.x & 31);
}

template <bool FP4, int NM>
static void gemm_launch_nt(const MoeGemmParams &p, int NT, dim3 grid, cudaStream_t st) {
    if (NT == 1) moe_gemm_kernel<FP4, 1, NM><<<grid, MG_THREADS, 0, st>>>(p);
    else if (NT == 2) moe_gemm_kernel<FP4, 2, NM><<<grid, MG_THREADS, 0, st>>>(p);
    else moe_gemm_kernel<FP4, 4, NM><<<grid, MG_THREADS, 0, st>>>(p);
}

static dsv4_status gemm_launch(dsv4_cuda_ctx *ctx, const dsv4_cuda_moe_layout *lay, MoeGemmParams &p, int fp4, int NM,
                               dsv4_err *err) {
    p.KB = p.K / 128;
    p.ks = moe_ks(p.K);
    p.rpc = MG_WARPS / p.ks;
    p.kpw = (p.KB + p.ks - 1) / p.ks;
    p.tiles = reinterpret_cast<const int4 *>(lay->tiles);
    p.n_tiles = lay->n_tiles;
    p.sorted = lay->sorted;
    const dim3 grid((unsigned)(p.N / (16 * p.rpc)), (unsigned)lay->max_tiles);
    const int NT = lay->bt / 8;
    cudaStream_t st = (cudaStream_t)ctx->stream;
    if (fp4) {
        if (NM == 2) gemm_launch_nt<true, 2>(p, NT, grid, st);
        else gemm_launch_nt<true, 1>(p, NT, grid, st);
    } else {
        if (NM == 2) gemm_launch_nt<false, 2>(p, NT, grid, st);
        else gemm_launch_nt<false, 1>(p, NT, grid, st);
    }
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

/* FP4 scales are read 4 at a time (one 128-block's four 32-block scales); FP8 scales a byte at a time. */
static bool weights_ok(const dsv4_cuda_moe_weights &w) {
    return w.w && w.s && !(((uintptr_t)w.w | (uintptr_t)w.w_stride) & 15) &&
           !(w.fp4 && (((uintptr_t)w.s | (uintptr_t)w.s_stride) & 3));
}

extern "C" dsv4_status dsv4_cuda_moe_experts(dsv4_cuda_ctx *ctx, const dsv4_cuda_moe_layout *lay,
                                             const dsv4_cuda_moe_params *p, dsv4_err *err) {
    const char *fn = "dsv4_cuda_moe_experts";
    if (!lay || !p) return ops_bad(err, fn, "NULL layout or params");
    if (p->D < 128 || p->D % 128 || p->I < 128 || p->I % 128 || p->k < 1)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s: D=%d I=%d k=%d (D, I multiples of 128, k >= 1)", fn, p->D,
                            p->I, p->k);
    if (lay->bt != 8 && lay->bt != 16 && lay->bt != 32) return ops_bad(err, fn, "layout bt must be 8, 16 or 32");
    if ((uintptr_t)lay->tiles & 15) return ops_bad(err, fn, "layout workspace not 16-byte aligned");
    if (lay->max_tiles > 65535) return ops_bad(err, fn, "too many pairs for one launch (max_tiles > 65535)");
    if (!weights_ok(p->w1) || !weights_ok(p->w3) || !weights_ok(p->w2))
        return ops_bad(err, fn, "expert weights: w and w_stride must be 16-byte aligned, FP4 s and s_stride 4-byte");
    if (p->w1.fp4 != p->w3.fp4 || p->w1.w_stride != p->w3.w_stride || p->w1.s_stride != p->w3.s_stride)
        return ops_bad(err, fn, "w1 and w3 must have the same kind and strides");
    if (((uintptr_t)p->xq | (uintptr_t)p->hq) & 15 || (uintptr_t)p->h & 15 || (uintptr_t)p->y & 3 || !p->xs ||
        !p->hs || !p->route_w)
        return ops_bad(err, fn, "xq, hq, h must be 16-byte aligned, y 4-byte; xs, hs, route_w given");
    if (lay->pairs == 0) return DSV4_OK;

    MoeGemmParams g13 = {};
    g13.xq = p->xq;
    g13.xs = p->xs;
    g13.gather_k = p->k;
    g13.w[0] = p->w1.w;
    g13.s[0] = p->w1.s;
    g13.w[1] = p->w3.w;
    g13.s[1] = p->w3.s;
    g13.w_stride = p->w1.w_stride;
    g13.s_stride = p->w1.s_stride;
    g13.N = p->I;
    g13.K = p->D;
    g13.route_w = p->route_w;
    g13.limit = p->swiglu_limit;
    g13.h = p->h;
    dsv4_status st = gemm_launch(ctx, lay, g13, p->w1.fp4, 2, err);
    if (st != DSV4_OK) return st;

    const int KBI = p->I / 128;
    const long blocks = (long)lay->pairs * KBI;
    moe_act_quant_kernel<<<(unsigned)((blocks + 7) / 8), 256, 0, (cudaStream_t)ctx->stream>>>(p->h, p->hq, p->hs,
                                                                                            lay->n_live, KBI);
    OPS_LAUNCH_CHECK(err);

    MoeGemmParams g2 = {};
    g2.xq = p->hq;
    g2.xs = p->hs;
    g2.gather_k = 0;
    g2.w[0] = g2.w[1] = p->w2.w;
    g2.s[0] = g2.s[1] = p->w2.s;
    g2.w_stride = p->w2.w_stride;
    g2.s_stride = p->w2.s_stride;
    g2.N = p->D;
    g2.K = p->I;
    g2.y = p->y;
    return gemm_launch(ctx, lay, g2, p->w2.fp4, 1, err);
}

/* linear.cu — CUDA kernels and launchers of act_quant (FP8, 1x128, ue8m0) and the FP8 / FP4 / BF16
 * linears (see cuda_linear.h for the contract, spec §3.3 and §3.6 for the numerics).
 *
 * Must not: allocate device memory (split-K partials live in ctx->ws), synchronize the stream, or keep any
 * state between calls other than the split-K counters, which every launch leaves at zero. The BF16 linear and
 * the cuBLASLt FP8 path (kernel 3, ctx->fp8_gemm) are in linear_lt.cu.
 *
 * ==== One tensor-core kernel for decode and prefill ====================================================
 * Both the FP8 and the FP4 linear run on `mma.sync.m16n8k32.f32.e4m3.e4m3.f32` (sm_89+; Hopper runs it at a
 * fraction of wgmma's rate, which is enough for decode and gives a correct, moderate prefill — wgmma is the
 * next step, see docs/PERF.md). The activation tile is the MMA's A operand (rows = tokens), the weight tile
 * its B operand (columns = output features): both are K-contiguous in memory, which is exactly the
 * "row.col" layout, so no transposes are needed.
 *
 * K permutation. Inside one k32 MMA step the hardware wants thread (g = lane/4, t = lane%4) to hold logical
 * k = 4t..4t+3 (a0/b0) and 16+4t..16+4t+3 (a2/b1). A dot product does not care about the order of k as
 * long as A and B use the same order, so we map logical k 4t+i -> physical 8t+i and 16+4t+i -> 8t+4+i:
 * each thread then reads 8 contiguous bytes (one 64-bit shared load) for A and B alike, and the 32 k of
 * one MMA are exactly the 32 physical k of one aligned 32-block — which is what the FP4 path needs, since
 * its weight scales change every 32 k (spec §3.6 fp4_gemm: one P per 32-block).
 *
 * Promotion. FP8: the 4 k32 MMAs of a 128-block accumulate into a fresh register tile P, then
 * C = fma(P, s_x·s_w, C) — s_x·s_w is a product of powers of two, so P·s is exact and the one rounding is
 * the FP32 add, as in the CPU reference. FP4: the same after every k32 MMA with the per-32 weight scale.
 *
 * Split-K. For shapes with few output tiles (decode, narrow N) the K range is cut into `splits` pieces
 * (grid z). Each piece writes its FP32 partial tile to ctx->ws; the last CTA of a tile to arrive (atomic
 * ticket in ctx->counters) sums the pieces in fixed order z = 0..splits-1, rounds to BF16, and resets the
 * ticket. The result is therefore deterministic, and a launch can be captured in a CUDA graph.
 *
 * Shared memory rows are padded (160 bytes for 128-byte FP8 rows, 80 bytes for 64-byte FP4 rows) so that the
 * 8-byte / 4-byte fragment loads of a half-warp hit 32 distinct banks. Tiles move global->shared with
 * cp.async (16 bytes per thread), STAGES deep. */
#include <cuda_bf16.h>
#include <cuda_fp8.h>

#include "backend/cuda/cuda_linear.h"
#include "backend/cuda/gemv.h"
#include "backend/cuda/kernels/blockscaled.cuh"

/* ==== small device helpers =============================================================================== */

/* e8m0 exponent byte -> 2^(c-127) as float (c = 0 is the subnormal 2^-127, 255 is NaN). */
__device__ __forceinline__ float e8m0_to_f32(uint32_t c) {
    if (c == 0) return 0x1p-127f;
    if (c == 255) return __int_as_float(0x7fc00000);
    return __int_as_float((int)(c << 23));
}

__device__ __forceinline__ float bf16_bits_to_f32(uint32_t h) { return __uint_as_float(h << 16); }

/* Four e2m1 codes (one per nibble, low nibble first) -> four e4m3 bytes, exactly. The magnitude comes
 * from an 8-entry byte table selected with prmt (codes 0..7 = 0, .5, 1, 1.5, 2, 3, 4, 6 as e4m3), the sign
 * bit (nibble bit 3) moves to the byte's bit 7. */
__device__ __forceinline__ uint32_t fp4x4_to_e4m3x4(uint32_t h) {
    uint32_t mag = __byte_perm(0x3C383000u, 0x4C484440u, h & 0x7777u);
    uint32_t sgn = ((h & 0x8u) << 4) | ((h & 0x80u) << 8) | ((h & 0x800u) << 12) | ((h & 0x8000u) << 16);
    return mag | sgn;
}

__device__ __forceinline__ void mma_e4m3(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/* 16-byte async copy global -> shared; when !valid the 16 bytes are zero-filled and nothing is read. */
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    int n = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem) {
    unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/* ==== act_quant ============================================================================================
 * One warp per 128-element block (blockscaled.cuh act_quant_warp128, shared with the grouped MoE): each lane
 * loads 4 BF16 values (8 bytes), the warp reduces |x| with max (NaN-ignoring, like the CPU's `a > m` loop),
 * the scale exponent is computed on the FP32 bit pattern exactly as dsv4_pow2_scale_exp does, and x·2^-e
 * (exact: ldexpf) is converted with the hardware's RNE satfinite e4m3 conversion, which equals
 * dsv4_f32_to_e4m3 (saturate to ±448, RNE, subnormals with step 2^-9). */
__global__ void act_quant_fp8_kernel(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                     uint8_t *__restrict__ s, long nblocks) {
    long blk = (long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    int lane = threadIdx.x & 31;
    if (blk >= nblocks) return;
    act_quant_warp128(x + blk * 128, q + blk * 128, s + blk, lane);
}

extern "C" dsv4_status dsv4_cuda_act_quant_fp8(dsv4_cuda_ctx *ctx, const uint16_t *x, int M, int K, uint8_t *q,
                                               uint8_t *s, dsv4_err *err) {
    if (M < 1 || K < 128 || K % 128)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "dsv4_cuda_act_quant_fp8: M=%d K=%d (K %% 128 != 0)", M, K);
    long nblocks = (long)M * (K / 128);
    const int warps = 8;
    long grid = (nblocks + warps - 1) / warps;
    act_quant_fp8_kernel<<<(unsigned)grid, warps * 32, 0, (cudaStream_t)ctx->stream>>>(x, q, s, nblocks);
    DSV4_CUDA_CHECK_LAUNCH(err);
    return DSV4_OK;
}

/* ==== block-scaled tensor-core linear (FP8 or FP4 weights) ============================================== */

struct LinParams {
    const uint8_t *xq;   /* [M, K] e4m3 */
    const uint8_t *xs;   /* [M, K/128] e8m0 */
    const uint8_t *w;    /* FP8: [N, K] e4m3; FP4: [N, K/2] packed e2m1 */
    const uint8_t *ws;   /* FP8: [N/128, K/128] e8m0; FP4: [N, K/32] e8m0 */
    uint16_t *y;         /* [M, N] bf16 */
    float *part;         /* [splits, M, N] fp32 split-K partials (only when splits > 1) */
    int *counters;       /* [tiles] split-K tickets, zero on entry and on exit */
    int M, N, K;
    int kps;             /* 128-blocks per split */
    int splits;
};

template <bool FP4, int BM, int BN, int WM, int WN, int STAGES> struct LinCfg {
    static constexpr int THREADS = WM * WN * 32;
    static constexpr int XS = 160;                 /* smem row stride of the activation tile (bytes) */
    static constexpr int WS = FP4 ? 80 : 160;      /* smem row stride of the weight tile */
    static constexpr int X_BYTES = BM * XS;
    static constexpr int W_BYTES = BN * WS;
    static constexpr int SW_BYTES = FP4 ? BN * 4 : 0; /* FP4: 4 per-32 scales per weight row per 128-block */
    static constexpr int STAGE = X_BYTES + W_BYTES + SW_BYTES;
    static constexpr int SMEM = STAGE * STAGES;
    static constexpr int WTM = BM / WM, WTN = BN / WN; /* warp tile */
    static constexpr int MT = WTM / 16, NT = WTN / 8;  /* MMAs per warp tile per k32 */
    static_assert(WTM % 16 == 0 && WTN % 8 == 0, "warp tile");
    static_assert(128 % BN == 0 || BN % 128 == 0, "FP8 weight scale must be uniform per 128 rows");
    static_assert(STAGE % 16 == 0, "stage alignment");
};

template <bool FP4, int BM, int BN, int WM, int WN, int STAGES>
__device__ __forceinline__ void lin_load_stage(const LinParams &p, uint8_t *stage, int m0, int n0, int kb) {
    using C = LinCfg<FP4, BM, BN, WM, WN, STAGES>;
    const int tid = threadIdx.x;
    uint8_t *sx = stage, *sw = stage + C::X_BYTES, *ss = sw + C::W_BYTES;
    for (int c = tid; c < BM * 8; c += C::THREADS) {
        int r = c >> 3, ch = c & 7, gm = m0 + r;
        bool ok = gm < p.M;
        const uint8_t *src = p.xq + (size_t)(ok ? gm : p.M - 1) * p.K + (size_t)kb * 128 + ch * 16;
        cp_async16(sx + r * C::XS + ch * 16, src, ok);
    }
    if (!FP4) {
        for (int c = tid; c < BN * 8; c += C::THREADS) {
            int r = c >> 3, ch = c & 7;
            cp_async16(sw + r * C::WS + ch * 16, p.w + (size_t)(n0 + r) * p.K + (size_t)kb * 128 + ch * 16, true);
        }
    } else {
        for (int c = tid; c < BN * 4; c += C::THREADS) {
            int r = c >> 2, ch = c & 3;
            cp_async16(sw + r * C::WS + ch * 16, p.w + (size_t)(n0 + r) * (p.K / 2) + (size_t)kb * 64 + ch * 16, true);
        }
        for (int c = tid; c < BN; c += C::THREADS)
            cp_async4(ss + c * 4, p.ws + (size_t)(n0 + c) * (p.K / 32) + (size_t)kb * 4);
    }
}

template <bool FP4, int BM, int BN, int WM, int WN, int STAGES>
__global__ void __launch_bounds__(WM *WN * 32) linear_mma_kernel(const LinParams p) {
    using C = LinCfg<FP4, BM, BN, WM, WN, STAGES>;
    extern __shared__ __align__(16) uint8_t smem[];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int g = lane >> 2, t4 = lane & 3;
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int KB = p.K / 128;
    const int kb0 = blockIdx.z * p.kps;
    const int nkb = min(KB - kb0, p.kps);

    float acc[C::MT][C::NT][4];
#pragma unroll
    for (int i = 0; i < C::MT; i++)
#pragma unroll
        for (int t = 0; t < C::NT; t++)
#pragma unroll
            for (int r = 0; r < 4; r++) acc[i][t][r] = 0.0f;

#pragma unroll
    for (int s = 0; s < STAGES - 1; s++) {
        if (s < nkb) lin_load_stage<FP4, BM, BN, WM, WN, STAGES>(p, smem + s * C::STAGE, m0, n0, kb0 + s);
        cp_async_commit();
    }

    for (int it = 0; it < nkb; it++) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();
        {
            int nx = it + STAGES - 1;
            if (nx < nkb) lin_load_stage<FP4, BM, BN, WM, WN, STAGES>(p, smem + (nx % STAGES) * C::STAGE, m0, n0, kb0 + nx);
            cp_async_commit();
        }
        const uint8_t *sx = smem + (it % STAGES) * C::STAGE;
        const uint8_t *sw = sx + C::X_BYTES;
        const uint8_t *ss = sw + C::W_BYTES;
        const int kb = kb0 + it;

        /* activation scales of this thread's rows (rows past M hold zeros; their scale is irrelevant) */
        float sxv[C::MT][2];
#pragma unroll
        for (int i = 0; i < C::MT; i++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = m0 + wm * C::WTM + i * 16 + g + 8 * h;
                sxv[i][h] = r < p.M ? e8m0_to_f32(__ldg(p.xs + (size_t)r * KB + kb)) : 0.0f;
            }

        float pp[C::MT][C::NT][4];
        if (!FP4) {
#pragma unroll
            for (int i = 0; i < C::MT; i++)
#pragma unroll
                for (int t = 0; t < C::NT; t++)
#pragma unroll
                    for (int r = 0; r < 4; r++) pp[i][t][r] = 0.0f;
        }
#pragma unroll
        for (int j = 0; j < 4; j++) {
            uint32_t a[C::MT][4];
#pragma unroll
            for (int i = 0; i < C::MT; i++) {
                int r0 = wm * C::WTM + i * 16 + g;
                uint2 lo = *reinterpret_cast<const uint2 *>(sx + r0 * C::XS + j * 32 + t4 * 8);
                uint2 hi = *reinterpret_cast<const uint2 *>(sx + (r0 + 8) * C::XS + j * 32 + t4 * 8);
                a[i][0] = lo.x;
                a[i][1] = hi.x;
                a[i][2] = lo.y;
                a[i][3] = hi.y;
            }
            if (FP4) {
#pragma unroll
                for (int i = 0; i < C::MT; i++)
#pragma unroll
                    for (int t = 0; t < C::NT; t++)
#pragma unroll
                        for (int r = 0; r < 4; r++) pp[i][t][r] = 0.0f;
            }
#pragma unroll
            for (int t = 0; t < C::NT; t++) {
                int n = wn * C::WTN + t * 8 + g;
                uint32_t b0, b1;
                if (!FP4) {
                    uint2 b = *reinterpret_cast<const uint2 *>(sw + n * C::WS + j * 32 + t4 * 8);
                    b0 = b.x;
                    b1 = b.y;
                } else {
                    uint32_t wv = *reinterpret_cast<const uint32_t *>(sw + n * C::WS + j * 16 + t4 * 4);
                    b0 = fp4x4_to_e4m3x4(wv & 0xffffu);
                    b1 = fp4x4_to_e4m3x4(wv >> 16);
                }
#pragma unroll
                for (int i = 0; i < C::MT; i++) mma_e4m3(pp[i][t], a[i], b0, b1);
            }
            if (FP4) {
                /* promote this 32-block: per column its own weight scale */
#pragma unroll
                for (int t = 0; t < C::NT; t++) {
                    int nl = wn * C::WTN + t * 8 + t4 * 2;
                    float w0 = e8m0_to_f32(ss[nl * 4 + j]), w1 = e8m0_to_f32(ss[(nl + 1) * 4 + j]);
#pragma unroll
                    for (int i = 0; i < C::MT; i++) {
                        acc[i][t][0] = fmaf(pp[i][t][0], sxv[i][0] * w0, acc[i][t][0]);
                        acc[i][t][1] = fmaf(pp[i][t][1], sxv[i][0] * w1, acc[i][t][1]);
                        acc[i][t][2] = fmaf(pp[i][t][2], sxv[i][1] * w0, acc[i][t][2]);
                        acc[i][t][3] = fmaf(pp[i][t][3], sxv[i][1] * w1, acc[i][t][3]);
                    }
                }
            }
        }
        if (!FP4) {
            /* promote this 128-block: one weight scale for the whole tile (BN divides 128 or is 128) */
            float swv = e8m0_to_f32(__ldg(p.ws + (size_t)(n0 / 128) * KB + kb));
#pragma unroll
            for (int i = 0; i < C::MT; i++) {
                float s0 = sxv[i][0] * swv, s1 = sxv[i][1] * swv;
#pragma unroll
                for (int t = 0; t < C::NT; t++) {
                    acc[i][t][0] = fmaf(pp[i][t][0], s0, acc[i][t][0]);
                    acc[i][t][1] = fmaf(pp[i][t][1], s0, acc[i][t][1]);
                    acc[i][t][2] = fmaf(pp[i][t][2], s1, acc[i][t][2]);
                    acc[i][t][3] = fmaf(pp[i][t][3], s1, acc[i][t][3]);
                }
            }
        }
    }
    cp_async_wait<0>();

    /* ---- epilogue ---- */
    const int r_base = m0 + wm * C::WTM, c_base = n0 + wn * C::WTN;
    if (p.splits == 1) {
#pragma unroll
        for (int i = 0; i < C::MT; i++)
#pragma unroll
            for (int t = 0; t < C::NT; t++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int r = r_base + i * 16 + g + 8 * h, c = c_base + t * 8 + t4 * 2;
                    if (r < p.M)
                        *reinterpret_cast<__nv_bfloat162 *>(p.y + (size_t)r * p.N + c) =
                            __floats2bfloat162_rn(acc[i][t][2 * h], acc[i][t][2 * h + 1]);
                }
        return;
    }
#pragma unroll
    for (int i = 0; i < C::MT; i++)
#pragma unroll
        for (int t = 0; t < C::NT; t++)
#pragma unroll
            for (int h = 0; h < 2; h++) {
                int r = r_base + i * 16 + g + 8 * h, c = c_base + t * 8 + t4 * 2;
                if (r < p.M)
                    __stcg(reinterpret_cast<float2 *>(p.part + ((size_t)blockIdx.z * p.M + r) * p.N + c),
                           make_float2(acc[i][t][2 * h], acc[i][t][2 * h + 1]));
            }
    __threadfence();
    __syncthreads();
    __shared__ int is_last;
    const int tile = blockIdx.y * gridDim.x + blockIdx.x;
    if (tid == 0) is_last = atomicAdd(p.counters + tile, 1) == p.splits - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    for (int e = tid; e < BM * BN / 2; e += C::THREADS) {
        int r = m0 + e / (BN / 2), c = n0 + (e % (BN / 2)) * 2;
        if (r >= p.M) continue;
        float2 s = make_float2(0.0f, 0.0f);
        for (int z = 0; z < p.splits; z++) {
            float2 v = __ldcg(reinterpret_cast<const float2 *>(p.part + ((size_t)z * p.M + r) * p.N + c));
            s.x += v.x;
            s.y += v.y;
        }
        *reinterpret_cast<__nv_bfloat162 *>(p.y + (size_t)r * p.N + c) = __floats2bfloat162_rn(s.x, s.y);
    }
    if (tid == 0) p.counters[tile] = 0;
}

/* ==== plans and launchers ================================================================================ */

/* Tile choices (tuning lives here, apart from the kernel body). Decode: 16 token rows (one MMA row tile) x
 * 64 weight rows, 4 warps, 4 stages (51 KB smem, 4 CTAs per SM) — the weight stream is the whole cost.
 * Prefill: 128 x 128 tiles, 8 warps of 64 x 32, 3 stages (120 KB FP8). */
#define DEC_BM 16
#define DEC_BN 64
#define DEC_WM 1
#define DEC_WN 4
#define DEC_ST 4
#define PRE_BM 128
#define PRE_BN 128
#define PRE_WM 2
#define PRE_WN 4
#define PRE_ST 3
#define DECODE_MAX_M 64

static void plan_tiles(const dsv4_cuda_ctx *ctx, int M, int K, int N, int kernel, dsv4_cuda_linear_plan *pl);

extern "C" void dsv4_cuda_linear_plan_get(const dsv4_cuda_ctx *ctx, int M, int K, int N, int fp4,
                                          dsv4_cuda_linear_plan *pl) {
    if (M <= DSV4_CUDA_GEMV_MAX_M) {
        dsv4_cuda_gemv_plan g;
        dsv4_cuda_gemv_plan_get(ctx, 1, M, K, N, fp4, &g);
        pl->kernel = 2;
        pl->bm = g.nt * 8;
        pl->bn = g.rows;
        pl->splits = g.splits;
        pl->ctas = g.ctas;
        return;
    }
    if (!fp4 && ctx->fp8_gemm == DSV4_CUDA_FP8_GEMM_CUBLASLT) {
        pl->kernel = 3;
        pl->bm = pl->bn = pl->splits = pl->ctas = 0;
        return;
    }
    plan_tiles(ctx, M, K, N, M <= DECODE_MAX_M ? 0 : 1, pl);
}

static void plan_tiles(const dsv4_cuda_ctx *ctx, int M, int K, int N, int kernel, dsv4_cuda_linear_plan *pl) {
    pl->kernel = kernel;
    pl->bm = pl->kernel == 0 ? DEC_BM : PRE_BM;
    pl->bn = pl->kernel == 0 ? DEC_BN : PRE_BN;
    long tiles = (long)(N / pl->bn) * ((M + pl->bm - 1) / pl->bm);
    if (tiles < 1) tiles = 1; /* only for out-of-contract shapes (N < bn), which the launchers reject */
    int KB = K / 128;
    long resident = (long)ctx->sm_count * (pl->kernel == 0 ? 4 : 1);
    int splits = 1;
    if (tiles * 2 <= resident) {
        long want = (resident + tiles - 1) / tiles;
        /* keep >= 2 blocks per piece: the FP32 partial tile written per piece stays <= 1/8 of the weight bytes
         * read for M <= 16 (decode), and the few-tile layers that need the split are latency-bound anyway */
        int maxs = KB / 2 > 0 ? KB / 2 : 1;
        splits = (int)(want < maxs ? want : maxs);
        if (splits < 1) splits = 1;
    }
    /* fit the workspace and the ticket array */
    while (splits > 1 && ((size_t)splits * M * N * sizeof(float) > ctx->ws_bytes || tiles > DSV4_CUDA_SPLITK_COUNTERS))
        splits--;
    int kps = (KB + splits - 1) / splits;
    pl->splits = (KB + kps - 1) / kps;
    pl->ctas = (int)(tiles * pl->splits);
}

template <bool FP4, int BM, int BN, int WM, int WN, int ST>
static dsv4_status launch_lin(dsv4_cuda_ctx *ctx, const LinParams &p, int splits, dsv4_err *err) {
    using C = LinCfg<FP4, BM, BN, WM, WN, ST>;
    auto kern = linear_mma_kernel<FP4, BM, BN, WM, WN, ST>;
    DSV4_CUDA_CHECK(err, cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM));
    dim3 grid(p.N / BN, (p.M + BM - 1) / BM, splits);
    kern<<<grid, C::THREADS, C::SMEM, (cudaStream_t)ctx->stream>>>(p);
    DSV4_CUDA_CHECK_LAUNCH(err);
    return DSV4_OK;
}

static dsv4_status linear_q(dsv4_cuda_ctx *ctx, bool fp4, int kernel, const uint8_t *xq, const uint8_t *xs, int M,
                            int K, const uint8_t *w, const uint8_t *ws, int N, uint16_t *y, dsv4_err *err) {
    const char *name = fp4 ? "dsv4_cuda_linear_fp4" : "dsv4_cuda_linear_fp8";
    if (M < 1 || K < 128 || K % 128 || N < 128 || N % 128)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s: M=%d K=%d N=%d (need M>=1, K%%128==0, N%%128==0)", name, M,
                            K, N);
    if (((uintptr_t)xq | (uintptr_t)w | (uintptr_t)y) & 15)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s: xq, w and y must be 16-byte aligned", name);
    if (kernel < 0)
        kernel = M <= DSV4_CUDA_GEMV_MAX_M                               ? 2
                 : !fp4 && ctx->fp8_gemm == DSV4_CUDA_FP8_GEMM_CUBLASLT ? 3
                 : M <= DECODE_MAX_M                                    ? 0
                                                                        : 1;
    if (kernel == 3) {
        if (fp4) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s: no cuBLASLt kernel for FP4 weights", name);
        return dsv4_cuda_linear_fp8_lt(ctx, xq, xs, M, K, w, ws, N, y, err);
    }
    if (kernel == 2) {
        if (M > DSV4_CUDA_GEMV_MAX_M)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s: the GEMV kernel takes M <= %d, got %d", name,
                                DSV4_CUDA_GEMV_MAX_M, M);
        return dsv4_cuda_gemv(ctx, fp4, xq, xs, M, K, w, ws, N, y, err);
    }
    if (kernel != 0 && kernel != 1)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "%s: unknown kernel %d", name, kernel);
    dsv4_cuda_linear_plan pl;
    plan_tiles(ctx, M, K, N, kernel, &pl);
    LinParams p;
    p.xq = xq;
    p.xs = xs;
    p.w = w;
    p.ws = ws;
    p.y = y;
    p.part = (float *)ctx->ws;
    p.counters = ctx->counters;
    p.M = M;
    p.N = N;
    p.K = K;
    int KB = K / 128;
    p.kps = (KB + pl.splits - 1) / pl.splits;
    p.splits = pl.splits;
    if (pl.splits > 1 && (size_t)pl.splits * M * N * sizeof(float) > ctx->ws_bytes)
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "%s: split-K workspace too small", name);
    if (pl.kernel == 0) {
        if (fp4) return launch_lin<true, DEC_BM, DEC_BN, DEC_WM, DEC_WN, DEC_ST>(ctx, p, pl.splits, err);
        return launch_lin<false, DEC_BM, DEC_BN, DEC_WM, DEC_WN, DEC_ST>(ctx, p, pl.splits, err);
    }
    if (fp4) return launch_lin<true, PRE_BM, PRE_BN, PRE_WM, PRE_WN, PRE_ST>(ctx, p, pl.splits, err);
    return launch_lin<false, PRE_BM, PRE_BN, PRE_WM, PRE_WN, PRE_ST>(ctx, p, pl.splits, err);
}

extern "C" dsv4_status dsv4_cuda_linear_fp8(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int M, int K,
                                            const uint8_t *w, const uint8_t *ws, int N, uint16_t *y, dsv4_err *err) {
    return linear_q(ctx, false, -1, xq, xs, M, K, w, ws, N, y, err);
}

extern "C" dsv4_status dsv4_cuda_linear_fp4(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int M, int K,
                                            const uint8_t *w, const uint8_t *ws, int N, uint16_t *y, dsv4_err *err) {
    return linear_q(ctx, true, -1, xq, xs, M, K, w, ws, N, y, err);
}

extern "C" dsv4_status dsv4_cuda_linear_q_kernel(dsv4_cuda_ctx *ctx, int fp4, int kernel, const uint8_t *xq,
                                                 const uint8_t *xs, int M, int K, const uint8_t *w, const uint8_t *ws,
                                                 int N, uint16_t *y, dsv4_err *err) {
    return linear_q(ctx, fp4 != 0, kernel, xq, xs, M, K, w, ws, N, y, err);
}

/* The BF16 linear and the cuBLASLt FP8 linear live in linear_lt.cu (every cuBLASLt call, one plan per shape). */

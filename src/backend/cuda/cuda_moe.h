/* cuda_moe.h — the routed experts of one MoE layer grouped by expert on the device (spec §4.8 with the
 * linears of §3.6): the step's (row, expert slot) pairs are sorted by expert into contiguous runs cut into
 * tiles of at most `bt` rows, then one launch runs w1 and w3 of every tile (one pass reading both matrices,
 * SwiGLU and the routing weight in the epilogue), one launch act-quantizes the result, and one launch runs
 * w2 and scatters each pair's output row back to its place [row·k + slot]. Every expert selected by any row
 * of the step is read once per tile of up to `bt` of its rows (decode: once), instead of once per row.
 * Plain C; every pointer is a device pointer; launches are enqueued on ctx->stream and return at once.
 *
 * Graph capture: the host knows only shapes (pairs = rows·k, the experts held here); how many pairs each
 * expert got lives on the device. Grids are fixed by `pairs` (max_tiles tiles) and CTAs past the live tile
 * count exit at once, so a decode step that calls these can be captured once and replayed.
 *
 * Numerics (docs/NUMERICS.md "CUDA grouped MoE"): the same rounding points as the CPU reference's expert FFN
 * (forward_cpu.c swiglu_ffn): g = bf16(w1·x̂), u = bf16(w3·x̂) with the block-scaled products of cuda_linear.h
 * (exact e4m3×e2m1 products, a fresh FP32 partial per 32-block (FP4) / 128-block (FP8), C = C + P·s_x·s_w);
 * h = bf16(weight·silu(min(g, lim))·clamp(u, ±lim)) bit for bit as dsv4_cuda_swiglu; act_quant(h) bit for
 * bit as dsv4_cuda_act_quant_fp8; y = bf16(w2·ĥ). What differs from the CPU is the FP32 summation order
 * inside a block (tensor cores) and the fold of the K range (`ks` warps each fold a contiguous K slice, the
 * slices are then added in order), as in the decode GEMV. The order depends only on the weight shape, never
 * on the batch: a row's outputs are bitwise the same whatever else is in the step (batch invariance). */
#ifndef DSV4_BACKEND_CUDA_CUDA_MOE_H
#define DSV4_BACKEND_CUDA_CUDA_MOE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_CUDA_MOE_MAX_EXPERTS 512 /* experts held on one device (the sort keeps per-expert counters) */

/* One linear of every expert held here, stacked: expert e (0-based among those held) at w + e·w_stride,
 * its scales at s + e·s_stride. fp4 = 1: w [N, K/2] packed e2m1 (low nibble = even k), s [N, K/32] e8m0;
 * fp4 = 0: w [N, K] e4m3, s [N/128, K/128] e8m0. w and w_stride 16-byte aligned; FP4: s and s_stride 4-byte. */
typedef struct dsv4_cuda_moe_weights {
    const uint8_t *w;
    const uint8_t *s;
    size_t w_stride, s_stride;
    int fp4;
} dsv4_cuda_moe_weights;

/* The step's pairs sorted by expert: device views into a caller-owned workspace of
 * dsv4_cuda_moe_layout_bytes(pairs, ne) bytes (dsv4_cuda_moe_layout_init places them). The sort writes them. */
typedef struct dsv4_cuda_moe_layout {
    int32_t *n_tiles;  /* [1] live tiles of this step */
    int32_t *n_live;   /* [1] pairs whose expert is held here */
    int32_t *tiles;    /* [max_tiles][4]: {expert (0..ne-1), first sorted position, rows (1..bt), 0}, in
                          expert order; only [0, *n_tiles) written */
    int32_t *sorted;   /* [pairs] pair index p = row·k + slot at each sorted position, ascending p within an
                          expert; only [0, *n_live) written */
    int pairs;         /* rows·k */
    int ne;            /* experts held here */
    int bt;            /* rows per tile: 8, 16 or 32 */
    int max_tiles;     /* bound on the live tiles: pairs / bt + min(ne, pairs) */
} dsv4_cuda_moe_layout;

/* Workspace the layout needs for any bt (bytes, 16-byte multiple). */
size_t dsv4_cuda_moe_layout_bytes(int pairs, int ne);
/* Rows per tile for a step of `pairs` pairs over `ne` experts (8, 16 or 32: the expected rows per expert,
 * rounded down; decode gets 8). Only the tile shape depends on it, never a result. */
int dsv4_cuda_moe_tile_rows(int pairs, int ne);
/* Places the layout's views in ws (16-byte aligned, dsv4_cuda_moe_layout_bytes(pairs, ne) bytes). bt = 0
 * picks dsv4_cuda_moe_tile_rows. */
void dsv4_cuda_moe_layout_init(void *ws, int pairs, int ne, int bt, dsv4_cuda_moe_layout *lay);

/* Sorts the pairs by expert (one CTA; stable: ascending pair index within an expert). experts [pairs] holds
 * global expert ids (the router's [rows, k] output); id − e0 in [0, lay->ne) is held here, anything else
 * (another rank's expert, or −1) is skipped. y_zero [pairs, D] bf16 or NULL: when given, the rows of the
 * skipped pairs are set to zero (so that a combine that reads every slot, dsv4_glue_moe_combine, adds 0
 * for them; pass NULL when the combine skips foreign experts). ne ≤ DSV4_CUDA_MOE_MAX_EXPERTS. */
dsv4_status dsv4_cuda_moe_sort(dsv4_cuda_ctx *ctx, const int32_t *experts, int e0, const dsv4_cuda_moe_layout *lay,
                               uint16_t *y_zero, int D, dsv4_err *err);

typedef struct dsv4_cuda_moe_params {
    int k;                       /* experts per row: pair p belongs to row p / k */
    int D;                       /* hidden size: K of w1/w3, N of w2 (multiple of 128) */
    int I;                       /* expert inter size: N of w1/w3, K of w2 (multiple of 128) */
    float swiglu_limit;          /* ≤ 0: no clamps */
    const uint8_t *xq;           /* [rows, D] e4m3: act_quant of the MoE input (16-byte aligned) */
    const uint8_t *xs;           /* [rows, D/128] e8m0 */
    const float *route_w;        /* [pairs] routing weight of each pair */
    dsv4_cuda_moe_weights w1, w3, w2; /* w1, w3: [I, D] per expert (same kind and strides); w2: [D, I] */
    uint16_t *h;                 /* workspace [pairs, I] bf16: SwiGLU output in sorted order */
    uint8_t *hq;                 /* workspace [pairs, I] e4m3 (16-byte aligned) */
    uint8_t *hs;                 /* workspace [pairs, I/128] e8m0 */
    uint16_t *y;                 /* [pairs, D] bf16 out: y[p] for every pair held here; others untouched */
} dsv4_cuda_moe_params;

/* The routed experts of the pairs sorted in `lay` (dsv4_cuda_moe_sort ran before on the same stream):
 * three launches (w1+w3 with SwiGLU, act_quant of the live rows, w2 with the scatter). */
dsv4_status dsv4_cuda_moe_experts(dsv4_cuda_ctx *ctx, const dsv4_cuda_moe_layout *lay, const dsv4_cuda_moe_params *p,
                                  dsv4_err *err);

/* How the launches are cut (logs, benches): `ks` warps of a CTA split one 16-row weight tile's K range (a
 * function of K only), so a CTA covers 128/ks output features of one tile of bt pair rows. */
typedef struct dsv4_cuda_moe_plan {
    int bt, max_tiles;
    int ks13, cols13;            /* w1+w3: K split inside the CTA, output features per CTA */
    int ks2, cols2;              /* w2 */
} dsv4_cuda_moe_plan;
void dsv4_cuda_moe_plan_get(const dsv4_cuda_moe_layout *lay, int D, int I, dsv4_cuda_moe_plan *plan);

#ifdef __cplusplus
}
#endif
#endif

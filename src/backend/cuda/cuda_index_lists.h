/* cuda_index_lists.h — the index lists of the CUDA forward's sparse attention and indexer, built on the device
 * from the step's positions (dsv4_glue_step): which staged KV rows each query row attends to (window oldest
 * first, then compressed entries, spec §4.6–§4.7), how many indexer keys each row sees, and the position
 * advance at the end of a captured greedy decode step. Plain C header; kernels in kernels/index_lists.cu.
 *
 * The CPU twin is the visibility rule of forward_cpu.c attend_sequence (window positions max(0, t-win+1)..t,
 * fresh rows for positions of this step, ring records before it; (t+1)/ratio compressed entries), written in
 * the index form of these lists by the reference in tests/unit/test_cuda_glue.c. Agreement: EXACT (integers). */
#ifndef DSV4_BACKEND_CUDA_CUDA_INDEX_LISTS_H
#define DSV4_BACKEND_CUDA_CUDA_INDEX_LISTS_H

#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/cuda_step.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Attention index lists idx [rows, window + n_comp] into the staging buffer whose rows are
 * [0, rows) fresh kv, ring_base + s·window + p mod window ring, comp_base + ... compressed:
 * kind 1 (CSA): comp_base + r·n_comp + j for sel[r][j] >= 0; kind 2 (HCA): comp_base + s·n_comp + w for
 * w < (pos+1)/ratio; kind 0: n_comp = 0. Order as the CPU's: window oldest first, then compressed.
 * n_live [rows]: the live length of each list (window + min(n_comp, (pos+1)/ratio); 0 for padding); only
 * idx[r][0 : n_live[r]] is written (sparse attention's n_live bound), so the cost follows the context;
 * full = 1 writes the whole list (-1 past n_live: the capacity-sized lists, for A/B benchmarks).
 * Window positions before 0 are -1 inside the live part (sparse attention skips them). */
dsv4_status dsv4_glue_build_idx(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, int window, int ring_base, int kind,
                                int ratio, int comp_base, int n_comp, const int32_t *sel, int32_t *idx,
                                int32_t *n_live, int full, dsv4_err *err);
/* Indexer visibility per row: n_keys[r] = (pos+1)/ratio (0 for padding), key_start[r] = s·max_e. */
dsv4_status dsv4_glue_csa_meta(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, int ratio, int max_e, int32_t *n_keys,
                               int32_t *key_start, dsv4_err *err);
/* End of a greedy decode step (n sequences, one row each): hist[*ctr][i] = tok[i] = argmax[i] (while
 * *ctr < cap), pos[i]++, spos0[i]++, then (*ctr)++. */
dsv4_status dsv4_glue_advance(dsv4_cuda_ctx *ctx, const int32_t *argmax, int n, int32_t *tok, int32_t *pos,
                              int32_t *spos0, int32_t *hist, int32_t *ctr, int cap, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

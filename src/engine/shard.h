/* shard.h — which part of the model one rank of a tensor/expert-parallel group owns, following the
 * official model's own partition (spec §2.4 point 4; docs/MULTI_GPU.md):
 *
 *   split by rank (dim 0 of the weight):  embed and head (vocab rows), wq_b and attn_sink (attention
 *                                         heads), wo_a (output groups), indexer wq_b and weights_proj
 *                                         (index heads); routed experts (expert index)
 *   split by rank on dim 1 (row-parallel): wo_b (its input is the rank's groups), followed by an all-reduce
 *   replicated:                           wq_a, q_norm, wkv, kv_norm, compressors, indexer compressor,
 *                                         router (gate + bias / tid2eid), shared expert, norms, hc_*
 *
 * Every range is contiguous and rank-major: rank r owns [r*n/N, (r+1)*n/N) of each split dimension. The
 * forward loops over LOCAL counts and uses GLOBAL counts in formulas (e.g. the indexer weight scale
 * index_n_heads^-1/2). world = 1 is the unpartitioned model (every range is the whole dimension). */
#ifndef DSV4_ENGINE_SHARD_H
#define DSV4_ENGINE_SHARD_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"
#include "dsv4_config.h"
#include "model/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_shard {
    int rank, world;     /* 0 <= rank < world */
    int h0, nh;          /* attention heads [h0, h0+nh) of n_heads */
    int g0, ng;          /* output groups [g0, g0+ng) of o_groups (heads h0.. belong to exactly these) */
    int ih0, nih;        /* indexer heads [ih0, ih0+nih) of index_n_heads */
    int e0, ne;          /* routed experts [e0, e0+ne) of n_routed_experts */
    int v0, nv;          /* vocab rows [v0, v0+nv) of vocab_size (embed and head) */
} dsv4_shard;

/* Fills *s for rank of world on cfg. Fails with DSV4_ERR_CONFIG naming the first dimension that world
 * does not divide (n_heads, o_groups, index_n_heads, n_routed_experts, vocab_size), or whose per-rank
 * slice would cut an FP8 128-block (wq_b / indexer wq_b rows, wo_b columns), and DSV4_ERR_INVALID_ARG for
 * world < 1 or rank out of range. */
dsv4_status dsv4_shard_init(const dsv4_config *cfg, int rank, int world, dsv4_shard *s, dsv4_err *err);

/* The whole model (rank 0 of 1). */
void dsv4_shard_whole(const dsv4_config *cfg, dsv4_shard *s);

/* Bytes of weights resident on one rank of `world` when the model is partitioned as above (FP4 experts
 * count half a byte per parameter; scales included; the MTP block is included, partitioned like a main
 * layer). Computed from the config alone, for `dsv4 inspect --gpus`. */
uint64_t dsv4_shard_weight_bytes(const dsv4_config *cfg, int world);

/* Rows [r0, r0+n) of an FP8 linear as a view: a rank's slice of a column split (r0, n multiples of 128);
 * the whole tensor for r0 = 0, n = out. An absent linear (w NULL) is returned as is. */
static inline dsv4_fp8_linear dsv4_shard_fp8_rows(const dsv4_fp8_linear *l, int r0, int n) {
    if (!l->w) return *l;
    int sc_cols = (l->in + 127) / 128;
    return (dsv4_fp8_linear){l->w + (size_t)r0 * l->in, l->scale + (size_t)(r0 / 128) * sc_cols, n, l->in};
}

#ifdef __cplusplus
}
#endif
#endif

/* shard.c — the per-rank partition of shard.h: ranges, divisibility checks, and the per-rank weight bytes
 * that `dsv4 inspect --gpus` reports. */
#include "engine/shard.h"

#include <string.h>

#include "core/status.h"
#include "model/checkpoint.h"

void dsv4_shard_whole(const dsv4_config *c, dsv4_shard *s) {
    *s = (dsv4_shard){0, 1, 0, c->n_heads, 0, c->o_groups, 0, c->index_n_heads, 0, c->n_routed_experts,
                      0, c->vocab_size};
}

static int has_csa(const dsv4_config *c) {
    for (int l = 0; l < c->n_layers + c->n_mtp_layers && l <= DSV4_MAX_LAYERS; l++)
        if (dsv4_config_layer_kind(c, l) == DSV4_LAYER_CSA) return 1;
    return 0;
}

dsv4_status dsv4_shard_init(const dsv4_config *c, int rank, int world, dsv4_shard *s, dsv4_err *err) {
    if (world < 1 || rank < 0 || rank >= world)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "shard: rank %d of world %d", rank, world);
    struct { const char *name; int n; } dims[] = {
        {"num_attention_heads", c->n_heads}, {"o_groups", c->o_groups},
        {"index_n_heads", has_csa(c) ? c->index_n_heads : world},
        {"n_routed_experts", c->n_routed_experts}, {"vocab_size", c->vocab_size},
    };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++)
        if (dims[i].n % world != 0)
            return dsv4_err_set(err, DSV4_ERR_CONFIG, "shard: %s = %d is not divisible by %d ranks (GPUs); "
                                "the tensor-parallel split needs an equal share per rank", dims[i].name, dims[i].n,
                                world);
    int nh = c->n_heads / world, ng = c->o_groups / world, nih = c->index_n_heads / world;
    /* FP8 weights carry one scale per 128x128 tile: a rank's slice must start and end on tile edges. */
    if ((long)nh * c->head_dim % 128 != 0)
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "shard: wq_b rows per rank (%d heads x %d) are not a multiple "
                            "of the 128-row FP8 scale block", nh, c->head_dim);
    if (has_csa(c) && (long)nih * c->index_head_dim % 128 != 0)
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "shard: indexer wq_b rows per rank (%d x %d) are not a multiple "
                            "of 128", nih, c->index_head_dim);
    if ((long)ng * c->o_lora_rank % 128 != 0)
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "shard: wo_b input columns per rank (%d groups x %d) are not a "
                            "multiple of the 128-wide FP8 block", ng, c->o_lora_rank);
    *s = (dsv4_shard){rank, world, rank * nh, nh, rank * ng, ng, rank * nih, nih,
                      rank * (c->n_routed_experts / world), c->n_routed_experts / world,
                      rank * (c->vocab_size / world), c->vocab_size / world};
    return DSV4_OK;
}

/* ---- per-rank weight bytes --------------------------------------------------------------------------- */

typedef struct bytes_ctx {
    int world;
    uint64_t bytes;
} bytes_ctx;

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

static dsv4_status count_tensor(void *ctx, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape,
                                int is_mtp, int is_routed) {
    (void)is_mtp;
    bytes_ctx *b = ctx;
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (uint64_t)shape[i];
    uint64_t bytes = n * dsv4_dtype_size(dt);
    int split = is_routed || !strcmp(name, "embed.weight") || !strcmp(name, "head.weight") ||
                ends_with(name, "attn.wq_b.weight") || ends_with(name, "attn.wq_b.scale") ||
                ends_with(name, "attn.attn_sink") || ends_with(name, "attn.wo_b.weight") ||
                ends_with(name, "attn.wo_b.scale") || ends_with(name, "indexer.wq_b.weight") ||
                ends_with(name, "indexer.wq_b.scale") || ends_with(name, "indexer.weights_proj.weight");
    if (ends_with(name, "attn.wo_a.scale")) return DSV4_OK;          /* dropped: wo_a is held as BF16 */
    if (ends_with(name, "attn.wo_a.weight")) { bytes = n * 2; split = 1; }
    b->bytes += split ? bytes / (uint64_t)b->world : bytes;
    return DSV4_OK;
}

uint64_t dsv4_shard_weight_bytes(const dsv4_config *cfg, int world) {
    bytes_ctx b = {world < 1 ? 1 : world, 0};
    dsv4_checkpoint_expected_visit(cfg, count_tensor, &b);
    return b.bytes;
}

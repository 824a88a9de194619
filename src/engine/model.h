/* model.h — a loaded DeepSeek V4 model for the CPU reference backend: the open checkpoint (mmapped,
 * validated), its typed weight views, the RoPE tables of the two layer families, and the few derived
 * tensors the official model also derives at load (wo_a dequantized to BF16, spec §2.4 point 2).
 * Immutable after load; shared by every forward. */
#ifndef DSV4_ENGINE_MODEL_H
#define DSV4_ENGINE_MODEL_H

#include <stdint.h>

#include "backend/cpu/ops.h"
#include "dsv4.h"
#include "engine/shard.h"
#include "model/checkpoint.h"
#include "dsv4_config.h"
#include "model/synth_hash.h"
#include "model/weights.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_model {
    dsv4_checkpoint ckpt;           /* owned (mappings) */
    const dsv4_config *cfg;         /* view into ckpt */
    dsv4_model_weights w;           /* owned bindings (views into ckpt mappings) */
    dsv4_rope rope_swa;             /* θ = rope_theta, no YaRN (ratio-0 layers, MTP) */
    dsv4_rope rope_compressed;      /* θ = compress_rope_theta with YaRN (ratio != 0 layers) */
    uint16_t **wo_a_bf16;           /* [n_layers + n_mtp_layers] (entry n_layers: the MTP block's), each
                                       [ng*R, (H/G)*hd] bf16, owned: the rank's groups
                                       [g0, g0+ng) of shard (all G groups when world = 1) */
    dsv4_shard shard;               /* the part of the model this rank owns (whole model when world = 1) */
    dsv4_fp8_linear *wo_b_local;    /* world > 1: [n_layers] owned copies of wo_b's input columns
                                       [g0*R, (g0+ng)*R): w [D, ng*R], scale [ceil(D/128), ng*R/128]
                                       (row-split: not contiguous in the file); NULL when world = 1 */
    int synthetic;                  /* 1: built in memory by dsv4_model_create_synth (ckpt is a synth_ckpt.h one) */
    int weights_on_device_only;     /* 1: no host bytes behind the weight views (synth_ckpt.h device only):
                                       only the cuda forward can use it, generating each tensor on the device
                                       (dsv4_model_synth_locate); wo_a_bf16 entries are NULL; no MTP block */
    uint64_t synth_seed;            /* synthetic: the generator's seed */
} dsv4_model;

dsv4_status dsv4_model_load(const char *dir, dsv4_model **out, dsv4_err *err);
/* As dsv4_model_load, for rank `rank` of a tensor/expert-parallel group of `world` (1: the whole model).
 * The partition (m->shard) comes from dsv4_shard_init on the checkpoint's config, whose divisibility errors
 * are returned before anything is dequantized. Column splits stay views into the mapping (the forward
 * offsets them); only the rank's wo_a groups are dequantized and only its wo_b input columns copied. */
dsv4_status dsv4_model_load_shard(const char *dir, int rank, int world, dsv4_model **out, dsv4_err *err);
void dsv4_model_free(dsv4_model *m);

/* A random-weight model built in memory, nothing read from or written to disk (model/synth_ckpt.h), one
 * rank (world = 1). cfg: a complete config (dsv4_synth_config_preset; expert_fp4 0 or 1). device_only = 0:
 * the values are generated in host memory (an ordinary model for both backends); device_only = 1: no host
 * bytes at all, for the cuda backend only (weights generated on the device at placement; the cpu forward
 * refuses it); the MTP block is then left out (n_mtp_layers = 0). Same cfg and seed: the same values either
 * way. */
/* As dsv4_model_create_synth with device_only = 1, but the MTP block stays in the table (generated on the
 * device with the rest; for speculative decoding on a device-only model). */
dsv4_status dsv4_model_create_synth_device_mtp(const dsv4_config *cfg, uint64_t seed, dsv4_model **out,
                                               dsv4_err *err);
dsv4_status dsv4_model_create_synth(const dsv4_config *cfg, uint64_t seed, int device_only, dsv4_model **out,
                                    dsv4_err *err);

/* For a synthetic model: the fill (synth_hash.h) and first element of the weight bytes [p, p + bytes) that a
 * weight view (or a slice of one) points to. INTERNAL when p is not inside one of its tensors. */
dsv4_status dsv4_model_synth_locate(const dsv4_model *m, const void *p, size_t bytes, dsv4_synth_fill *fill,
                                    uint64_t *first_elem, dsv4_err *err);

/* Weights of block `layer`: a main layer (< n_layers) or the MTP block (== n_layers, spec §4.10). */
static inline const dsv4_layer_weights *dsv4_model_block(const dsv4_model *m, int layer) {
    return layer < m->cfg->n_layers ? &m->w.layers[layer] : &m->w.mtp->block;
}

static inline const dsv4_rope *dsv4_model_rope(const dsv4_model *m, int layer) {
    return m->cfg->compress_ratios[layer] ? &m->rope_compressed : &m->rope_swa;
}

#ifdef __cplusplus
}
#endif
#endif

/* model.h — a loaded DeepSeek V4 model for the CPU reference backend: the open checkpoint (mmapped,
 * validated), its typed weight views, the RoPE tables of the two layer families, and the few derived
 * tensors the official model also derives at load (wo_a dequantized to BF16, spec §2.4 point 2).
 * Immutable after load; shared by every forward. */
#ifndef DSV4_ENGINE_MODEL_H
#define DSV4_ENGINE_MODEL_H

#include <stdint.h>

#include "backend/cpu/ops.h"
#include "dsv4.h"
#include "model/checkpoint.h"
#include "model/config.h"
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
    uint16_t **wo_a_bf16;           /* [n_layers] each [G*R, (H/G)*hd] bf16, owned */
} dsv4_model;

dsv4_status dsv4_model_load(const char *dir, dsv4_model **out, dsv4_err *err);
void dsv4_model_free(dsv4_model *m);

static inline const dsv4_rope *dsv4_model_rope(const dsv4_model *m, int layer) {
    return m->cfg->compress_ratios[layer] ? &m->rope_compressed : &m->rope_swa;
}

#ifdef __cplusplus
}
#endif
#endif

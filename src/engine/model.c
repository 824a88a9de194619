/* model.c — loading a model for the CPU reference backend (see model.h): open + validate the checkpoint,
 * bind weight views, build the two RoPE tables, and dequantize wo_a to BF16 as the official conversion
 * does (spec §2.4 point 2: the grouped output projection runs as a BF16 GEMM). */
#include "engine/model.h"

#include <stdlib.h>
#include <string.h>

#include "core/numfmt.h"
#include "core/status.h"

void dsv4_model_free(dsv4_model *m) {
    if (!m) return;
    if (m->wo_a_bf16) {
        for (int l = 0; l < m->cfg->n_layers; l++) free(m->wo_a_bf16[l]);
        free(m->wo_a_bf16);
    }
    dsv4_model_weights_free(&m->w);
    dsv4_checkpoint_close(&m->ckpt);
    free(m);
}

/* W[o, c] = e4m3(w[o, c]) · 2^(scale[o/128, c/128] - 127), exactly representable in BF16 for every
 * weight a real checkpoint holds (3 mantissa bits times a power of two), rounded RNE otherwise. */
static uint16_t *dequant_fp8_to_bf16(const dsv4_fp8_linear *l) {
    uint16_t *out = malloc(sizeof(uint16_t) * (size_t)l->out * (size_t)l->in);
    if (!out) return NULL;
    int sc_cols = (l->in + 127) / 128;
    for (int o = 0; o < l->out; o++)
        for (int c = 0; c < l->in; c++) {
            float s = dsv4_e8m0_to_f32(l->scale[(size_t)(o / 128) * sc_cols + c / 128]);
            out[(size_t)o * l->in + c] = dsv4_f32_to_bf16(dsv4_e4m3_to_f32(l->w[(size_t)o * l->in + c]) * s);
        }
    return out;
}

dsv4_status dsv4_model_load(const char *dir, dsv4_model **out, dsv4_err *err) {
    *out = NULL;
    dsv4_model *m = calloc(1, sizeof *m);
    if (!m) return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory");
    dsv4_status st = dsv4_checkpoint_open(dir, &m->ckpt, err);
    if (st != DSV4_OK) { free(m); return st; }
    m->cfg = &m->ckpt.cfg;
    if ((st = dsv4_model_weights_bind(&m->ckpt, &m->w, err)) != DSV4_OK) {
        dsv4_checkpoint_close(&m->ckpt);
        free(m);
        return st;
    }
    const dsv4_config *c = m->cfg;
    dsv4_rope_init(&m->rope_swa, c->rope_head_dim, c->rope_theta, 0, 1.0, c->original_seq_len, c->beta_fast,
                   c->beta_slow);
    dsv4_rope_init(&m->rope_compressed, c->rope_head_dim, c->compress_rope_theta, 1, c->rope_factor,
                   c->original_seq_len, c->beta_fast, c->beta_slow);
    m->wo_a_bf16 = calloc((size_t)c->n_layers, sizeof *m->wo_a_bf16);
    if (!m->wo_a_bf16) { dsv4_model_free(m); return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory"); }
    for (int l = 0; l < c->n_layers; l++)
        if (!(m->wo_a_bf16[l] = dequant_fp8_to_bf16(&m->w.layers[l].wo_a))) {
            dsv4_model_free(m);
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory dequantizing layers.%d.attn.wo_a", l);
        }
    *out = m;
    return DSV4_OK;
}

/* model.c — loading a model for the CPU reference backend (see model.h): open + validate the checkpoint,
 * bind weight views, build the two RoPE tables, and dequantize wo_a to BF16 as the official conversion
 * does (spec §2.4 point 2: the grouped output projection runs as a BF16 GEMM). */
#include "engine/model.h"

#include <stdlib.h>
#include <string.h>

#include "core/numfmt.h"
#include "core/status.h"
#include "model/synth_ckpt.h"

void dsv4_model_free(dsv4_model *m) {
    if (!m) return;
    if (m->wo_a_bf16) {
        for (int l = 0; l < m->cfg->n_layers + m->cfg->n_mtp_layers; l++) free(m->wo_a_bf16[l]);
        free(m->wo_a_bf16);
    }
    if (m->wo_b_local) {
        for (int l = 0; l < m->cfg->n_layers; l++) free((void *)(uintptr_t)m->wo_b_local[l].w); /* owned (w+scale) */
        free(m->wo_b_local);
    }
    dsv4_model_weights_free(&m->w);
    dsv4_checkpoint_close(&m->ckpt);
    free(m);
}

/* W[o, c] = e4m3(w[o, c]) · 2^(scale[o/128, c/128] - 127), exactly representable in BF16 for every
 * weight a real checkpoint holds (3 mantissa bits times a power of two), rounded RNE otherwise. */
static uint16_t *dequant_fp8_to_bf16(const dsv4_fp8_linear *l, int o0, int n_out) {
    uint16_t *out = malloc(sizeof(uint16_t) * (size_t)n_out * (size_t)l->in);
    if (!out) return NULL;
    int sc_cols = (l->in + 127) / 128;
    for (int o = o0; o < o0 + n_out; o++)
        for (int c = 0; c < l->in; c++) {
            float s = dsv4_e8m0_to_f32(l->scale[(size_t)(o / 128) * sc_cols + c / 128]);
            out[(size_t)(o - o0) * l->in + c] = dsv4_f32_to_bf16(dsv4_e4m3_to_f32(l->w[(size_t)o * l->in + c]) * s);
        }
    return out;
}

/* Copies input columns [c0, c0+nc) of an FP8 linear (c0, nc multiples of 128) into one owned buffer:
 * w [out, nc] then scale [ceil(out/128), nc/128]. */
static int slice_fp8_columns(const dsv4_fp8_linear *l, int c0, int nc, dsv4_fp8_linear *dst) {
    int sr = (l->out + 127) / 128, sc = (l->in + 127) / 128, nsc = nc / 128;
    uint8_t *buf = malloc((size_t)l->out * nc + (size_t)sr * nsc);
    if (!buf) return -1;
    for (int o = 0; o < l->out; o++) memcpy(buf + (size_t)o * nc, l->w + (size_t)o * l->in + c0, (size_t)nc);
    uint8_t *scale = buf + (size_t)l->out * nc;
    for (int r = 0; r < sr; r++) memcpy(scale + (size_t)r * nsc, l->scale + (size_t)r * sc + c0 / 128, (size_t)nsc);
    *dst = (dsv4_fp8_linear){buf, scale, l->out, nc};
    return 0;
}

dsv4_status dsv4_model_load(const char *dir, dsv4_model **out, dsv4_err *err) {
    return dsv4_model_load_shard(dir, 0, 1, out, err);
}

/* Everything after the checkpoint is open (m->ckpt): bind the views, the shard, RoPE tables, wo_a in BF16
 * (host bytes only) and wo_b's local columns (world > 1). Frees m on failure. */
static dsv4_status finish_load(dsv4_model *m, int rank, int world, dsv4_model **out, dsv4_err *err) {
    dsv4_status st;
    m->cfg = &m->ckpt.cfg;
    if ((st = dsv4_model_weights_bind(&m->ckpt, &m->w, err)) != DSV4_OK) {
        dsv4_checkpoint_close(&m->ckpt);
        free(m);
        return st;
    }
    const dsv4_config *c = m->cfg;
    if ((st = dsv4_shard_init(c, rank, world, &m->shard, err)) != DSV4_OK) {
        dsv4_model_free(m);
        return st;
    }
    dsv4_rope_init(&m->rope_swa, c->rope_head_dim, c->rope_theta, 0, 1.0, c->original_seq_len, c->beta_fast,
                   c->beta_slow);
    dsv4_rope_init(&m->rope_compressed, c->rope_head_dim, c->compress_rope_theta, 1, c->rope_factor,
                   c->original_seq_len, c->beta_fast, c->beta_slow);
    m->wo_a_bf16 = calloc((size_t)(c->n_layers + c->n_mtp_layers), sizeof *m->wo_a_bf16);
    if (!m->wo_a_bf16) { dsv4_model_free(m); return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory"); }
    const int R = c->o_lora_rank;
    if (m->weights_on_device_only) {   /* no host bytes to dequantize: the cuda forward does it on the device */
        *out = m;
        return DSV4_OK;
    }
    for (int l = 0; l < c->n_layers; l++)
        if (!(m->wo_a_bf16[l] = dequant_fp8_to_bf16(&m->w.layers[l].wo_a, m->shard.g0 * R, m->shard.ng * R))) {
            dsv4_model_free(m);
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory dequantizing layers.%d.attn.wo_a", l);
        }
    /* The MTP block's wo_a (entry n_layers), for the draft head (spec §4.10). */
    if (m->w.mtp && !(m->wo_a_bf16[c->n_layers] = dequant_fp8_to_bf16(&m->w.mtp->block.wo_a, m->shard.g0 * R,
                                                                         m->shard.ng * R))) {
        dsv4_model_free(m);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory dequantizing mtp.0.attn.wo_a");
    }
    if (world > 1) {
        if (!(m->wo_b_local = calloc((size_t)c->n_layers, sizeof *m->wo_b_local))) {
            dsv4_model_free(m);
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory");
        }
        for (int l = 0; l < c->n_layers; l++)
            if (slice_fp8_columns(&m->w.layers[l].wo_b, m->shard.g0 * R, m->shard.ng * R, &m->wo_b_local[l])) {
                dsv4_model_free(m);
                return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory slicing layers.%d.attn.wo_b", l);
            }
    }
    *out = m;
    return DSV4_OK;
}

dsv4_status dsv4_model_load_shard(const char *dir, int rank, int world, dsv4_model **out, dsv4_err *err) {
    *out = NULL;
    dsv4_model *m = calloc(1, sizeof *m);
    if (!m) return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory");
    dsv4_status st = dsv4_checkpoint_open(dir, &m->ckpt, err);
    if (st != DSV4_OK) { free(m); return st; }
    return finish_load(m, rank, world, out, err);
}

static dsv4_status create_synth(const dsv4_config *cfg, uint64_t seed, int device_only, int keep_mtp,
                                dsv4_model **out, dsv4_err *err) {
    *out = NULL;
    dsv4_config c = *cfg;
    if (device_only && !keep_mtp) c.n_mtp_layers = 0;   /* by default no MTP block in a device-only model */
    dsv4_model *m = calloc(1, sizeof *m);
    if (!m) return dsv4_err_set(err, DSV4_ERR_NOMEM, "model: out of memory");
    dsv4_status st = dsv4_synth_checkpoint_create(&c, seed, !device_only, &m->ckpt, err);
    if (st != DSV4_OK) { free(m); return st; }
    m->synthetic = 1;
    m->weights_on_device_only = device_only != 0;
    m->synth_seed = seed;
    return finish_load(m, 0, 1, out, err);
}

dsv4_status dsv4_model_create_synth(const dsv4_config *cfg, uint64_t seed, int device_only, dsv4_model **out,
                                    dsv4_err *err) {
    return create_synth(cfg, seed, device_only, 0, out, err);
}

dsv4_status dsv4_model_create_synth_device_mtp(const dsv4_config *cfg, uint64_t seed, dsv4_model **out,
                                               dsv4_err *err) {
    return create_synth(cfg, seed, 1, 1, out, err);
}

dsv4_status dsv4_model_synth_locate(const dsv4_model *m, const void *p, size_t bytes, dsv4_synth_fill *fill,
                                    uint64_t *first_elem, dsv4_err *err) {
    if (!m->synthetic) return dsv4_err_set(err, DSV4_ERR_INTERNAL, "model: not a synthetic model");
    return dsv4_synth_checkpoint_locate(&m->ckpt, m->synth_seed, p, bytes, fill, first_elem, err);
}

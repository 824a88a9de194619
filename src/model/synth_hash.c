/* synth_hash.c — the host side of the counter-based weight generator (synth_hash.h): which value rule each
 * tensor of a DeepSeek V4 checkpoint gets, by name and dtype, and the host fill loop. The rules' magnitudes
 * are those of model/synth.c (dsv4_synth_rule_* below are shared with it), so a model generated here has
 * the same scales as a written synthetic checkpoint. Must not: depend on the order or the set of tensors
 * (a tensor's values are a function of its name, shape and the seed only). */
#include "model/synth_hash.h"

#include <math.h>
#include <string.h>

#include "core/status.h"

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k);
}

uint64_t dsv4_synth_tensor_id(const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a */
    for (; *name; name++) h = (h ^ (uint8_t)*name) * 0x100000001b3ull;
    return h;
}

double dsv4_synth_rule_linear_std(const char *name, int64_t fan_in) {
    double s = 1.0 / sqrt((double)fan_in);
    if (strstr(name, "wo_b.") || strstr(name, ".w2.")) s *= 0.05;
    return s;
}

void dsv4_synth_rule_f32(const char *name, double *std, double *mean) {
    *std = 0.01;
    *mean = 0;
    if (ends_with(name, "_fn")) *std = 0.01;
    else if (ends_with(name, "_base")) *std = 0.1;
    else if (ends_with(name, "_scale")) { *std = 0.05; *mean = 1.0; }
    else if (ends_with(name, "attn_sink")) *std = 0.1;
}

int dsv4_synth_rule_scale_e0(const char *scale_name, int64_t fan_in, int fp4) {
    double a = sqrt(3.0) * dsv4_synth_rule_linear_std(scale_name, fan_in);
    return (int)lround(log2(a / (fp4 ? 4.0 : 200.0)));
}

dsv4_status dsv4_synth_fill_for_tensor(const dsv4_config *cfg, uint64_t seed, const char *name, dsv4_dtype dt,
                                       int ndim, const int64_t *shape, dsv4_synth_fill *f, dsv4_err *err) {
    memset(f, 0, sizeof *f);
    if (ndim < 1 || ndim > 2 || shape[0] < 1 || (ndim == 2 && shape[1] < 1))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "synth: tensor %s: no rule for a %d-d shape", name, ndim);
    const int64_t cols = ndim == 2 ? shape[1] : shape[0];   /* synth.c: a 1-d tensor is one row */
    f->key = dsv4_synth_mix64(seed ^ dsv4_synth_mix64(dsv4_synth_tensor_id(name)));
    f->elem_bytes = (int32_t)dsv4_dtype_size(dt);
    switch (dt) {
    case DSV4_DTYPE_BF16:
        if (ends_with(name, "norm.weight")) {
            f->kind = DSV4_SYNTH_BF16_ONE;
        } else {
            f->kind = DSV4_SYNTH_BF16_UNIFORM;
            f->a = (float)(sqrt(3.0) * (!strcmp(name, "embed.weight") ? 1.0 : 1.0 / sqrt((double)cols)));
        }
        return DSV4_OK;
    case DSV4_DTYPE_F32: {
        double std, mean;
        dsv4_synth_rule_f32(name, &std, &mean);
        f->kind = DSV4_SYNTH_F32_UNIFORM;
        f->a = (float)(std * sqrt(3.0));
        f->mean = (float)mean;
        return DSV4_OK;
    }
    case DSV4_DTYPE_F8_E4M3:
        f->kind = DSV4_SYNTH_E4M3_ANY;
        return DSV4_OK;
    case DSV4_DTYPE_I8:
        f->kind = DSV4_SYNTH_BYTE_ANY;
        return DSV4_OK;
    case DSV4_DTYPE_F8_E8M0: {
        /* FP4 scales (routed experts of an FP4 checkpoint) are [out, in/32], FP8 ones [out/128, in/128] */
        int fp4 = strstr(name, ".ffn.experts.") != NULL && cfg->expert_fp4 != 0;
        int64_t fan_in = fp4 ? cols * 32 : cols * 128;
        f->kind = DSV4_SYNTH_E8M0_RANGE;
        f->lo = 127 + dsv4_synth_rule_scale_e0(name, fan_in, fp4);
        f->span = fp4 ? 2 : 3;
        if (f->lo < 1 || f->lo + f->span > 255)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "synth: tensor %s: scale exponent out of range", name);
        return DSV4_OK;
    }
    case DSV4_DTYPE_I64:
        if (ndim != 2 || cols > cfg->n_routed_experts || cfg->n_routed_experts < 1)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "synth: tensor %s: I64 is only tid2eid [vocab, k <= E]",
                                name);
        f->kind = DSV4_SYNTH_I64_EXPERTS;
        f->lo = (int32_t)cols;
        f->span = cfg->n_routed_experts;
        return DSV4_OK;
    default:
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "synth: tensor %s: no rule for dtype %s", name,
                            dsv4_dtype_name(dt));
    }
}

void dsv4_synth_hash_fill(const dsv4_synth_fill *f, uint64_t first, uint64_t n, void *dst) {
    uint8_t *o = dst;
    const size_t z = (size_t)f->elem_bytes;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t v = dsv4_synth_value(f, first + i);
        for (size_t b = 0; b < z; b++) o[i * z + b] = (uint8_t)(v >> (8 * b));   /* little-endian */
    }
}

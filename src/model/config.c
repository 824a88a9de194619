/* config.c — reads a Hugging Face DeepSeek V4 config.json into dsv4_config (spec §1.1) and checks it for
 * internal consistency. Owns the key mapping and the config-only rules; rules that need the weights
 * (shapes, expert dtype detection) live in model/checkpoint.c. Errors name the file and the key. */
#include "dsv4_config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsv4_files.h"
#include "core/status.h"
#include "dsv4_limits.h"

typedef struct {
    const char *path;
    json_t *root;
    dsv4_err *err;
} reader;

static json_t *lookup(const reader *r, json_t *obj, const char *key) { return obj ? json_object_get(obj, key) : NULL; }

/* Integer key; absent -> default when optional, error otherwise. Integral reals (e.g. 16.0) accepted. */
static dsv4_status get_long(const reader *r, json_t *obj, const char *key, int required, long dflt, long lo,
                            long hi, long *out) {
    json_t *v = lookup(r, obj, key);
    if (!v || json_is_null(v)) {
        if (required) return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"%s\" is missing", r->path, key);
        *out = dflt;
        return DSV4_OK;
    }
    double d;
    if (json_is_integer(v)) d = (double)json_integer_value(v);
    else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v))) d = json_real_value(v);
    else return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"%s\" must be an integer", r->path, key);
    if (d < (double)lo || d > (double)hi)
        return dsv4_err_set(r->err, DSV4_ERR_CONFIG, fabs(d) < 1e18 ? "%s: key \"%s\" = %.0f is out of range [%ld, %ld]"
                                                                    : "%s: key \"%s\" = %g is out of range [%ld, %ld]",
                            r->path, key, d, lo, hi);
    *out = (long)d;
    return DSV4_OK;
}

/* Integer key in [lo, hi]; hi is a limit of include/dsv4_limits.h for every value that sizes a loop or an
 * allocation, so products of config values never overflow (and never exceed a kernel's scratch). */
static dsv4_status get_int(const reader *r, json_t *obj, const char *key, int required, int dflt, int lo, int hi,
                           int *out) {
    long v;
    DSV4_TRY(get_long(r, obj, key, required, dflt, lo, hi, &v));
    *out = (int)v;
    return DSV4_OK;
}

static dsv4_status get_num(const reader *r, json_t *obj, const char *key, int required, double dflt,
                           double *out) {
    json_t *v = lookup(r, obj, key);
    if (!v || json_is_null(v)) {
        if (required) return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"%s\" is missing", r->path, key);
        *out = dflt;
        return DSV4_OK;
    }
    if (!json_is_number(v))
        return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"%s\" must be a number", r->path, key);
    *out = json_number_value(v);
    if (!isfinite(*out))
        return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"%s\" is not finite", r->path, key);
    return DSV4_OK;
}

/* Optional string key that, when present, must equal want (a feature this engine implements). */
static dsv4_status expect_str(const reader *r, json_t *obj, const char *key, const char *want) {
    json_t *v = lookup(r, obj, key);
    if (!v || json_is_null(v)) return DSV4_OK;
    if (!json_is_string(v) || strcmp(json_string_value(v), want))
        return dsv4_err_set(r->err, DSV4_ERR_UNSUPPORTED, "%s: key \"%s\": only \"%s\" is supported", r->path, key,
                            want);
    return DSV4_OK;
}

static dsv4_status parse(const reader *r, dsv4_config *c) {
    json_t *o = r->root;
    memset(c, 0, sizeof *c);
    DSV4_TRY(get_int(r, o, "vocab_size", 1, 0, 1, DSV4_LIMIT_VOCAB, &c->vocab_size));
    DSV4_TRY(get_int(r, o, "hidden_size", 1, 0, 1, DSV4_LIMIT_DIM, &c->dim));
    DSV4_TRY(get_int(r, o, "num_hidden_layers", 1, 0, 1, 1 << 30, &c->n_layers));
    DSV4_TRY(get_int(r, o, "num_attention_heads", 1, 0, 1, DSV4_LIMIT_HEADS, &c->n_heads));
    DSV4_TRY(get_int(r, o, "head_dim", 1, 0, 1, DSV4_LIMIT_HEAD_DIM, &c->head_dim));
    DSV4_TRY(get_int(r, o, "qk_rope_head_dim", 1, 0, 2, DSV4_LIMIT_ROPE_DIM, &c->rope_head_dim));
    DSV4_TRY(get_int(r, o, "q_lora_rank", 1, 0, 1, DSV4_LIMIT_DIM, &c->q_lora_rank));
    DSV4_TRY(get_int(r, o, "o_groups", 1, 0, 1, DSV4_LIMIT_HEADS, &c->o_groups));
    DSV4_TRY(get_int(r, o, "o_lora_rank", 1, 0, 1, DSV4_LIMIT_DIM, &c->o_lora_rank));
    DSV4_TRY(get_int(r, o, "sliding_window", 1, 0, 1, DSV4_LIMIT_WINDOW, &c->window_size));
    DSV4_TRY(get_num(r, o, "rope_theta", 1, 0, &c->rope_theta));
    DSV4_TRY(get_num(r, o, "compress_rope_theta", 1, 0, &c->compress_rope_theta));
    DSV4_TRY(get_int(r, o, "index_n_heads", 1, 0, 1, DSV4_LIMIT_HEADS, &c->index_n_heads));
    DSV4_TRY(get_int(r, o, "index_head_dim", 1, 0, 1, DSV4_LIMIT_HEAD_DIM, &c->index_head_dim));
    DSV4_TRY(get_int(r, o, "index_topk", 1, 0, 1, DSV4_LIMIT_TOPK, &c->index_topk));
    DSV4_TRY(get_int(r, o, "n_routed_experts", 1, 0, 1, DSV4_LIMIT_EXPERTS, &c->n_routed_experts));
    DSV4_TRY(get_int(r, o, "num_experts_per_tok", 1, 0, 1, DSV4_LIMIT_ACTIVE_EXPERTS, &c->n_activated_experts));
    DSV4_TRY(get_int(r, o, "n_shared_experts", 1, 0, 1, DSV4_LIMIT_SHARED_EXPERTS, &c->n_shared_experts));
    DSV4_TRY(get_int(r, o, "moe_intermediate_size", 1, 0, 1, DSV4_LIMIT_DIM, &c->moe_inter_dim));
    DSV4_TRY(get_int(r, o, "num_hash_layers", 0, 0, 0, DSV4_MAX_LAYERS, &c->n_hash_layers));
    DSV4_TRY(get_num(r, o, "routed_scaling_factor", 1, 0, &c->route_scale));
    DSV4_TRY(get_num(r, o, "swiglu_limit", 1, 0, &c->swiglu_limit));
    DSV4_TRY(get_int(r, o, "hc_mult", 1, 0, 1, DSV4_LIMIT_HC, &c->hc_mult));
    DSV4_TRY(get_int(r, o, "hc_sinkhorn_iters", 1, 0, 1, DSV4_LIMIT_SINKHORN_ITERS, &c->hc_sinkhorn_iters));
    DSV4_TRY(get_num(r, o, "hc_eps", 0, 1e-6, &c->hc_eps));
    DSV4_TRY(get_num(r, o, "rms_norm_eps", 0, 1e-6, &c->norm_eps));
    DSV4_TRY(get_int(r, o, "num_nextn_predict_layers", 0, 1, 0, 1 << 30, &c->n_mtp_layers));
    DSV4_TRY(get_int(r, o, "bos_token_id", 0, 0, 0, DSV4_LIMIT_VOCAB, &c->bos_token_id));
    DSV4_TRY(get_int(r, o, "eos_token_id", 0, 1, 0, DSV4_LIMIT_VOCAB, &c->eos_token_id));
    DSV4_TRY(get_long(r, o, "max_position_embeddings", 0, 1048576, 1, DSV4_LIMIT_POSITIONS, &c->max_position_embeddings));

    json_t *rs = lookup(r, o, "rope_scaling");
    if (!json_is_object(rs))
        return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"rope_scaling\" must be an object", r->path);
    DSV4_TRY(expect_str(r, rs, "type", "yarn"));
    DSV4_TRY(get_num(r, rs, "factor", 1, 0, &c->rope_factor));
    DSV4_TRY(get_num(r, rs, "original_max_position_embeddings", 1, 0, &c->original_seq_len));
    DSV4_TRY(get_num(r, rs, "beta_fast", 1, 0, &c->beta_fast));
    DSV4_TRY(get_num(r, rs, "beta_slow", 1, 0, &c->beta_slow));

    DSV4_TRY(expect_str(r, o, "scoring_func", "sqrtsoftplus"));
    DSV4_TRY(expect_str(r, o, "model_type", "deepseek_v4"));
    long kvh;
    DSV4_TRY(get_long(r, o, "num_key_value_heads", 0, 1, 1, 1, &kvh));
    json_t *tie = lookup(r, o, "tie_word_embeddings");
    if (json_is_true(tie))
        return dsv4_err_set(r->err, DSV4_ERR_UNSUPPORTED, "%s: key \"tie_word_embeddings\": only false is supported",
                            r->path);
    json_t *q = lookup(r, o, "quantization_config");
    if (q && !json_is_null(q)) {
        if (!json_is_object(q))
            return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"quantization_config\" must be an object", r->path);
        DSV4_TRY(expect_str(r, q, "quant_method", "fp8"));
        DSV4_TRY(expect_str(r, q, "fmt", "e4m3"));
        DSV4_TRY(expect_str(r, q, "scale_fmt", "ue8m0"));
        json_t *bs = lookup(r, q, "weight_block_size");
        if (bs && !(json_is_array(bs) && json_array_size(bs) == 2 &&
                    json_integer_value(json_array_get(bs, 0)) == 128 &&
                    json_integer_value(json_array_get(bs, 1)) == 128))
            return dsv4_err_set(r->err, DSV4_ERR_UNSUPPORTED,
                                "%s: key \"quantization_config.weight_block_size\": only [128, 128] is supported",
                                r->path);
    }

    /* expert_dtype: "fp4" / "fp8"; absent (initial release) -> -1, decided from the weights. */
    json_t *ed = lookup(r, o, "expert_dtype");
    if (!ed || json_is_null(ed)) c->expert_fp4 = -1;
    else if (json_is_string(ed) && !strcmp(json_string_value(ed), "fp4")) c->expert_fp4 = 1;
    else if (json_is_string(ed) && !strcmp(json_string_value(ed), "fp8")) c->expert_fp4 = 0;
    else return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"expert_dtype\" must be \"fp4\" or \"fp8\"", r->path);

    if (c->n_layers > DSV4_MAX_LAYERS)
        return dsv4_err_set(r->err, DSV4_ERR_UNSUPPORTED, "%s: key \"num_hidden_layers\" = %d exceeds the maximum %d",
                            r->path, c->n_layers, DSV4_MAX_LAYERS);
    if (c->n_mtp_layers > 1)
        return dsv4_err_set(r->err, DSV4_ERR_UNSUPPORTED,
                            "%s: key \"num_nextn_predict_layers\" = %d: at most 1 MTP block is supported", r->path,
                            c->n_mtp_layers);
    json_t *cr = lookup(r, o, "compress_ratios");
    if (!json_is_array(cr))
        return dsv4_err_set(r->err, DSV4_ERR_CONFIG, "%s: key \"compress_ratios\" must be an array", r->path);
    size_t want = (size_t)c->n_layers + (size_t)c->n_mtp_layers;
    if (json_array_size(cr) != want)
        return dsv4_err_set(r->err, DSV4_ERR_CONFIG,
                            "%s: key \"compress_ratios\" has %zu entries, expected num_hidden_layers + "
                            "num_nextn_predict_layers = %zu",
                            r->path, json_array_size(cr), want);
    for (size_t i = 0; i < want; i++) {
        json_t *v = json_array_get(cr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > DSV4_LIMIT_COMPRESS_RATIO)
            return dsv4_err_set(r->err, DSV4_ERR_CONFIG,
                                "%s: key \"compress_ratios\"[%zu] must be an integer in [0, %d]", r->path, i,
                                DSV4_LIMIT_COMPRESS_RATIO);
        c->compress_ratios[i] = (int)json_integer_value(v);
    }
    return DSV4_OK;
}

/* Rules that involve several keys. */
static dsv4_status check(const char *path, const dsv4_config *c, dsv4_err *err) {
#define BAD(...) return dsv4_err_set(err, DSV4_ERR_CONFIG, __VA_ARGS__)
    if (c->rope_head_dim >= c->head_dim || c->rope_head_dim % 2)
        BAD("%s: key \"qk_rope_head_dim\" = %d must be even and below head_dim = %d", path, c->rope_head_dim,
            c->head_dim);
    if ((c->head_dim - c->rope_head_dim) % 64)
        BAD("%s: key \"head_dim\": head_dim - qk_rope_head_dim = %d must be a multiple of 64 (KV FP8 blocks)", path,
            c->head_dim - c->rope_head_dim);
    if (c->n_heads % c->o_groups)
        BAD("%s: key \"o_groups\" = %d must divide num_attention_heads = %d", path, c->o_groups, c->n_heads);
    /* Input widths of FP8 linears are quantized per 128-wide activation block. */
    if (c->dim % 128) BAD("%s: key \"hidden_size\" = %d must be a multiple of 128", path, c->dim);
    if (c->q_lora_rank % 128) BAD("%s: key \"q_lora_rank\" = %d must be a multiple of 128", path, c->q_lora_rank);
    if ((c->n_heads / c->o_groups) * c->head_dim % 128)
        BAD("%s: key \"head_dim\": (num_attention_heads/o_groups)*head_dim must be a multiple of 128", path);
    if (c->o_groups * c->o_lora_rank % 128)
        BAD("%s: key \"o_lora_rank\": o_groups*o_lora_rank must be a multiple of 128", path);
    if (c->moe_inter_dim % 128)
        BAD("%s: key \"moe_intermediate_size\" = %d must be a multiple of 128", path, c->moe_inter_dim);
    if (c->index_head_dim % 64 || c->index_head_dim <= c->rope_head_dim)
        BAD("%s: key \"index_head_dim\" = %d must be a multiple of 64 above qk_rope_head_dim", path,
            c->index_head_dim);
    if (c->index_head_dim != DSV4_INDEX_HEAD_DIM)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "%s: key \"index_head_dim\" = %d: only %d is implemented", path,
                            c->index_head_dim, DSV4_INDEX_HEAD_DIM);
    if (c->n_activated_experts > c->n_routed_experts)
        BAD("%s: key \"num_experts_per_tok\" = %d exceeds n_routed_experts = %d", path, c->n_activated_experts,
            c->n_routed_experts);
    if (c->n_hash_layers > c->n_layers)
        BAD("%s: key \"num_hash_layers\" = %d exceeds num_hidden_layers = %d", path, c->n_hash_layers, c->n_layers);
    if (c->bos_token_id >= c->vocab_size || c->eos_token_id >= c->vocab_size)
        BAD("%s: key \"bos_token_id\"/\"eos_token_id\" outside vocab_size = %d", path, c->vocab_size);
    if (!(c->rope_theta > 0) || !(c->compress_rope_theta > 0) || !(c->rope_factor >= 1) ||
        !(c->original_seq_len > 0))
        BAD("%s: key \"rope_theta\"/\"compress_rope_theta\"/\"rope_scaling\": values must be positive (factor >= 1)",
            path);
    if (!(c->norm_eps > 0) || !(c->hc_eps > 0)) BAD("%s: key \"rms_norm_eps\"/\"hc_eps\" must be positive", path);
    if (!(c->route_scale > 0)) BAD("%s: key \"routed_scaling_factor\" must be positive", path);
    if (!(c->swiglu_limit > 0)) BAD("%s: key \"swiglu_limit\" must be positive", path);
    for (int i = 0; i < c->n_layers + c->n_mtp_layers; i++)
        if (c->compress_ratios[i] == 1)
            BAD("%s: key \"compress_ratios\"[%d] = 1 is not a compression ratio (0 = none, 4 = CSA, >1 = HCA)",
                path, i);
#undef BAD
    return DSV4_OK;
}

dsv4_status dsv4_config_load(const char *path, dsv4_config *cfg, dsv4_err *err) {
    char *text;
    size_t len;
    DSV4_TRY(dsv4_file_read_all(path, DSV4_LIMIT_CONFIG_BYTES, &text, &len, err));
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root) {
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: bad JSON: %s (line %d, column %d)", path, je.text, je.line,
                            je.column);
    }
    if (!json_is_object(root)) {
        json_decref(root);
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: bad JSON: top level is not an object", path);
    }
    reader r = {path, root, err};
    dsv4_status s = parse(&r, cfg);
    json_decref(root);
    if (s != DSV4_OK) return s;
    return check(path, cfg, err);
}

dsv4_layer_kind dsv4_config_layer_kind(const dsv4_config *cfg, int layer) {
    int r = cfg->compress_ratios[layer];
    if (r == 0) return DSV4_LAYER_SWA;
    if (r == 4) return DSV4_LAYER_CSA;
    return DSV4_LAYER_HCA;
}

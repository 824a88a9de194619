/* synth.c — writes random-weight DeepSeek V4 checkpoints in the released format (see dsv4_synth.h). Owns the
 * presets, the value distributions per tensor kind and the safetensors/index/config writers. Must not
 * decide the tensor inventory itself: that comes from dsv4_checkpoint_expected_visit (model/checkpoint.c).
 *
 * Value generation is streamed row by row into a 1 MiB write buffer, so memory stays small even for
 * Flash-sized tensors. Every tensor has its own RNG stream seeded from (seed, name); block scales are a
 * hash of (stream seed, block index), so a weight and its scale agree without storing anything. */
#include "dsv4_synth.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/numfmt.h"
#include "dsv4_files.h"
#include "core/status.h"
#include "dsv4_limits.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "model/synth_hash.h"

/* ================================================================================================
 * Presets
 * ================================================================================================ */

void dsv4_synth_options_default(dsv4_synth_options *o) {
    memset(o, 0, sizeof *o);
    o->shard_max_bytes = 4ull << 30;
}

static void common_defaults(dsv4_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 129280;
    c->head_dim = 512;
    c->rope_head_dim = 64;
    c->window_size = 128;
    c->rope_theta = 10000;
    c->compress_rope_theta = 160000;
    c->rope_factor = 16;
    c->original_seq_len = 65536;
    c->beta_fast = 32;
    c->beta_slow = 1;
    c->index_head_dim = 128;
    c->n_shared_experts = 1;
    c->route_scale = 1.5;
    c->swiglu_limit = 10;
    c->hc_mult = 4;
    c->hc_sinkhorn_iters = 20;
    c->hc_eps = 1e-6;
    c->norm_eps = 1e-6;
    c->n_mtp_layers = 1;
    c->bos_token_id = 0;
    c->eos_token_id = 1;
    c->max_position_embeddings = 1048576;
    c->expert_fp4 = 1;
}

dsv4_status dsv4_synth_config_preset(const char *name, int n_layers, int n_experts, dsv4_config *cfg,
                                     dsv4_err *err) {
    dsv4_config c;
    common_defaults(&c);
    if (!strcmp(name, "tiny")) {
        c.dim = 256;
        c.n_layers = n_layers > 0 ? n_layers : 4;
        c.n_heads = 4;
        c.q_lora_rank = 128;
        c.o_groups = 2;
        c.o_lora_rank = 128;
        c.index_n_heads = 4;
        c.index_topk = 8;
        c.n_routed_experts = n_experts > 0 ? n_experts : 8;
        c.n_activated_experts = 2;
        c.moe_inter_dim = 128;
        c.n_hash_layers = 1;
        /* layer 0 SWA (hash-routed), then CSA(4) / HCA(16) alternating; MTP SWA */
        for (int i = 0; i < c.n_layers; i++) c.compress_ratios[i] = i == 0 ? 0 : (i % 2 ? 4 : 16);
    } else if (!strcmp(name, "flash-shapes")) {
        c.dim = 4096;
        c.n_layers = n_layers > 0 ? n_layers : 4;
        c.n_heads = 64;
        c.q_lora_rank = 1024;
        c.o_groups = 8;
        c.o_lora_rank = 1024;
        c.index_n_heads = 64;
        c.index_topk = 512;
        c.n_routed_experts = n_experts > 0 ? n_experts : 16;
        c.n_activated_experts = 6;
        c.moe_inter_dim = 2048;
        c.n_hash_layers = c.n_layers < 3 ? c.n_layers : 3;
        for (int i = 0; i < c.n_layers; i++) c.compress_ratios[i] = i < 2 ? 0 : (i % 2 ? 128 : 4);
    } else {
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "unknown synthetic preset '%s' (tiny, flash-shapes)", name);
    }
    if (c.n_layers > DSV4_MAX_LAYERS)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "n_layers %d exceeds %d", c.n_layers, DSV4_MAX_LAYERS);
    if (c.n_routed_experts < c.n_activated_experts)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "n_experts %d < experts per token %d", c.n_routed_experts,
                            c.n_activated_experts);
    c.compress_ratios[c.n_layers] = 0;  /* MTP block: SWA */
    *cfg = c;
    return DSV4_OK;
}

/* ================================================================================================
 * config.json
 * ================================================================================================ */

/* Integral values are written as JSON integers, as in the released file (e.g. "rope_theta": 10000). */
static json_t *num(double v) {
    if (v == floor(v) && fabs(v) < 9007199254740992.0) return json_integer((json_int_t)v);
    return json_real(v);
}

static dsv4_status write_config(const dsv4_config *c, const char *path, dsv4_err *err) {
    json_t *o = json_object(), *a;
    json_object_set_new(o, "architectures", a = json_array());
    json_array_append_new(a, json_string("DeepseekV4ForCausalLM"));
    json_object_set_new(o, "attention_bias", json_false());
    json_object_set_new(o, "attention_dropout", json_real(0.0));
    json_object_set_new(o, "bos_token_id", json_integer(c->bos_token_id));
    json_object_set_new(o, "eos_token_id", json_integer(c->eos_token_id));
    json_object_set_new(o, "hc_eps", json_real(c->hc_eps));
    json_object_set_new(o, "hc_mult", json_integer(c->hc_mult));
    json_object_set_new(o, "hc_sinkhorn_iters", json_integer(c->hc_sinkhorn_iters));
    json_object_set_new(o, "head_dim", json_integer(c->head_dim));
    json_object_set_new(o, "hidden_act", json_string("silu"));
    json_object_set_new(o, "hidden_size", json_integer(c->dim));
    json_object_set_new(o, "index_head_dim", json_integer(c->index_head_dim));
    json_object_set_new(o, "index_n_heads", json_integer(c->index_n_heads));
    json_object_set_new(o, "index_topk", json_integer(c->index_topk));
    json_object_set_new(o, "initializer_range", json_real(0.02));
    json_object_set_new(o, "max_position_embeddings", json_integer(c->max_position_embeddings));
    json_object_set_new(o, "model_type", json_string("deepseek_v4"));
    json_object_set_new(o, "moe_intermediate_size", json_integer(c->moe_inter_dim));
    json_object_set_new(o, "n_routed_experts", json_integer(c->n_routed_experts));
    json_object_set_new(o, "n_shared_experts", json_integer(c->n_shared_experts));
    json_object_set_new(o, "norm_topk_prob", json_true());
    json_object_set_new(o, "num_attention_heads", json_integer(c->n_heads));
    json_object_set_new(o, "num_experts_per_tok", json_integer(c->n_activated_experts));
    json_object_set_new(o, "num_hidden_layers", json_integer(c->n_layers));
    json_object_set_new(o, "num_hash_layers", json_integer(c->n_hash_layers));
    json_object_set_new(o, "num_key_value_heads", json_integer(1));
    json_object_set_new(o, "num_nextn_predict_layers", json_integer(c->n_mtp_layers));
    json_object_set_new(o, "o_groups", json_integer(c->o_groups));
    json_object_set_new(o, "o_lora_rank", json_integer(c->o_lora_rank));
    json_object_set_new(o, "q_lora_rank", json_integer(c->q_lora_rank));
    json_object_set_new(o, "qk_rope_head_dim", json_integer(c->rope_head_dim));
    json_t *q = json_object();
    json_object_set_new(q, "activation_scheme", json_string("dynamic"));
    json_object_set_new(q, "fmt", json_string("e4m3"));
    json_object_set_new(q, "quant_method", json_string("fp8"));
    json_object_set_new(q, "scale_fmt", json_string("ue8m0"));
    json_object_set_new(q, "weight_block_size", a = json_array());
    json_array_append_new(a, json_integer(128));
    json_array_append_new(a, json_integer(128));
    json_object_set_new(o, "quantization_config", q);
    json_object_set_new(o, "rms_norm_eps", json_real(c->norm_eps));
    json_t *rs = json_object();
    json_object_set_new(rs, "beta_fast", num(c->beta_fast));
    json_object_set_new(rs, "beta_slow", num(c->beta_slow));
    json_object_set_new(rs, "factor", num(c->rope_factor));
    json_object_set_new(rs, "original_max_position_embeddings", num(c->original_seq_len));
    json_object_set_new(rs, "type", json_string("yarn"));
    json_object_set_new(o, "rope_scaling", rs);
    json_object_set_new(o, "rope_theta", num(c->rope_theta));
    json_object_set_new(o, "routed_scaling_factor", num(c->route_scale));
    json_object_set_new(o, "scoring_func", json_string("sqrtsoftplus"));
    json_object_set_new(o, "sliding_window", json_integer(c->window_size));
    json_object_set_new(o, "swiglu_limit", json_real(c->swiglu_limit));
    json_object_set_new(o, "tie_word_embeddings", json_false());
    json_object_set_new(o, "topk_method", json_string("noaux_tc"));
    json_object_set_new(o, "torch_dtype", json_string("bfloat16"));
    json_object_set_new(o, "transformers_version", json_string("4.57.1"));
    json_object_set_new(o, "use_cache", json_true());
    json_object_set_new(o, "vocab_size", json_integer(c->vocab_size));
    json_object_set_new(o, "compress_rope_theta", num(c->compress_rope_theta));
    json_object_set_new(o, "compress_ratios", a = json_array());
    for (int i = 0; i < c->n_layers + c->n_mtp_layers; i++) json_array_append_new(a, json_integer(c->compress_ratios[i]));
    json_object_set_new(o, "expert_dtype", json_string(c->expert_fp4 == 0 ? "fp8" : "fp4"));
    json_object_set_new(o, "dsv4_synthetic", json_true());
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (!text) return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", path);
    dsv4_status st = dsv4_file_write_atomic(path, text, strlen(text), err);
    free(text);
    return st;
}

/* ================================================================================================
 * Tensor list
 * ================================================================================================ */

typedef struct spec {
    char *name;              /* owned */
    dsv4_dtype dt;
    int ndim;
    int64_t shape[2];
    int is_mtp, is_routed;
    uint64_t nbytes;
    int shard;
    uint64_t offset;         /* within the shard's data section */
} spec;

typedef struct spec_list {
    spec *v;
    size_t n, cap;
} spec_list;

static dsv4_status collect(void *ctx, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape, int is_mtp,
                           int is_routed) {
    spec_list *L = ctx;
    if (ndim < 1 || ndim > 2) return DSV4_ERR_INTERNAL;
    if (L->n == L->cap) {
        size_t nc = L->cap ? L->cap * 2 : 256;
        spec *nv = realloc(L->v, nc * sizeof *nv);
        if (!nv) return DSV4_ERR_NOMEM;
        L->v = nv;
        L->cap = nc;
    }
    spec *s = &L->v[L->n];
    memset(s, 0, sizeof *s);
    s->name = strdup(name);
    if (!s->name) return DSV4_ERR_NOMEM;
    s->dt = dt;
    s->ndim = ndim;
    s->shape[0] = shape[0];
    s->shape[1] = ndim == 2 ? shape[1] : 1;
    s->is_mtp = is_mtp;
    s->is_routed = is_routed;
    s->nbytes = (uint64_t)s->shape[0] * (uint64_t)s->shape[1] * dsv4_dtype_size(dt);
    L->n++;
    return DSV4_OK;
}

static void spec_list_free(spec_list *L) {
    for (size_t i = 0; i < L->n; i++) free(L->v[i].name);
    free(L->v);
}

/* ================================================================================================
 * Value distributions
 * ================================================================================================ */

static uint64_t mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t hash_str(const char *s) {  /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

typedef struct rng { uint64_t s; } rng;
static inline uint64_t rng_next(rng *r) { return mix64(r->s++); }
static inline float rng_sym(rng *r) { /* uniform in [-1, 1) */
    return (float)((int64_t)(rng_next(r) >> 40) - (1 << 23)) * 0x1p-23f;
}

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k);
}

/* Fixed code tables: FP8 blocks hold values u * 200 / 2^off (off = 0..2, u uniform in [-1, 1)), FP4 blocks
 * u * 4 / 2^off (off = 0..1), so that the block scale 2^e varies between blocks while the decoded weight
 * keeps the target spread. Indexed by 12 (FP8) or 8 (FP4) random bits. */
static uint8_t fp8_tab[3][4096], fp4_tab[2][256];
static void init_tables(void) {
    static int done = 0;
    if (done) return;
    for (int off = 0; off < 3; off++)
        for (int u = 0; u < 4096; u++)
            fp8_tab[off][u] = dsv4_f32_to_e4m3((float)(((u + 0.5) / 4096.0 * 2 - 1) * 200.0 / (1 << off)));
    for (int off = 0; off < 2; off++)
        for (int u = 0; u < 256; u++)
            fp4_tab[off][u] = dsv4_f32_to_e2m1((float)(((u + 0.5) / 256.0 * 2 - 1) * 4.0 / (1 << off)));
    done = 1;
}

/* Code-table offset of block b of a quantized weight; the block scale is 2^(e0 + off) with e0 from the
 * weight's spread a = sqrt(3) * std (dsv4_synth_rule_scale_e0: FP8 values up to 200 * 2^e0 ~ a, FP4 up to
 * 4 * 2^e0 ~ a). */
static int block_off(uint64_t tseed, uint64_t b, int n) { return (int)(mix64(tseed ^ (b * 0xD1B54A32D192ED03ull)) % (uint64_t)n); }

/* Generates row r of tensor s (cols elements, or bytes for 1-byte types) into out. The weight tensors
 * named X.weight and their scales X.scale share the stream seed of X.weight. */
typedef struct gen_ctx {
    const dsv4_config *cfg;
    uint64_t seed;
} gen_ctx;

static uint64_t tensor_seed(uint64_t seed, const char *name) {
    char base[256];
    snprintf(base, sizeof base, "%s", name);
    if (ends_with(base, ".scale")) strcpy(base + strlen(base) - 6, ".weight");
    return mix64(seed ^ hash_str(base));
}

static void gen_row(const gen_ctx *g, const spec *s, int64_t r, rng *R, uint64_t tseed, uint8_t *out) {
    const int64_t cols = s->shape[1];
    const char *n = s->name;
    switch (s->dt) {
    case DSV4_DTYPE_BF16: {
        uint16_t *o = (uint16_t *)out;
        if (ends_with(n, "norm.weight")) {
            for (int64_t j = 0; j < cols; j++) o[j] = dsv4_f32_to_bf16(1.0f);
            break;
        }
        double std = !strcmp(n, "embed.weight") ? 1.0 : 1.0 / sqrt((double)cols);
        float a = (float)(std * sqrt(3.0));
        for (int64_t j = 0; j < cols; j++) o[j] = dsv4_f32_to_bf16(a * rng_sym(R));
        break;
    }
    case DSV4_DTYPE_F32: {
        float *o = (float *)out;
        int64_t m = cols;
        double std, mean;
        dsv4_synth_rule_f32(n, &std, &mean);   /* shared with the on-device generator (synth_hash.h) */
        for (int64_t j = 0; j < m; j++) o[j] = (float)(mean + std * sqrt(3.0) * rng_sym(R));
        break;
    }
    case DSV4_DTYPE_I64: {  /* tid2eid row: k distinct expert ids (partial Fisher-Yates) */
        int64_t *o = (int64_t *)out;
        int E = g->cfg->n_routed_experts, perm[1024];
        for (int e = 0; e < E; e++) perm[e] = e;
        for (int64_t j = 0; j < cols; j++) {
            int k = (int)j + (int)(rng_next(R) % (uint64_t)(E - (int)j));
            int t = perm[j]; perm[j] = perm[k]; perm[k] = t;
            o[j] = perm[j];
        }
        break;
    }
    case DSV4_DTYPE_F8_E4M3: {  /* [out, in] with 128x128 blocks */
        int64_t nbc = (cols + 127) / 128;
        uint64_t bits = 0;
        int left = 0;
        for (int64_t j = 0; j < cols; j++) {
            if (left == 0) { bits = rng_next(R); left = 5; }
            int off = block_off(tseed, (uint64_t)(r / 128) * (uint64_t)nbc + (uint64_t)(j / 128), 3);
            out[j] = fp8_tab[off][bits & 4095];
            bits >>= 12;
            left--;
        }
        break;
    }
    case DSV4_DTYPE_I8: {       /* packed FP4 [out, in/2], per-32 blocks along in */
        int64_t nb32 = cols * 2 / 32;
        for (int64_t j = 0; j < cols; j++) {
            uint64_t x = rng_next(R);
            int off = block_off(tseed, (uint64_t)r * (uint64_t)nb32 + (uint64_t)(j / 16), 2);
            out[j] = (uint8_t)(fp4_tab[off][x & 255] | (fp4_tab[off][(x >> 8) & 255] << 4));
        }
        break;
    }
    case DSV4_DTYPE_F8_E8M0: {  /* scale of X.weight: FP8 [out/128, in/128] or FP4 [out, in/32] */
        int fp4 = s->is_routed && g->cfg->expert_fp4 != 0;
        /* fan_in of the weight from the scale's shape */
        int64_t fan_in = fp4 ? cols * 32 : cols * 128;
        if (fp4) {
            int e0 = dsv4_synth_rule_scale_e0(n, fan_in, 1);
            for (int64_t j = 0; j < cols; j++)
                out[j] = (uint8_t)(127 + e0 + block_off(tseed, (uint64_t)r * (uint64_t)cols + (uint64_t)j, 2));
        } else {
            /* the real fan_in may not be a multiple of 128; the loader's shapes give ceil(in/128) */
            int e0 = dsv4_synth_rule_scale_e0(n, fan_in, 0);
            for (int64_t j = 0; j < cols; j++)
                out[j] = (uint8_t)(127 + e0 + block_off(tseed, (uint64_t)r * (uint64_t)cols + (uint64_t)j, 3));
        }
        break;
    }
    default:
        memset(out, 0, (size_t)(cols * (int64_t)dsv4_dtype_size(s->dt)));
    }
}

/* ================================================================================================
 * safetensors shards
 * ================================================================================================ */

static int align_rank(dsv4_dtype dt) {  /* I64, F32, BF16, then the 1-byte types: keeps every tensor aligned */
    size_t z = dsv4_dtype_size(dt);
    return z >= 8 ? 0 : z == 4 ? 1 : z == 2 ? 2 : 3;
}

typedef struct writer {
    FILE *f;
    const char *path;
    uint8_t *buf;
    size_t n, cap;
    dsv4_err *err;
} writer;

static dsv4_status wflush(writer *w) {
    if (w->n && fwrite(w->buf, 1, w->n, w->f) != w->n)
        return dsv4_err_set(w->err, DSV4_ERR_IO, "%s: write failed: %s", w->path, strerror(errno));
    w->n = 0;
    return DSV4_OK;
}

static dsv4_status write_tensor(writer *w, const gen_ctx *g, const spec *s) {
    /* 1-D tensors are one row of shape[0] elements */
    int64_t rows = s->ndim == 1 ? 1 : s->shape[0];
    size_t row_bytes = (size_t)(s->ndim == 1 ? s->shape[0] : s->shape[1]) * dsv4_dtype_size(s->dt);
    spec s1 = *s;
    if (s->ndim == 1) { s1.shape[1] = s->shape[0]; }
    uint64_t tseed = tensor_seed(g->seed, s->name);
    rng R = {mix64(tseed ^ 0x5151)};
    for (int64_t r = 0; r < rows; r++) {
        if (w->n + row_bytes > w->cap) {
            DSV4_TRY(wflush(w));
            if (row_bytes > w->cap) {
                uint8_t *nb = realloc(w->buf, row_bytes);
                if (!nb) return dsv4_err_set(w->err, DSV4_ERR_NOMEM, "row buffer of %zu bytes", row_bytes);
                w->buf = nb;
                w->cap = row_bytes;
            }
        }
        gen_row(g, &s1, r, &R, tseed, w->buf + w->n);
        w->n += row_bytes;
    }
    return DSV4_OK;
}

static int cmp_shard_order(const void *a, const void *b) {
    const spec *x = *(const spec *const *)a, *y = *(const spec *const *)b;
    int ra = align_rank(x->dt), rb = align_rank(y->dt);
    if (ra != rb) return ra - rb;
    return strcmp(x->name, y->name);
}

/* Flushes, fsyncs and closes f (open on the temporary file tmp), then renames tmp over path when st is OK;
 * removes tmp otherwise. Returns the first failure. */
static dsv4_status finish_temp(FILE *f, const char *tmp, const char *path, dsv4_status st, dsv4_err *err) {
    if (st == DSV4_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        st = dsv4_err_set(err, DSV4_ERR_IO, "%s: write failed: %s", tmp, strerror(errno));
    if (fclose(f) != 0 && st == DSV4_OK) st = dsv4_err_set(err, DSV4_ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (st == DSV4_OK && rename(tmp, path) != 0)
        st = dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot rename into place: %s", path, strerror(errno));
    if (st != DSV4_OK) unlink(tmp);
    return st;
}

static dsv4_status write_shard(const char *path, spec **members, size_t n, const gen_ctx *g, dsv4_err *err) {
    qsort(members, n, sizeof *members, cmp_shard_order);
    json_t *h = json_object(), *meta = json_object();
    json_object_set_new(meta, "format", json_string("pt"));
    json_object_set_new(h, "__metadata__", meta);
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        spec *s = members[i];
        s->offset = off;
        json_t *t = json_object(), *sh = json_array(), *of = json_array();
        json_object_set_new(t, "dtype", json_string(dsv4_dtype_name(s->dt)));
        for (int d = 0; d < s->ndim; d++) json_array_append_new(sh, json_integer(s->shape[d]));
        json_object_set_new(t, "shape", sh);
        json_array_append_new(of, json_integer((json_int_t)off));
        json_array_append_new(of, json_integer((json_int_t)(off + s->nbytes)));
        json_object_set_new(t, "data_offsets", of);
        json_object_set_new(h, s->name, t);
        off += s->nbytes;
    }
    char *hs = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    if (!hs) return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: header", path);
    size_t hl = strlen(hs), padded = (hl + 7) & ~(size_t)7;  /* data starts 8-aligned */
    writer w = {0};
    w.path = path;
    w.err = err;
    w.cap = 1u << 20;
    w.buf = malloc(w.cap);
    /* Written under a temporary name and renamed over path at the end: a reader that has the old shard
     * mapped keeps its pages (rewriting in place would truncate them under it: SIGBUS). */
    char tmp[4200];
    int fd = -1;
    dsv4_status st = DSV4_OK;
    if (!w.buf) {
        st = dsv4_err_set(err, DSV4_ERR_NOMEM, "write buffer");
        goto done;
    }
    if ((st = dsv4_file_create_temp(path, tmp, sizeof tmp, &fd, err)) != DSV4_OK) goto done;
    if (!(w.f = fdopen(fd, "wb"))) {
        st = dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        close(fd);
        unlink(tmp);
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    if (fwrite(len8, 1, 8, w.f) != 8 || fwrite(hs, 1, hl, w.f) != hl) {
        st = dsv4_err_set(err, DSV4_ERR_IO, "%s: write failed: %s", path, strerror(errno));
        goto done;
    }
    for (size_t i = hl; i < padded; i++) fputc(' ', w.f);
    for (size_t i = 0; i < n && st == DSV4_OK; i++) st = write_tensor(&w, g, members[i]);
    if (st == DSV4_OK) st = wflush(&w);
done:
    if (w.f) st = finish_temp(w.f, tmp, path, st, err);
    free(w.buf);
    free(hs);
    return st;
}

/* Copies the regular file src (bounded: a tokenizer.json) to dst atomically. */
static dsv4_status copy_file(const char *src, const char *dst, dsv4_err *err) {
    char *data;
    size_t len;
    DSV4_TRY(dsv4_file_read_all(src, DSV4_LIMIT_TOKENIZER_BYTES, &data, &len, err));
    dsv4_status st = dsv4_file_write_atomic(dst, data, len, err);
    free(data);
    return st;
}

/* ================================================================================================
 * Entry point
 * ================================================================================================ */

dsv4_status dsv4_synth_write(const dsv4_config *cfg, const char *dir, uint64_t seed,
                             const dsv4_synth_options *opt, dsv4_err *err) {
    dsv4_synth_options dflt;
    if (!opt) {
        dsv4_synth_options_default(&dflt);
        opt = &dflt;
    }
    if (cfg->n_routed_experts > 1024)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "synth supports at most 1024 experts");
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    init_tables();
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    DSV4_TRY(write_config(cfg, path, err));

    spec_list L = {0};
    spec **members = NULL;
    json_t *idx = NULL;
    dsv4_status st = dsv4_checkpoint_expected_visit(cfg, collect, &L);
    if (st != DSV4_OK) {
        spec_list_free(&L);
        return dsv4_err_set(err, st, "synth: cannot list the tensors of this config (%s)", dsv4_status_name(st));
    }
    /* shard assignment in inventory order; MTP in its own last shard */
    uint64_t max = opt->shard_max_bytes ? opt->shard_max_bytes : (4ull << 30);
    int shard = 0, n_shards;
    uint64_t cur = 0, total = 0;
    int cur_mtp = 0;
    for (size_t i = 0; i < L.n; i++) {
        spec *s = &L.v[i];
        int start_new = cur > 0 && (cur + s->nbytes > max || (s->is_mtp && !cur_mtp));
        if (start_new) { shard++; cur = 0; }
        if (s->is_mtp) cur_mtp = 1;
        s->shard = shard;
        cur += s->nbytes;
        total += s->nbytes;
    }
    n_shards = shard + 1;
    members = malloc(L.n * sizeof *members);
    if (!members) { st = dsv4_err_set(err, DSV4_ERR_NOMEM, "synth"); goto out; }
    gen_ctx g = {cfg, seed};
    idx = json_object();
    json_t *meta = json_object(), *wm = json_object();
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    json_object_set_new(idx, "metadata", meta);
    json_object_set_new(idx, "weight_map", wm);
    for (int sh = 0; sh < n_shards && st == DSV4_OK; sh++) {
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", sh + 1, n_shards);
        snprintf(path, sizeof path, "%s/%s", dir, fname);
        size_t n = 0;
        uint64_t bytes = 0;
        for (size_t i = 0; i < L.n; i++)
            if (L.v[i].shard == sh) {
                members[n++] = &L.v[i];
                bytes += L.v[i].nbytes;
                json_object_set_new(wm, L.v[i].name, json_string(fname));
            }
        if (opt->verbose) fprintf(stderr, "synth: writing %s (%zu tensors, %.1f MB)\n", path, n, bytes / 1e6);
        st = write_shard(path, members, n, &g, err);
    }
    if (st == DSV4_OK) {
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        char *text = json_dumps(idx, JSON_INDENT(2) | JSON_SORT_KEYS);
        st = text ? dsv4_file_write_atomic(path, text, strlen(text), err)
                  : dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", path);
        free(text);
    }
    if (st == DSV4_OK && opt->tokenizer_json) {
        snprintf(path, sizeof path, "%s/tokenizer.json", dir);
        st = copy_file(opt->tokenizer_json, path, err);
    }
out:
    json_decref(idx);
    free(members);
    spec_list_free(&L);
    return st;
}

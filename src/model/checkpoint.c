/* checkpoint.c — opens a DeepSeek V4 checkpoint directory (see checkpoint.h). Owns: shard discovery,
 * the weight_map consistency rules, the name-sorted index and the "expected tensor" inventory of spec
 * §2.3 that both validation and the parameter statistics are computed from. Must not: bind typed views
 * (model/weights.c does), or leave files mapped after a failed open. */
#include "model/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dsv4_files.h"
#include "core/status.h"
#include "model/contents.h"
#include "dsv4_limits.h"

/* ================================================================================================
 * Expected tensor inventory (spec §2.3)
 * ================================================================================================ */

typedef struct {
    const dsv4_config *cfg;
    dsv4_checkpoint_visit_fn fn;
    void *ctx;
    int is_mtp;
    char name[320];
} visitor;

static dsv4_status emit(visitor *v, const char *prefix, const char *suffix, dsv4_dtype dt, int ndim, int64_t d0,
                        int64_t d1, int routed) {
    int64_t shape[2] = {d0, d1};
    snprintf(v->name, sizeof v->name, "%s%s", prefix, suffix);
    return v->fn(v->ctx, v->name, dt, ndim, shape, v->is_mtp, routed);
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* FP8 block linear "<p><m>.weight" [out, in] + "<p><m>.scale" [ceil(out/128), ceil(in/128)]. */
static dsv4_status emit_fp8(visitor *v, const char *p, const char *m, int64_t out, int64_t in, int routed) {
    char pre[256];
    snprintf(pre, sizeof pre, "%s%s", p, m);
    DSV4_TRY(emit(v, pre, ".weight", DSV4_DTYPE_F8_E4M3, 2, out, in, routed));
    return emit(v, pre, ".scale", DSV4_DTYPE_F8_E8M0, 2, cdiv(out, 128), cdiv(in, 128), routed);
}

static dsv4_status emit_expert(visitor *v, const char *p, const char *m, int64_t out, int64_t in) {
    if (v->cfg->expert_fp4 == 0) return emit_fp8(v, p, m, out, in, 1);
    char pre[256];
    snprintf(pre, sizeof pre, "%s%s", p, m);
    DSV4_TRY(emit(v, pre, ".weight", DSV4_DTYPE_I8, 2, out, in / 2, 1));
    return emit(v, pre, ".scale", DSV4_DTYPE_F8_E8M0, 2, out, in / 32, 1);
}

static dsv4_status emit_hc(visitor *v, const char *p, const char *which, int64_t mix, int64_t n_scale) {
    const dsv4_config *c = v->cfg;
    char pre[256];
    snprintf(pre, sizeof pre, "%s%s", p, which);
    DSV4_TRY(emit(v, pre, "_fn", DSV4_DTYPE_F32, 2, mix, (int64_t)c->hc_mult * c->dim, 0));
    DSV4_TRY(emit(v, pre, "_base", DSV4_DTYPE_F32, 1, mix, 0, 0));
    return emit(v, pre, "_scale", DSV4_DTYPE_F32, 1, n_scale, 0, 0);
}

static dsv4_status emit_compressor(visitor *v, const char *p, int64_t ratio, int64_t d) {
    const dsv4_config *c = v->cfg;
    int64_t coff = ratio == 4 ? 2 : 1;
    DSV4_TRY(emit(v, p, "wkv.weight", DSV4_DTYPE_BF16, 2, coff * d, c->dim, 0));
    DSV4_TRY(emit(v, p, "wgate.weight", DSV4_DTYPE_BF16, 2, coff * d, c->dim, 0));
    DSV4_TRY(emit(v, p, "ape", DSV4_DTYPE_F32, 2, ratio, coff * d, 0));
    return emit(v, p, "norm.weight", DSV4_DTYPE_BF16, 1, d, 0, 0);
}

/* One block (main layer `layer` or the MTP block) with prefix p. */
static dsv4_status emit_block(visitor *v, const char *p, int layer, int hash) {
    const dsv4_config *c = v->cfg;
    int64_t D = c->dim, H = c->n_heads, hd = c->head_dim, QL = c->q_lora_rank, G = c->o_groups;
    int64_t R = c->o_lora_rank, E = c->n_routed_experts, I = c->moe_inter_dim;
    int64_t Is = (int64_t)c->n_shared_experts * I, mix = (2 + (int64_t)c->hc_mult) * c->hc_mult;
    int ratio = c->compress_ratios[layer];
    char q[192];
    DSV4_TRY(emit(v, p, "attn_norm.weight", DSV4_DTYPE_BF16, 1, D, 0, 0));
    DSV4_TRY(emit(v, p, "ffn_norm.weight", DSV4_DTYPE_BF16, 1, D, 0, 0));
    DSV4_TRY(emit_hc(v, p, "hc_attn", mix, 3));
    DSV4_TRY(emit_hc(v, p, "hc_ffn", mix, 3));
    DSV4_TRY(emit_fp8(v, p, "attn.wq_a", QL, D, 0));
    DSV4_TRY(emit(v, p, "attn.q_norm.weight", DSV4_DTYPE_BF16, 1, QL, 0, 0));
    DSV4_TRY(emit_fp8(v, p, "attn.wq_b", H * hd, QL, 0));
    DSV4_TRY(emit_fp8(v, p, "attn.wkv", hd, D, 0));
    DSV4_TRY(emit(v, p, "attn.kv_norm.weight", DSV4_DTYPE_BF16, 1, hd, 0, 0));
    DSV4_TRY(emit_fp8(v, p, "attn.wo_a", G * R, (H / G) * hd, 0));
    DSV4_TRY(emit_fp8(v, p, "attn.wo_b", D, G * R, 0));
    DSV4_TRY(emit(v, p, "attn.attn_sink", DSV4_DTYPE_F32, 1, H, 0, 0));
    if (ratio != 0) {
        snprintf(q, sizeof q, "%sattn.compressor.", p);
        DSV4_TRY(emit_compressor(v, q, ratio, hd));
    }
    if (ratio == 4) {
        int64_t nI = c->index_n_heads, dI = c->index_head_dim;
        DSV4_TRY(emit_fp8(v, p, "attn.indexer.wq_b", nI * dI, QL, 0));
        DSV4_TRY(emit(v, p, "attn.indexer.weights_proj.weight", DSV4_DTYPE_BF16, 2, nI, D, 0));
        snprintf(q, sizeof q, "%sattn.indexer.compressor.", p);
        DSV4_TRY(emit_compressor(v, q, 4, dI));
    }
    DSV4_TRY(emit(v, p, "ffn.gate.weight", DSV4_DTYPE_BF16, 2, E, D, 0));
    if (hash) DSV4_TRY(emit(v, p, "ffn.gate.tid2eid", DSV4_DTYPE_I64, 2, c->vocab_size, c->n_activated_experts, 0));
    else DSV4_TRY(emit(v, p, "ffn.gate.bias", DSV4_DTYPE_F32, 1, E, 0, 0));
    for (int64_t e = 0; e < E; e++) {
        snprintf(q, sizeof q, "%sffn.experts.%lld.", p, (long long)e);
        DSV4_TRY(emit_expert(v, q, "w1", I, D));
        DSV4_TRY(emit_expert(v, q, "w2", D, I));
        DSV4_TRY(emit_expert(v, q, "w3", I, D));
    }
    DSV4_TRY(emit_fp8(v, p, "ffn.shared_experts.w1", Is, D, 0));
    DSV4_TRY(emit_fp8(v, p, "ffn.shared_experts.w2", D, Is, 0));
    return emit_fp8(v, p, "ffn.shared_experts.w3", Is, D, 0);
}

dsv4_status dsv4_checkpoint_expected_visit(const dsv4_config *cfg, dsv4_checkpoint_visit_fn fn, void *ctx) {
    visitor v = {.cfg = cfg, .fn = fn, .ctx = ctx};
    int64_t D = cfg->dim, hc = cfg->hc_mult;
    char p[64];
    DSV4_TRY(emit(&v, "", "embed.weight", DSV4_DTYPE_BF16, 2, cfg->vocab_size, D, 0));
    for (int l = 0; l < cfg->n_layers; l++) {
        snprintf(p, sizeof p, "layers.%d.", l);
        DSV4_TRY(emit_block(&v, p, l, l < cfg->n_hash_layers));
    }
    DSV4_TRY(emit(&v, "", "norm.weight", DSV4_DTYPE_BF16, 1, D, 0, 0));
    DSV4_TRY(emit(&v, "", "head.weight", DSV4_DTYPE_BF16, 2, cfg->vocab_size, D, 0));
    DSV4_TRY(emit_hc(&v, "", "hc_head", hc, 1));
    v.is_mtp = 1;
    for (int m = 0; m < cfg->n_mtp_layers; m++) {
        snprintf(p, sizeof p, "mtp.%d.", m);
        DSV4_TRY(emit_block(&v, p, cfg->n_layers + m, 0));
        DSV4_TRY(emit_fp8(&v, p, "e_proj", D, D, 0));
        DSV4_TRY(emit_fp8(&v, p, "h_proj", D, D, 0));
        DSV4_TRY(emit(&v, p, "enorm.weight", DSV4_DTYPE_BF16, 1, D, 0, 0));
        DSV4_TRY(emit(&v, p, "hnorm.weight", DSV4_DTYPE_BF16, 1, D, 0, 0));
        DSV4_TRY(emit(&v, p, "norm.weight", DSV4_DTYPE_BF16, 1, D, 0, 0));
        DSV4_TRY(emit_hc(&v, p, "hc_head", hc, 1));
    }
    return DSV4_OK;
}

/* ================================================================================================
 * Statistics
 * ================================================================================================ */

static dsv4_status stats_visit(void *ctx, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape,
                               int is_mtp, int is_routed) {
    dsv4_checkpoint_stats *st = ctx;
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (uint64_t)shape[i];
    uint64_t bytes = n * dsv4_dtype_size(dt);
    /* Scales are not parameters; packed FP4 holds two per byte. */
    int is_scale = dt == DSV4_DTYPE_F8_E8M0;
    uint64_t params = is_scale ? 0 : (dt == DSV4_DTYPE_I8 ? 2 * n : n);
    st->n_tensors++;
    st->bytes_total += bytes;
    st->bytes_by_dtype[dt] += bytes;
    st->params_by_dtype[dt] += params;
    st->params_total += params;
    if (is_mtp) st->params_mtp += params;
    else if (is_routed) st->params_routed += params;
    (void)name;
    return DSV4_OK;
}

void dsv4_checkpoint_stats_compute(const dsv4_config *cfg, dsv4_checkpoint_stats *st) {
    dsv4_config c = *cfg;
    if (c.expert_fp4 < 0) c.expert_fp4 = 1;
    memset(st, 0, sizeof *st);
    dsv4_checkpoint_expected_visit(&c, stats_visit, st);
    uint64_t E = (uint64_t)c.n_routed_experts, k = (uint64_t)c.n_activated_experts;
    st->params_active = st->params_total - st->params_mtp - st->params_routed / E * (E - k);
}

/* ================================================================================================
 * Index and lookup
 * ================================================================================================ */

static int entry_cmp(const void *a, const void *b) {
    return strcmp(((const dsv4_ckpt_entry *)a)->t->name, ((const dsv4_ckpt_entry *)b)->t->name);
}

static long find_entry(const dsv4_checkpoint *ck, const char *name) {
    size_t lo = 0, hi = ck->n_index;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(ck->index[mid].t->name, name);
        if (c == 0) return (long)mid;
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return -1;
}

const dsv4_st_tensor *dsv4_checkpoint_tensor_find(const dsv4_checkpoint *ck, const char *name) {
    long i = find_entry(ck, name);
    return i < 0 ? NULL : ck->index[i].t;
}

static dsv4_status build_index(dsv4_checkpoint *ck, dsv4_err *err) {
    size_t n = 0;
    for (int f = 0; f < ck->n_files; f++) n += ck->files[f].n_tensors;
    ck->index = calloc(n ? n : 1, sizeof *ck->index);
    if (!ck->index) return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory for the tensor index", ck->dir);
    for (int f = 0; f < ck->n_files; f++)
        for (size_t i = 0; i < ck->files[f].n_tensors; i++)
            ck->index[ck->n_index++] = (dsv4_ckpt_entry){&ck->files[f].tensors[i], f};
    qsort(ck->index, ck->n_index, sizeof *ck->index, entry_cmp);
    for (size_t i = 1; i < ck->n_index; i++)
        if (!strcmp(ck->index[i].t->name, ck->index[i - 1].t->name))
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s appears in both %s and %s", ck->dir,
                                ck->index[i].t->name, ck->files[ck->index[i - 1].file].path,
                                ck->files[ck->index[i].file].path);
    return DSV4_OK;
}

/* ================================================================================================
 * Validation
 * ================================================================================================ */

typedef struct {
    const dsv4_checkpoint *ck;
    unsigned char *seen;   /* [n_index] */
    dsv4_err *err;
} validator;

static dsv4_status validate_visit(void *ctx, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape,
                                  int is_mtp, int is_routed) {
    validator *v = ctx;
    char want[160], got[160];
    dsv4_st_describe(dt, ndim, shape, want, sizeof want);
    long i = find_entry(v->ck, name);
    if (i < 0)
        return dsv4_err_set(v->err, DSV4_ERR_CONFIG, "%s: tensor %s: missing (expected %s)", v->ck->dir, name, want);
    const dsv4_st_tensor *t = v->ck->index[i].t;
    int same = t->dtype == dt && t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        dsv4_st_describe(t->dtype, t->ndim, t->shape, got, sizeof got);
        return dsv4_err_set(v->err, DSV4_ERR_CONFIG, "%s: tensor %s: expected %s, got %s",
                            v->ck->files[v->ck->index[i].file].path, name, want, got);
    }
    v->seen[i] = 1;
    (void)is_mtp;
    (void)is_routed;
    return DSV4_OK;
}

dsv4_status dsv4_checkpoint_validate(const dsv4_checkpoint *ck, dsv4_err *err) {
    validator v = {ck, calloc(ck->n_index ? ck->n_index : 1, 1), err};
    if (!v.seen) return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", ck->dir);
    dsv4_status s = dsv4_checkpoint_expected_visit(&ck->cfg, validate_visit, &v);
    for (size_t i = 0; s == DSV4_OK && i < ck->n_index; i++)
        if (!v.seen[i])
            s = dsv4_err_set(err, DSV4_ERR_CONFIG, "%s: tensor %s: unexpected (not implied by config.json)",
                             ck->files[ck->index[i].file].path, ck->index[i].t->name);
    free(v.seen);
    return s;
}

/* ================================================================================================
 * Opening
 * ================================================================================================ */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Opens files names[0..n) (relative to ck->dir) into ck->files. */
static dsv4_status open_files(dsv4_checkpoint *ck, char **names, int n, dsv4_err *err) {
    ck->files = calloc((size_t)(n ? n : 1), sizeof *ck->files);
    if (!ck->files) return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", ck->dir);
    for (int i = 0; i < n; i++) {
        char *p = path_join(ck->dir, names[i]);
        if (!p) return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", ck->dir);
        dsv4_status s = dsv4_st_file_open(p, &ck->files[i], err);
        free(p);
        if (s != DSV4_OK) return s;
        ck->n_files++;
    }
    return DSV4_OK;
}

static int str_cmp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_names(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Every *.safetensors file of the directory, sorted by name. */
static dsv4_status list_shards(const char *dir, char ***out, int *n_out, dsv4_err *err) {
    DIR *d = opendir(dir);
    if (!d) return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *de;
    dsv4_status s = DSV4_OK;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        if (len <= 12 || strcmp(de->d_name + len - 12, ".safetensors")) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, (size_t)cap * sizeof *names);
            if (!nn) { s = DSV4_ERR_NOMEM; break; }
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) { s = DSV4_ERR_NOMEM; break; }
        n++;
    }
    closedir(d);
    if (s != DSV4_OK) {
        free_names(names, n);
        return dsv4_err_set(err, s, "%s: out of memory listing shards", dir);
    }
    if (n == 0) {
        free(names);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: no model.safetensors.index.json and no *.safetensors file", dir);
    }
    qsort(names, (size_t)n, sizeof *names, str_cmp);
    *out = names;
    *n_out = n;
    return DSV4_OK;
}

/* Reads model.safetensors.index.json: opens every shard it names and checks that the weight_map and the
 * shards' headers agree exactly (each mapped name is in its file; each file tensor is mapped there). */
static dsv4_status open_indexed(dsv4_checkpoint *ck, const char *index_path, dsv4_err *err) {
    char *text;
    size_t len;
    DSV4_TRY(dsv4_file_read_all(index_path, DSV4_LIMIT_INDEX_BYTES, &text, &len, err));
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!root)
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: bad JSON: %s (line %d, column %d)", index_path, je.text,
                            je.line, je.column);
    dsv4_status s = DSV4_OK;
    char **names = NULL;
    int n = 0;
    json_t *wm = json_is_object(root) ? json_object_get(root, "weight_map") : NULL;
    if (!json_is_object(wm)) {
        s = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: key \"weight_map\" is missing or not an object", index_path);
        goto done;
    }
    names = calloc(json_object_size(wm) + 1, sizeof *names);
    if (!names) { s = dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", index_path); goto done; }
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        const char *f = json_string_value(val);
        if (!f || !f[0] || strchr(f, '/') || !strcmp(f, "..")) {
            s = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: weight_map[\"%s\"] must be a plain file name", index_path, key);
            goto done;
        }
        int known = 0;
        for (int i = 0; i < n && !known; i++) known = !strcmp(names[i], f);
        if (known) continue;
        if (!(names[n] = strdup(f))) { s = dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", index_path); goto done; }
        n++;
    }
    if (n == 0) { s = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: weight_map is empty", index_path); goto done; }
    qsort(names, (size_t)n, sizeof *names, str_cmp);
    if ((s = open_files(ck, names, n, err)) != DSV4_OK) goto done;
    if ((s = build_index(ck, err)) != DSV4_OK) goto done;
    json_object_foreach(wm, key, val) {
        long i = find_entry(ck, key);
        if (i < 0) {
            s = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s is mapped to %s but is not in it", index_path, key,
                             json_string_value(val));
            goto done;
        }
        const char *fp = ck->files[ck->index[i].file].path, *base = strrchr(fp, '/');
        base = base ? base + 1 : fp;
        if (strcmp(base, json_string_value(val))) {
            s = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s is mapped to %s but is in %s", index_path, key,
                             json_string_value(val), base);
            goto done;
        }
    }
    for (size_t i = 0; i < ck->n_index; i++)
        if (!json_object_get(wm, ck->index[i].t->name)) {
            s = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s is not in the weight_map of %s",
                             ck->files[ck->index[i].file].path, ck->index[i].t->name, index_path);
            goto done;
        }
done:
    free_names(names, n);
    json_decref(root);
    return s;
}

/* Initial-release configs have no "expert_dtype": the routed expert weight dtype decides. */
static void detect_expert_dtype(dsv4_checkpoint *ck) {
    if (ck->cfg.expert_fp4 >= 0) return;
    const dsv4_st_tensor *t = dsv4_checkpoint_tensor_find(ck, "layers.0.ffn.experts.0.w1.weight");
    ck->cfg.expert_fp4 = !(t && t->dtype == DSV4_DTYPE_F8_E4M3);
}

static dsv4_status open_impl(const char *dir, dsv4_checkpoint *ck, dsv4_err *err) {
    if (!(ck->dir = strdup(dir))) return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    char *cfg_path = path_join(dir, "config.json");
    if (!cfg_path) return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    dsv4_status s = dsv4_config_load(cfg_path, &ck->cfg, err);
    free(cfg_path);
    if (s != DSV4_OK) return s;
    char *index_path = path_join(dir, "model.safetensors.index.json");
    char *single = path_join(dir, "model.safetensors");
    if (!index_path || !single) {
        free(index_path);
        free(single);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    }
    if (file_exists(index_path)) {
        s = open_indexed(ck, index_path, err);
    } else if (file_exists(single)) {
        char *one = "model.safetensors";
        s = open_files(ck, &one, 1, err);
        if (s == DSV4_OK) s = build_index(ck, err);
    } else {
        char **names = NULL;
        int n = 0;
        s = list_shards(dir, &names, &n, err);
        if (s == DSV4_OK) {
            s = open_files(ck, names, n, err);
            free_names(names, n);
        }
        if (s == DSV4_OK) s = build_index(ck, err);
    }
    free(index_path);
    free(single);
    if (s != DSV4_OK) return s;
    detect_expert_dtype(ck);
    DSV4_TRY(dsv4_checkpoint_validate(ck, err));
    DSV4_TRY(dsv4_checkpoint_validate_contents(ck, err));
    dsv4_checkpoint_stats_compute(&ck->cfg, &ck->stats);
    return DSV4_OK;
}

dsv4_status dsv4_checkpoint_finish_in_memory(dsv4_checkpoint *ck, dsv4_err *err) {
    dsv4_status s = build_index(ck, err);
    if (s == DSV4_OK) s = dsv4_checkpoint_validate(ck, err);
    if (s != DSV4_OK) {
        dsv4_checkpoint_close(ck);
        return s;
    }
    dsv4_checkpoint_stats_compute(&ck->cfg, &ck->stats);
    return DSV4_OK;
}

dsv4_status dsv4_checkpoint_open(const char *dir, dsv4_checkpoint *ck, dsv4_err *err) {
    memset(ck, 0, sizeof *ck);
    dsv4_status s = open_impl(dir, ck, err);
    if (s != DSV4_OK) dsv4_checkpoint_close(ck);
    return s;
}

void dsv4_checkpoint_close(dsv4_checkpoint *ck) {
    if (!ck) return;
    for (int i = 0; i < ck->n_files; i++) dsv4_st_file_close(&ck->files[i]);
    free(ck->files);
    free(ck->index);
    free(ck->dir);
    memset(ck, 0, sizeof *ck);
}

/* test_loader.c — tests of the checkpoint loader: config.json parsing (tiny and real configs),
 * safetensors header parsing on memory buffers, opening + validating + binding the committed tiny
 * checkpoints (tests/data/tiny-*), and for every kind of broken checkpoint a mutated copy in a temp dir
 * (unchanged files are symlinks) that must fail cleanly with a message naming the problem.
 * Run from the repository root (tests/run_tests.sh does). */
#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsv4_npy.h"
#include "core/numfmt.h"
#include "model/checkpoint.h"
#include "dsv4_config.h"
#include "model/safetensors.h"
#include "model/weights.h"
#include "test_util.h"

#define TINY_FLASH "tests/data/tiny-flash"
#define TINY_PRO "tests/data/tiny-pro"

static const char *real_config(const char *which) {
    static char buf[PATH_MAX];
    const char *dirs[] = {"tests/data/configs", "../shared/testdata/configs", "/work/shared/testdata/configs"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) {
        snprintf(buf, sizeof buf, "%s/deepseek-v4-%s.config.json", dirs[i], which);
        if (access(buf, R_OK) == 0) return buf;
    }
    return NULL;
}

/* ================================================================================================
 * Config
 * ================================================================================================ */

static void test_config_tiny_flash(void) {
    dsv4_config c;
    dsv4_err err = {{0}};
    dsv4_status s = dsv4_config_load(TINY_FLASH "/config.json", &c, &err);
    CHECK(s == DSV4_OK, "%s", err.msg);
    if (s) return;
    CHECK(c.dim == 256 && c.n_layers == 4 && c.n_mtp_layers == 1, "dims %d %d %d", c.dim, c.n_layers, c.n_mtp_layers);
    CHECK(c.n_heads == 4 && c.head_dim == 512 && c.rope_head_dim == 64, "heads");
    CHECK(c.q_lora_rank == 128 && c.o_groups == 2 && c.o_lora_rank == 128, "lora");
    CHECK(c.n_routed_experts == 8 && c.n_activated_experts == 2 && c.moe_inter_dim == 128, "moe");
    CHECK(c.vocab_size == 512 && c.index_n_heads == 4 && c.index_head_dim == 128 && c.index_topk == 4, "idx");
    CHECK(c.window_size == 128 && c.n_hash_layers == 2 && c.expert_fp4 == 1, "misc");
    int want[5] = {0, 4, 16, 4, 0};
    for (int i = 0; i < 5; i++) CHECK(c.compress_ratios[i] == want[i], "ratio %d", i);
    CHECK(dsv4_config_layer_kind(&c, 0) == DSV4_LAYER_SWA, "kind 0");
    CHECK(dsv4_config_layer_kind(&c, 1) == DSV4_LAYER_CSA, "kind 1");
    CHECK(dsv4_config_layer_kind(&c, 2) == DSV4_LAYER_HCA, "kind 2 (ratio 16 is HCA)");
    CHECK(dsv4_config_layer_kind(&c, 4) == DSV4_LAYER_SWA, "MTP kind");
    CHECK(c.rope_theta == 10000 && c.compress_rope_theta == 160000 && c.rope_factor == 16, "rope");
    CHECK(c.original_seq_len == 65536 && c.beta_fast == 32 && c.beta_slow == 1, "yarn");
    CHECK(c.route_scale == 1.5 && c.swiglu_limit == 10 && c.hc_mult == 4 && c.hc_sinkhorn_iters == 20, "moe2");
    CHECK(c.hc_eps == 1e-6 && c.norm_eps == 1e-6 && c.bos_token_id == 0 && c.eos_token_id == 1, "eps");
}

static void test_config_real(void) {
    const char *which[2] = {"flash", "pro"};
    for (int m = 0; m < 2; m++) {
        const char *p = real_config(which[m]);
        if (!p) {
            fprintf(stderr, "  (real %s config not found; skipped)\n", which[m]);
            continue;
        }
        dsv4_config c;
        dsv4_err err = {{0}};
        dsv4_status s = dsv4_config_load(p, &c, &err);
        CHECK(s == DSV4_OK, "%s", err.msg);
        if (s) continue;
        int n_swa = 0, n_csa = 0, n_hca = 0;
        for (int l = 0; l < c.n_layers; l++) {
            dsv4_layer_kind k = dsv4_config_layer_kind(&c, l);
            n_swa += k == DSV4_LAYER_SWA;
            n_csa += k == DSV4_LAYER_CSA;
            n_hca += k == DSV4_LAYER_HCA;
        }
        dsv4_checkpoint_stats st;
        dsv4_checkpoint_stats_compute(&c, &st);
        double main_b = (double)(st.params_total - st.params_mtp) / 1e9;
        if (m == 0) {
            CHECK(c.dim == 4096 && c.n_layers == 43 && c.n_heads == 64 && c.index_topk == 512, "flash dims");
            CHECK(n_swa == 2 && n_csa == 21 && n_hca == 20, "flash schedule %d %d %d", n_swa, n_csa, n_hca);
            CHECK(c.expert_fp4 == -1, "flash config has no expert_dtype: %d", c.expert_fp4);
            CHECK(fabs(main_b - 284.3) < 0.1, "flash main params %.2fB (spec: ~284.3B)", main_b);
            CHECK(fabs((double)st.bytes_total / 1e9 - 160) < 1, "flash bytes %.2f GB (spec ~160)",
                  (double)st.bytes_total / 1e9);
        } else {
            CHECK(c.dim == 7168 && c.n_layers == 61 && c.n_heads == 128 && c.index_topk == 1024, "pro dims");
            CHECK(n_swa == 0 && n_csa == 30 && n_hca == 31, "pro schedule %d %d %d", n_swa, n_csa, n_hca);
            CHECK(c.expert_fp4 == 1, "pro expert_dtype fp4");
            CHECK(fabs(main_b - 1573) < 1, "pro main params %.1fB (spec ~1573B)", main_b);
            CHECK(fabs((double)st.params_total / 1e9 - 1599) < 1, "pro total with MTP %.1fB (spec ~1599B)",
                  (double)st.params_total / 1e9);
        }
    }
}

/* ================================================================================================
 * Temp-dir helpers: a checkpoint copy whose files are symlinks until a test rewrites one
 * ================================================================================================ */

static char tmp_root[PATH_MAX];

static void rm_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    char p[PATH_MAX];
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) >= (int)sizeof p) continue;
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Fresh copy of src (symlinks) at tmp_root; returns tmp_root. */
static const char *copy_ckpt(const char *src) {
    if (tmp_root[0]) rm_tree(tmp_root);
    snprintf(tmp_root, sizeof tmp_root, "/tmp/dsv4_test_loader_XXXXXX");
    if (!mkdtemp(tmp_root)) { perror("mkdtemp"); abort(); }
    char abs[PATH_MAX], from[PATH_MAX * 2], to[PATH_MAX * 2];
    if (!realpath(src, abs)) { perror(src); abort(); }
    DIR *d = opendir(abs);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        snprintf(from, sizeof from, "%s/%s", abs, de->d_name);
        snprintf(to, sizeof to, "%s/%s", tmp_root, de->d_name);
        if (symlink(from, to)) { perror("symlink"); abort(); }
    }
    closedir(d);
    return tmp_root;
}

static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz + 1);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    return b;
}

static void write_file(const char *name, const void *data, size_t n) {
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", tmp_root, name);
    unlink(p); /* replace the symlink, never the committed file */
    FILE *f = fopen(p, "wb");
    fwrite(data, 1, n, f);
    fclose(f);
}

static void write_text(const char *name, const char *text) { write_file(name, text, strlen(text)); }

typedef void (*json_edit)(json_t *root, void *arg);

static void edit_json_file(const char *name, json_edit fn, void *arg) {
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", tmp_root, name);
    json_t *root = json_load_file(p, 0, NULL);
    fn(root, arg);
    char *s = json_dumps(root, JSON_INDENT(1));
    write_text(name, s);
    free(s);
    json_decref(root);
}

/* Shard file (base name) holding tensor `name`, from the index of the copy. */
static const char *shard_of(const char *name) {
    static char buf[256];
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", tmp_root);
    json_t *root = json_load_file(p, 0, NULL);
    const char *f = json_string_value(json_object_get(json_object_get(root, "weight_map"), name));
    snprintf(buf, sizeof buf, "%s", f ? f : "?");
    json_decref(root);
    return buf;
}

/* Rewrites the header of shard `file` with fn (data section kept byte for byte). */
static void edit_header(const char *file, json_edit fn, void *arg) {
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", tmp_root, file);
    size_t n;
    unsigned char *b = read_all(p, &n);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | b[i];
    json_t *h = json_loadb((const char *)b + 8, hl, 0, NULL);
    fn(h, arg);
    char *s = json_dumps(h, JSON_COMPACT);
    size_t sl = strlen(s), pad = (8 - sl % 8) % 8, nh = sl + pad;
    size_t total = 8 + nh + (n - 8 - hl);
    unsigned char *o = malloc(total);
    for (int i = 0; i < 8; i++) o[i] = (unsigned char)(nh >> (8 * i));
    memcpy(o + 8, s, sl);
    memset(o + 8 + sl, ' ', pad);
    memcpy(o + 8 + nh, b + 8 + hl, n - 8 - hl);
    write_file(file, o, total);
    free(o);
    free(s);
    free(b);
    json_decref(h);
}

/* Expects dsv4_checkpoint_open(tmp_root) to fail with status want and every needle in the message. */
static void expect_open_fails(dsv4_status want, const char *n1, const char *n2) {
    dsv4_checkpoint ck;
    dsv4_err err = {{0}};
    memset(&ck, 0x5a, sizeof ck);
    dsv4_status s = dsv4_checkpoint_open(tmp_root, &ck, &err);
    CHECK(s == want, "status %s, want %s (msg: %s)", dsv4_status_name(s), dsv4_status_name(want), err.msg);
    CHECK(n1 == NULL || strstr(err.msg, n1), "message lacks \"%s\": %s", n1, err.msg);
    CHECK(n2 == NULL || strstr(err.msg, n2), "message lacks \"%s\": %s", n2, err.msg);
    CHECK(ck.files == NULL && ck.index == NULL && ck.dir == NULL && ck.n_files == 0, "ck not zeroed on failure");
    if (s == DSV4_OK) dsv4_checkpoint_close(&ck);
    fprintf(stderr, "    -> %s\n", err.msg);
}

/* ================================================================================================
 * Valid checkpoints
 * ================================================================================================ */

static double fp8_dequant_std(const dsv4_fp8_linear *l) {
    int sc = (l->in + 127) / 128;
    double s2 = 0;
    for (int o = 0; o < l->out; o++)
        for (int i = 0; i < l->in; i++) {
            double v = dsv4_e4m3_to_f32(l->w[(size_t)o * l->in + i]) *
                       dsv4_e8m0_to_f32(l->scale[(o / 128) * sc + i / 128]);
            s2 += v * v;
        }
    return sqrt(s2 / ((double)l->out * l->in));
}

static double fp4_dequant_std(const dsv4_expert_linear *l) {
    double s2 = 0;
    for (int o = 0; o < l->out; o++)
        for (int i = 0; i < l->in; i++) {
            double v = dsv4_fp4_unpack(l->w + (size_t)o * (l->in / 2), (size_t)i) *
                       dsv4_e8m0_to_f32(l->scale[(size_t)o * (l->in / 32) + i / 32]);
            s2 += v * v;
        }
    return sqrt(s2 / ((double)l->out * l->in));
}

static void check_bound(const char *dir, int want_ratio_hca) {
    dsv4_checkpoint ck;
    dsv4_err err = {{0}};
    dsv4_status s = dsv4_checkpoint_open(dir, &ck, &err);
    CHECK(s == DSV4_OK, "%s: %s", dir, err.msg);
    if (s) return;
    const dsv4_config *c = &ck.cfg;
    CHECK(ck.n_files >= 3, "sharded: %d files", ck.n_files);
    CHECK(ck.stats.n_tensors == ck.n_index, "stats tensors %llu vs index %zu", (unsigned long long)ck.stats.n_tensors,
          ck.n_index);
    dsv4_model_weights w;
    s = dsv4_model_weights_bind(&ck, &w, &err);
    CHECK(s == DSV4_OK, "bind: %s", err.msg);
    if (s) { dsv4_checkpoint_close(&ck); return; }
    CHECK(w.cfg == c && w.mtp != NULL, "cfg/mtp");
    CHECK(w.embed == (const void *)dsv4_checkpoint_tensor_find(&ck, "embed.weight")->data, "embed is a view");
    CHECK(w.head && w.norm && w.hc_head.fn && w.hc_head.base && w.hc_head.scale, "globals bound");
    CHECK(w.n_owned_copies == 0, "generator aligns tensors, yet %d copies", w.n_owned_copies);
    int E = c->n_routed_experts, D = c->dim, I = c->moe_inter_dim;
    for (int l = 0; l < c->n_layers; l++) {
        const dsv4_layer_weights *L = &w.layers[l];
        int r = c->compress_ratios[l];
        CHECK(L->ratio == r && L->kind == dsv4_config_layer_kind(c, l), "layer %d kind", l);
        CHECK(L->wq_a.w && L->wq_a.scale && L->wq_a.out == c->q_lora_rank && L->wq_a.in == D, "layer %d wq_a", l);
        CHECK(L->wo_a.out == c->o_groups * c->o_lora_rank, "layer %d wo_a", l);
        CHECK((r != 0) == (L->compressor.wkv != NULL), "layer %d compressor presence", l);
        if (r) CHECK(L->compressor.coff == (r == 4 ? 2 : 1) && L->compressor.ratio == r && L->compressor.d == 512,
                     "layer %d compressor geometry", l);
        CHECK((r == 4) == (L->idx_wq_b.w != NULL && L->idx_compressor.wkv != NULL), "layer %d indexer", l);
        if (r == 4) CHECK(L->idx_compressor.d == 128 && L->idx_compressor.coff == 2, "layer %d idx geometry", l);
        int hash = l < c->n_hash_layers;
        CHECK(hash == (L->tid2eid != NULL) && hash == (L->gate_bias == NULL), "layer %d routing tensors", l);
        if (hash) {
            int bad = 0;
            for (int t = 0; t < c->vocab_size; t++) {
                int64_t a = L->tid2eid[t * 2], b = L->tid2eid[t * 2 + 1];
                bad += a < 0 || a >= E || b < 0 || b >= E || a == b;
            }
            CHECK(bad == 0, "layer %d tid2eid: %d bad rows", l, bad);
        }
        for (int e = 0; e < E; e++) {
            CHECK(L->experts_w1[e].w && L->experts_w1[e].out == I && L->experts_w1[e].in == D &&
                      L->experts_w1[e].is_fp4 == 1, "layer %d expert %d w1", l, e);
            CHECK(L->experts_w2[e].w && L->experts_w2[e].out == D && L->experts_w2[e].in == I, "l%d e%d w2", l, e);
            CHECK(L->experts_w3[e].w && L->experts_w3[e].scale, "l%d e%d w3", l, e);
        }
        CHECK(L->shared_w2.out == D && L->shared_w2.in == I, "layer %d shared w2", l);
        CHECK(L->hc_attn.fn && L->hc_ffn.scale && L->attn_sink && L->attn_norm && L->ffn_norm, "layer %d misc", l);
        if (r > 4) CHECK(r == want_ratio_hca, "layer %d HCA ratio %d", l, r);
    }
    /* The generator's intent: std 1/sqrt(fan_in), residual writers 0.1/sqrt(fan_in). */
    double s_wq_a = fp8_dequant_std(&w.layers[0].wq_a), s_wo_b = fp8_dequant_std(&w.layers[0].wo_b);
    double s_w1 = fp4_dequant_std(&w.layers[1].experts_w1[3]), s_w2 = fp4_dequant_std(&w.layers[1].experts_w2[3]);
    CHECK(fabs(s_wq_a * sqrt(D) - 1) < 0.1, "wq_a std %g", s_wq_a);
    CHECK(fabs(s_wo_b * sqrt(c->o_groups * c->o_lora_rank) - 0.1) < 0.01, "wo_b std %g", s_wo_b);
    CHECK(fabs(s_w1 * sqrt(D) - 1) < 0.1, "expert w1 std %g", s_w1);
    CHECK(fabs(s_w2 * sqrt(I) - 0.1) < 0.01, "expert w2 std %g", s_w2);
    const dsv4_mtp_weights *m = w.mtp;
    CHECK(m->block.kind == DSV4_LAYER_SWA && m->block.gate_bias && !m->block.tid2eid, "mtp block");
    CHECK(m->e_proj.w && m->h_proj.out == D && m->enorm && m->hnorm && m->norm && m->hc_head.fn, "mtp extras");
    CHECK(m->block.experts_w1[E - 1].w != NULL, "mtp experts");
    double nw = dsv4_bf16_to_f32(m->norm[0]);
    CHECK(nw > 0.3 && nw < 1.7, "norm weight ~1: %g", nw);
    dsv4_model_weights_free(&w);
    CHECK(w.layers == NULL && w.mtp == NULL, "free zeroes");
    dsv4_checkpoint_close(&ck);
}

static void test_open_tiny_flash(void) { check_bound(TINY_FLASH, 16); }
static void test_open_tiny_pro(void) { check_bound(TINY_PRO, 8); }

static void del_key(json_t *root, void *arg) { json_object_del(root, (const char *)arg); }

/* Without expert_dtype (initial release) the I8 weights decide: still valid, FP4. */
static void test_expert_dtype_detected(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("config.json", del_key, "expert_dtype");
    dsv4_checkpoint ck;
    dsv4_err err = {{0}};
    dsv4_status s = dsv4_checkpoint_open(tmp_root, &ck, &err);
    CHECK(s == DSV4_OK && ck.cfg.expert_fp4 == 1, "%s", err.msg);
    if (!s) dsv4_checkpoint_close(&ck);
}

/* No index: the loader falls back to all *.safetensors files in the directory. */
static void test_no_index_fallback(void) {
    copy_ckpt(TINY_PRO);
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", tmp_root);
    unlink(p);
    dsv4_checkpoint ck;
    dsv4_err err = {{0}};
    dsv4_status s = dsv4_checkpoint_open(tmp_root, &ck, &err);
    CHECK(s == DSV4_OK && ck.n_files == 4, "%s", err.msg);
    if (!s) dsv4_checkpoint_close(&ck);
}

/* ================================================================================================
 * Broken checkpoints
 * ================================================================================================ */

static void drop_tensor(json_t *root, void *arg) { json_object_del(root, (const char *)arg); }
static void drop_from_index(json_t *root, void *arg) {
    json_object_del(json_object_get(root, "weight_map"), (const char *)arg);
}

static void test_missing_tensor(void) {
    const char *t = "layers.2.attn.compressor.ape";
    copy_ckpt(TINY_FLASH);
    edit_header(shard_of(t), drop_tensor, (void *)t);
    edit_json_file("model.safetensors.index.json", drop_from_index, (void *)t);
    expect_open_fails(DSV4_ERR_CONFIG, "tensor layers.2.attn.compressor.ape: missing", "F32 [16, 512]");
}

static void set_shape(json_t *root, void *arg) {
    json_t *e = json_object_get(root, (const char *)arg);
    json_object_set_new(e, "shape", json_pack("[i,i]", 256, 128));
}

static void test_wrong_shape(void) {
    const char *t = "layers.1.attn.wq_a.weight"; /* [128, 256] -> [256, 128], same bytes */
    copy_ckpt(TINY_FLASH);
    edit_header(shard_of(t), set_shape, (void *)t);
    expect_open_fails(DSV4_ERR_CONFIG, "tensor layers.1.attn.wq_a.weight: expected F8_E4M3 [128, 256]",
                      "got F8_E4M3 [256, 128]");
}

static void set_dtype_i8(json_t *root, void *arg) {
    json_object_set_new(json_object_get(root, (const char *)arg), "dtype", json_string("I8"));
}

static void test_wrong_dtype(void) {
    const char *t = "mtp.0.attn.wkv.weight";
    copy_ckpt(TINY_FLASH);
    edit_header(shard_of(t), set_dtype_i8, (void *)t);
    expect_open_fails(DSV4_ERR_CONFIG, "tensor mtp.0.attn.wkv.weight: expected F8_E4M3 [512, 256]",
                      "got I8 [512, 256]");
}

static void set_dtype_f16(json_t *root, void *arg) {
    json_object_set_new(json_object_get(root, (const char *)arg), "dtype", json_string("F16"));
}

static void test_unsupported_dtype(void) {
    const char *t = "embed.weight";
    copy_ckpt(TINY_FLASH);
    edit_header(shard_of(t), set_dtype_f16, (void *)t);
    expect_open_fails(DSV4_ERR_FORMAT, "tensor embed.weight: unsupported dtype \"F16\"", NULL);
}

static void test_truncated_shard(void) {
    copy_ckpt(TINY_FLASH);
    const char *f = shard_of("embed.weight");
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", tmp_root, f);
    size_t n;
    unsigned char *b = read_all(p, &n);
    write_file(f, b, n - 1000);
    free(b);
    expect_open_fails(DSV4_ERR_FORMAT, f, "out of range");
}

static void offsets_oob(json_t *root, void *arg) {
    json_t *e = json_object_get(root, (const char *)arg);
    json_object_set_new(e, "data_offsets", json_pack("[I,I]", (json_int_t)100000000, (json_int_t)100000512));
}

static void test_offsets_out_of_range(void) {
    const char *t = "norm.weight";
    copy_ckpt(TINY_FLASH);
    edit_header(shard_of(t), offsets_oob, (void *)t);
    expect_open_fails(DSV4_ERR_FORMAT, "tensor norm.weight: data_offsets [100000000, 100000512] out of range", NULL);
}

static void offsets_size(json_t *root, void *arg) {
    json_t *e = json_object_get(root, (const char *)arg);
    json_int_t b = json_integer_value(json_array_get(json_object_get(e, "data_offsets"), 0));
    json_object_set_new(e, "data_offsets", json_pack("[I,I]", b, b + 100));
}

static void test_offsets_size_mismatch(void) {
    const char *t = "norm.weight";
    copy_ckpt(TINY_FLASH);
    edit_header(shard_of(t), offsets_size, (void *)t);
    expect_open_fails(DSV4_ERR_FORMAT, "tensor norm.weight: BF16 [256] needs 512 bytes but data_offsets span 100",
                      NULL);
}

static void test_header_length_beyond_file(void) {
    copy_ckpt(TINY_FLASH);
    const char *f = shard_of("head.weight");
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", tmp_root, f);
    size_t n;
    unsigned char *b = read_all(p, &n);
    uint64_t big = (uint64_t)n;
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(big >> (8 * i));
    write_file(f, b, n);
    free(b);
    expect_open_fails(DSV4_ERR_FORMAT, f, "exceeds the file size");
}

static void test_bad_header_json(void) {
    copy_ckpt(TINY_FLASH);
    const char *f = shard_of("head.weight");
    char p[PATH_MAX * 2];
    snprintf(p, sizeof p, "%s/%s", tmp_root, f);
    size_t n;
    unsigned char *b = read_all(p, &n);
    b[8 + 20] = '}';
    b[8 + 21] = '\x01';
    write_file(f, b, n);
    free(b);
    expect_open_fails(DSV4_ERR_FORMAT, f, "header JSON");
}

static void test_bad_config_json(void) {
    copy_ckpt(TINY_FLASH);
    write_text("config.json", "{\"hidden_size\": 256,,}");
    expect_open_fails(DSV4_ERR_FORMAT, "config.json: bad JSON", "line 1");
}

static void test_config_missing_key(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("config.json", del_key, "q_lora_rank");
    expect_open_fails(DSV4_ERR_CONFIG, "config.json: key \"q_lora_rank\" is missing", NULL);
}

static void set_ratios_short(json_t *root, void *arg) {
    json_object_set_new(root, "compress_ratios", json_pack("[i,i,i,i]", 0, 4, 16, 4));
}

static void test_config_ratio_count(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("config.json", set_ratios_short, NULL);
    expect_open_fails(DSV4_ERR_CONFIG, "\"compress_ratios\" has 4 entries", "= 5");
}

static void test_bad_index_json(void) {
    copy_ckpt(TINY_FLASH);
    write_text("model.safetensors.index.json", "{\"weight_map\": {\"embed.weight\": ");
    expect_open_fails(DSV4_ERR_FORMAT, "model.safetensors.index.json: bad JSON", NULL);
}

static void set_dim(json_t *root, void *arg) { json_object_set_new(root, "hidden_size", json_integer(384)); }

static void test_config_dim_changed(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("config.json", set_dim, NULL);
    expect_open_fails(DSV4_ERR_CONFIG, "tensor embed.weight: expected BF16 [512, 384], got BF16 [512, 256]", NULL);
}

static void set_hash1(json_t *root, void *arg) { json_object_set_new(root, "num_hash_layers", json_integer(1)); }

static void test_config_hash_layers_changed(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("config.json", set_hash1, NULL);
    expect_open_fails(DSV4_ERR_CONFIG, "tensor layers.1.ffn.gate.bias: missing", "F32 [8]");
}

static void set_ratio128(json_t *root, void *arg) {
    json_object_set_new(root, "compress_ratios", json_pack("[i,i,i,i,i]", 0, 4, 128, 4, 0));
}

static void test_config_ratio_changed(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("config.json", set_ratio128, NULL);
    expect_open_fails(DSV4_ERR_CONFIG, "tensor layers.2.attn.compressor.ape: expected F32 [128, 512]",
                      "got F32 [16, 512]");
}

static void set_fp8(json_t *root, void *arg) { json_object_set_new(root, "expert_dtype", json_string("fp8")); }

static void test_config_expert_dtype_wrong(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("config.json", set_fp8, NULL);
    expect_open_fails(DSV4_ERR_CONFIG, "expected F8_E4M3 [128, 256], got I8 [128, 128]", NULL);
}

static void index_missing_shard(json_t *root, void *arg) {
    json_object_set_new(json_object_get(root, "weight_map"), "norm.weight",
                        json_string("model-00009-of-00009.safetensors"));
}

static void test_index_missing_shard(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("model.safetensors.index.json", index_missing_shard, NULL);
    expect_open_fails(DSV4_ERR_IO, "model-00009-of-00009.safetensors: cannot open", NULL);
}

static void index_wrong_shard(json_t *root, void *arg) {
    json_t *wm = json_object_get(root, "weight_map");
    const char *other = json_string_value(json_object_get(wm, "head.weight"));
    const char *mine = json_string_value(json_object_get(wm, "mtp.0.norm.weight"));
    CHECK(strcmp(other, mine) != 0, "test needs tensors in two shards");
    json_object_set_new(wm, "mtp.0.norm.weight", json_string(other));
}

static void test_index_wrong_shard(void) {
    copy_ckpt(TINY_FLASH);
    edit_json_file("model.safetensors.index.json", index_wrong_shard, NULL);
    expect_open_fails(DSV4_ERR_FORMAT, "tensor mtp.0.norm.weight is mapped to", "but is in");
}

typedef struct { const char *from, *to; } dup_arg;

/* Adds tensor a->to as an empty F32 [0] entry: a well-formed extra tensor that aliases no bytes (a copy of
 * a->from's entry would share its byte range, which the format forbids and the parser now rejects). */
static void dup_entry(json_t *root, void *arg) {
    dup_arg *a = arg;
    json_t *off = json_array_get(json_object_get(json_object_get(root, a->from), "data_offsets"), 0);
    json_object_set_new(root, a->to, json_pack("{s:s,s:[i],s:[O,O]}", "dtype", "F32", "shape", 0, "data_offsets",
                                               off, off));
}
static void dup_index(json_t *root, void *arg) {
    dup_arg *a = arg;
    json_t *wm = json_object_get(root, "weight_map");
    json_object_set(wm, a->to, json_object_get(wm, a->from));
}

static void test_extra_tensor(void) {
    dup_arg a = {"layers.0.attn.attn_sink", "layers.0.attn.extra_sink"};
    copy_ckpt(TINY_FLASH);
    edit_header(shard_of(a.from), dup_entry, &a);
    edit_json_file("model.safetensors.index.json", dup_index, &a);
    expect_open_fails(DSV4_ERR_CONFIG, "tensor layers.0.attn.extra_sink: unexpected", NULL);
}

static void test_extra_tensor_not_in_index(void) {
    dup_arg a = {"layers.0.attn.attn_sink", "layers.0.attn.extra_sink"};
    copy_ckpt(TINY_FLASH);
    edit_header(shard_of(a.from), dup_entry, &a);
    expect_open_fails(DSV4_ERR_FORMAT, "tensor layers.0.attn.extra_sink is not in the weight_map", NULL);
}

static void test_missing_dir(void) {
    dsv4_checkpoint ck;
    dsv4_err err = {{0}};
    dsv4_status s = dsv4_checkpoint_open("tests/data/no-such-checkpoint", &ck, &err);
    CHECK(s == DSV4_ERR_IO && strstr(err.msg, "no-such-checkpoint/config.json"), "%s", err.msg);
}

/* ================================================================================================
 * safetensors parser on memory buffers
 * ================================================================================================ */

static size_t make_st(unsigned char *buf, const char *hdr, size_t data_len) {
    size_t hl = strlen(hdr);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    memset(buf + 8 + hl, 0x11, data_len);
    return 8 + hl + data_len;
}

static dsv4_status parse_hdr(const char *hdr, size_t data_len, dsv4_st_file *st, dsv4_err *err) {
    static unsigned char buf[4096];
    size_t n = make_st(buf, hdr, data_len);
    return dsv4_st_file_parse(buf, n, "mem", st, err);
}

static void expect_parse_fails(const char *hdr, size_t data_len, const char *needle) {
    dsv4_st_file st;
    dsv4_err err = {{0}};
    dsv4_status s = parse_hdr(hdr, data_len, &st, &err);
    CHECK(s == DSV4_ERR_FORMAT && strstr(err.msg, needle), "header %s: %s / %s", hdr, dsv4_status_name(s), err.msg);
    CHECK(st.tensors == NULL && st.n_tensors == 0, "st zeroed on failure");
}

static void test_st_parse_buffer(void) {
    dsv4_st_file st;
    dsv4_err err = {{0}};
    dsv4_status s = parse_hdr("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                              "\"data_offsets\":[0,24]},\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[24,32]}}",
                              32, &st, &err);
    CHECK(s == DSV4_OK, "%s", err.msg);
    if (!s) {
        CHECK(st.n_tensors == 2, "2 tensors (metadata ignored)");
        const dsv4_st_tensor *a = dsv4_st_file_find(&st, "a"), *sc = dsv4_st_file_find(&st, "s");
        CHECK(a && a->ndim == 2 && a->shape[1] == 3 && a->nbytes == 24 && a->dtype == DSV4_DTYPE_F32, "a");
        CHECK(sc && sc->ndim == 0 && sc->nbytes == 8, "scalar");
        CHECK(!dsv4_st_file_find(&st, "__metadata__"), "metadata not a tensor");
        dsv4_st_file_close(&st);
    }
    unsigned char tiny[7] = {0};
    s = dsv4_st_file_parse(tiny, sizeof tiny, "mem", &st, &err);
    CHECK(s == DSV4_ERR_FORMAT && strstr(err.msg, "shorter than"), "%s", err.msg);
    expect_parse_fails("[1,2]", 0, "not an object");
    expect_parse_fails("{\"a\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2, "unsupported dtype");
    expect_parse_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    expect_parse_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "out of range");
    expect_parse_fails("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, "needs 8 bytes");
    expect_parse_fails("{\"a\":{\"dtype\":\"I64\",\"shape\":[4611686018427387904,4611686018427387904],"
                       "\"data_offsets\":[0,8]}}", 8, "too large");
    expect_parse_fails("{\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                       "\"a\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "header JSON");
    expect_parse_fails("{\"a\":{\"dtype\":\"I8\",\"shape\":[1]}}", 1, "data_offsets");
    expect_parse_fails("{\"a\":3}", 0, "not an object");
}

/* fuzz_config findings: a .npy header whose shape promised more floats than the file holds made the reader
 * allocate that much (up to a failed or huge malloc), and a shape whose product overflows size_t read back as
 * "ok" with nothing behind it. Both must be FORMAT errors. */
static void write_npy_header(const char *path, const char *shape, size_t data_bytes) {
    char hdr[128];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }", shape);
    while ((10 + n + 1) % 64) hdr[n++] = ' ';
    hdr[n++] = '\n';
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)n, 0};
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fwrite(pre, 1, sizeof pre, f);
    fwrite(hdr, 1, (size_t)n, f);
    for (size_t i = 0; i < data_bytes; i++) fputc(0, f);
    fclose(f);
}

static void expect_npy(const char *path, const char *shape, size_t data_bytes, const char *want) {
    write_npy_header(path, shape, data_bytes);
    float *v = NULL;
    long dims[4];
    int nd = 0;
    dsv4_err e = {{0}};
    dsv4_status st = dsv4_npy_read_f32(path, &v, dims, 4, &nd, &e);
    if (!want) {
        CHECK(st == DSV4_OK, "npy %s: %s", shape, e.msg);
    } else {
        CHECK(st == DSV4_ERR_FORMAT && strstr(e.msg, want), "npy %s: want FORMAT '%s', got %d '%s'", shape, want, st,
              e.msg);
    }
    free(v);
}

static void test_npy_forged_shape(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/dsv4_test_npy_%d.npy", (int)getpid());
    expect_npy(path, "(2, 3)", 24, NULL);
    expect_npy(path, "(2, 3)", 20, "truncated");
    expect_npy(path, "(2, 1000000000000000)", 8, "truncated");
    expect_npy(path, "(4611686018427387904, 4)", 0, "too large");
    unlink(path);
}

int main(void) {
    RUN(test_config_tiny_flash);
    RUN(test_config_real);
    RUN(test_st_parse_buffer);
    RUN(test_open_tiny_flash);
    RUN(test_open_tiny_pro);
    RUN(test_expert_dtype_detected);
    RUN(test_no_index_fallback);
    RUN(test_missing_tensor);
    RUN(test_wrong_shape);
    RUN(test_wrong_dtype);
    RUN(test_unsupported_dtype);
    RUN(test_truncated_shard);
    RUN(test_offsets_out_of_range);
    RUN(test_offsets_size_mismatch);
    RUN(test_header_length_beyond_file);
    RUN(test_bad_header_json);
    RUN(test_bad_config_json);
    RUN(test_config_missing_key);
    RUN(test_config_ratio_count);
    RUN(test_bad_index_json);
    RUN(test_config_dim_changed);
    RUN(test_config_hash_layers_changed);
    RUN(test_config_ratio_changed);
    RUN(test_config_expert_dtype_wrong);
    RUN(test_index_missing_shard);
    RUN(test_index_wrong_shard);
    RUN(test_extra_tensor);
    RUN(test_extra_tensor_not_in_index);
    RUN(test_missing_dir);
    RUN(test_npy_forged_shape);
    if (tmp_root[0]) rm_tree(tmp_root);
    return test_finish();
}

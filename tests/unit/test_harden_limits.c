/* test_harden_limits.c — issue 13, class "absurd sizes": every config value that sizes a loop or an
 * allocation is bounded at load (include/dsv4_limits.h) with a message naming the key, products are formed in
 * 64-bit after the bounds (no overflow in the checks themselves), and a KV capacity beyond the machine's
 * memory is refused with a message instead of an allocator abort. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsv4_files.h"
#include "core/status.h"
#include "dsv4.h"
#include "model/checkpoint.h"
#include "dsv4_config.h"
#include "dsv4_limits.h"
#include "test_util.h"

static char dir[PATH_MAX];

/* Writes tests/data/tiny-flash/config.json with key (dotted path one level deep) set to v; returns path. */
static const char *config_with(const char *key, json_t *v) {
    static char path[PATH_MAX * 2];
    json_error_t je;
    json_t *root = json_load_file("tests/data/tiny-flash/config.json", 0, &je);
    if (!root) abort();
    json_object_set_new(root, key, v);
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_dump_file(root, path, JSON_INDENT(1));
    json_decref(root);
    return path;
}

static void expect_refused(const char *key, json_t *v, dsv4_status want, const char *needle) {
    dsv4_config c;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_config_load(config_with(key, v), &c, &err);
    CHECK(st == want, "%s: status %s, want %s: %s", key, dsv4_status_name(st), dsv4_status_name(want), err.msg);
    CHECK(strstr(err.msg, needle) != NULL, "%s: message lacks \"%s\": %s", key, needle, err.msg);
    fprintf(stderr, "    -> %s\n", err.msg);
}

static void test_config_values_bounded(void) {
    expect_refused("hc_sinkhorn_iters", json_integer(1 << 30), DSV4_ERR_CONFIG, "\"hc_sinkhorn_iters\" = 1073741824 is out of range [1, 100]");
    expect_refused("n_routed_experts", json_integer(1 << 30), DSV4_ERR_CONFIG, "\"n_routed_experts\"");
    expect_refused("n_routed_experts", json_integer(DSV4_LIMIT_EXPERTS + 1), DSV4_ERR_CONFIG, "[1, 1024]");
    expect_refused("num_experts_per_tok", json_integer(17), DSV4_ERR_CONFIG, "\"num_experts_per_tok\"");
    expect_refused("num_attention_heads", json_integer(1 << 20), DSV4_ERR_CONFIG, "\"num_attention_heads\"");
    expect_refused("head_dim", json_integer(1 << 20), DSV4_ERR_CONFIG, "\"head_dim\"");
    expect_refused("hidden_size", json_integer(1 << 30), DSV4_ERR_CONFIG, "\"hidden_size\"");
    expect_refused("vocab_size", json_integer(1L << 40), DSV4_ERR_CONFIG, "\"vocab_size\"");
    expect_refused("hc_mult", json_integer(9), DSV4_ERR_CONFIG, "\"hc_mult\"");
    expect_refused("qk_rope_head_dim", json_integer(256), DSV4_ERR_CONFIG, "\"qk_rope_head_dim\"");
    expect_refused("index_head_dim", json_integer(256), DSV4_ERR_UNSUPPORTED, "only 128");
    expect_refused("max_position_embeddings", json_integer(1L << 40), DSV4_ERR_CONFIG, "\"max_position_embeddings\"");
    json_t *cr = json_array();
    for (int i = 0; i < 5; i++) json_array_append_new(cr, json_integer(i == 3 ? 1 << 20 : 4));
    expect_refused("compress_ratios", cr, DSV4_ERR_CONFIG, "\"compress_ratios\"[3] must be an integer in [0, 1024]");
}

/* The largest values within the limits still make a consistent config whose products fit easily. */
static void test_limits_products_fit(void) {
    int64_t heads_x_hd = (int64_t)DSV4_LIMIT_HEADS * DSV4_LIMIT_HEAD_DIM;
    int64_t embed = (int64_t)DSV4_LIMIT_VOCAB * DSV4_LIMIT_DIM;
    int64_t experts = (int64_t)DSV4_LIMIT_EXPERTS * DSV4_LIMIT_DIM * DSV4_LIMIT_DIM * 3;
    CHECK(heads_x_hd < INT_MAX, "heads x head_dim %lld", (long long)heads_x_hd);
    CHECK(embed < (1LL << 62) && experts < (1LL << 62), "products overflow 2^62");
}

/* A KV capacity beyond the limit, or whose arena cannot fit in memory, fails engine creation with a
 * message, no abort. The memory case needs a machine with less than ~520 GB (the tiny checkpoint's 2^30-token
 * arena is ~395 GB, refused above 3/4 of memory); on a larger host it is skipped rather than allocated. */
static void test_huge_kv_refused(void) {
    dsv4_engine_options o = {0};
    o.model_dir = "tests/data/tiny-flash";
    o.n_threads = 1;
    o.max_seqs = 1;
    o.max_tokens = DSV4_LIMIT_CTX_TOKENS + 1;
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_engine_create(&o, &e, &err);
    CHECK(st == DSV4_ERR_INVALID_ARG && strstr(err.msg, "exceeds the limit"), "%s: %s", dsv4_status_name(st), err.msg);
    fprintf(stderr, "    -> %s\n", err.msg);
    dsv4_engine_destroy(e);
    e = NULL;
    double mem = (double)sysconf(_SC_PHYS_PAGES) * (double)sysconf(_SC_PAGESIZE);
    if (mem * 0.75 >= 395e9) {
        fprintf(stderr, "    SKIP the memory case: this host has %.0f GB\n", mem / 1e9);
        return;
    }
    o.max_tokens = DSV4_LIMIT_CTX_TOKENS;
    st = dsv4_engine_create(&o, &e, &err);
    CHECK(st == DSV4_ERR_NOMEM && strstr(err.msg, "lower the KV capacity"), "%s: %s", dsv4_status_name(st), err.msg);
    fprintf(stderr, "    -> %s\n", err.msg);
    dsv4_engine_destroy(e);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/dsv4_test_harden_limits_XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); return 1; }
    RUN(test_config_values_bounded);
    RUN(test_limits_products_fit);
    RUN(test_huge_kv_refused);
    dsv4_err err = {{0}};
    dsv4_remove_tree(dir, &err);
    return test_finish();
}

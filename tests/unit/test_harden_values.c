/* test_harden_values.c — issue 13, class "values inside tensors": a copy of the tiny checkpoint with one
 * tensor's bytes changed. The load-time layer (model/contents.c) refuses a hash-routing table with an
 * expert id outside [0, E), an e8m0 scale code 0xFF (NaN) and a NaN in a small F32/BF16 tensor; a NaN in a
 * large weight (not scanned at load) fails the step with an error naming where it appeared (embedding,
 * layer + op, LM head) -- never an abort, never logits handed out -- and leaves the sequence unchanged. A
 * table naming one expert twice for a token (valid in the reference) runs. */
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsv4_files.h"
#include "core/status.h"
#include "dsv4.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "test_util.h"

#define TINY "tests/data/tiny-flash"

static char dir[PATH_MAX];

/* Fresh full copy of the tiny checkpoint at dir (files are rewritten in place by patch()). */
static void fresh_copy(void) {
    dsv4_err err = {{0}};
    if (dir[0]) dsv4_remove_tree(dir, &err);
    snprintf(dir, sizeof dir, "/tmp/dsv4_test_harden_values_XXXXXX");
    if (!mkdtemp(dir)) { perror("mkdtemp"); abort(); }
    static const char *files[] = {"config.json", "model.safetensors.index.json", "model-00001-of-00003.safetensors",
                                  "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
        char src[PATH_MAX * 2], dst[PATH_MAX * 2], *data;
        size_t len;
        snprintf(src, sizeof src, "%s/%s", TINY, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        if (dsv4_file_read_all(src, 1ull << 30, &data, &len, &err) != DSV4_OK ||
            dsv4_file_write_atomic(dst, data, len, &err) != DSV4_OK) {
            fprintf(stderr, "copy: %s\n", err.msg);
            abort();
        }
        free(data);
    }
}

/* Writes n bytes at element offset `byte_off` of tensor `name` in the copy. */
static void patch(const char *name, uint64_t byte_off, const void *bytes, size_t n) {
    char idx[PATH_MAX * 2], shard[PATH_MAX * 2];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    json_error_t je;
    json_t *root = json_load_file(idx, 0, &je);
    const char *f = json_string_value(json_object_get(json_object_get(root, "weight_map"), name));
    if (!f) { fprintf(stderr, "no tensor %s\n", name); abort(); }
    snprintf(shard, sizeof shard, "%s/%s", dir, f);
    json_decref(root);
    dsv4_st_file st;
    dsv4_err err = {{0}};
    if (dsv4_st_file_open(shard, &st, &err) != DSV4_OK) { fprintf(stderr, "%s\n", err.msg); abort(); }
    const dsv4_st_tensor *t = dsv4_st_file_find(&st, name);
    if (!t || byte_off + n > t->nbytes) { fprintf(stderr, "patch out of range: %s\n", name); abort(); }
    off_t off = (off_t)(t->data - st.base) + (off_t)byte_off;
    dsv4_st_file_close(&st);
    int fd = open(shard, O_WRONLY);
    if (fd < 0 || pwrite(fd, bytes, n, off) != (ssize_t)n) { perror(shard); abort(); }
    close(fd);
}

static void expect_load_fails(const char *n1, const char *n2) {
    dsv4_checkpoint ck;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_checkpoint_open(dir, &ck, &err);
    CHECK(st == DSV4_ERR_FORMAT, "status %s: %s", dsv4_status_name(st), err.msg);
    CHECK(strstr(err.msg, n1) != NULL, "message lacks \"%s\": %s", n1, err.msg);
    CHECK(!n2 || strstr(err.msg, n2) != NULL, "message lacks \"%s\": %s", n2, err.msg);
    if (st == DSV4_OK) dsv4_checkpoint_close(&ck);
    fprintf(stderr, "    -> %s\n", err.msg);
}

static void test_tid2eid_out_of_range(void) {
    fresh_copy();
    int64_t bad = 8;   /* E = 8 */
    patch("layers.1.ffn.gate.tid2eid", 8 * (2 * 100 + 1), &bad, 8);   /* token 100, slot 1 */
    expect_load_fails("layers.1.ffn.gate.tid2eid", "token 100, slot 1 holds expert id 8, outside [0, 8)");
    fresh_copy();
    bad = -1;
    patch("layers.0.ffn.gate.tid2eid", 0, &bad, 8);
    expect_load_fails("layers.0.ffn.gate.tid2eid", "expert id -1");
}

static void test_e8m0_nan_scale(void) {
    fresh_copy();
    uint8_t ff = 0xFF;
    patch("layers.2.ffn.shared_experts.w1.scale", 0, &ff, 1);
    expect_load_fails("layers.2.ffn.shared_experts.w1.scale", "0xFF (NaN)");
    fresh_copy();
    patch("layers.3.ffn.experts.5.w2.scale", 17, &ff, 1);
    expect_load_fails("layers.3.ffn.experts.5.w2.scale", "element 17");
}

static void test_nan_in_small_tensors(void) {
    fresh_copy();
    uint32_t nan = 0x7FC00000u, inf = 0x7F800000u;
    patch("layers.0.hc_attn_base", 4 * 3, &nan, 4);
    expect_load_fails("layers.0.hc_attn_base", "element 3 is NaN");
    fresh_copy();
    patch("layers.2.attn.attn_sink", 0, &inf, 4);
    expect_load_fails("layers.2.attn.attn_sink", "infinite");
    fresh_copy();
    uint16_t bnan = 0x7FC0;
    patch("layers.1.attn_norm.weight", 2 * 7, &bnan, 2);
    expect_load_fails("layers.1.attn_norm.weight", "element 7 is NaN");
}

/* Loads the copy, runs tokens through one step and expects DSV4_ERR_FORMAT with both needles; the
 * sequence keeps its length (nothing committed). */
static void expect_step_fails(const int32_t *tokens, int n, const char *n1, const char *n2) {
    dsv4_engine_options o = {0};
    o.model_dir = dir;
    o.n_threads = 1;
    o.max_seqs = 1;
    o.max_tokens = 64;
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_engine_create(&o, &e, &err);
    CHECK(st == DSV4_OK, "create: %s", err.msg);
    if (st != DSV4_OK) return;
    int seq;
    CHECK(dsv4_engine_seq_open(e, &seq, &err) == DSV4_OK, "%s", err.msg);
    float *logits = calloc((size_t)dsv4_engine_vocab_size(e), sizeof(float));
    dsv4_batch_item it = {seq, tokens, n, 1};
    st = dsv4_engine_step(e, &it, 1, logits, &err);
    CHECK(st == DSV4_ERR_FORMAT, "step status %s: %s", dsv4_status_name(st), err.msg);
    CHECK(strstr(err.msg, "non-finite") && strstr(err.msg, n1), "message lacks \"%s\": %s", n1, err.msg);
    CHECK(!n2 || strstr(err.msg, n2), "message lacks \"%s\": %s", n2, err.msg);
    CHECK(dsv4_engine_seq_len(e, seq) == 0, "the failed step was committed (len %ld)", dsv4_engine_seq_len(e, seq));
    fprintf(stderr, "    -> %s\n", err.msg);
    free(logits);
    dsv4_engine_destroy(e);
}

static void test_nan_weights_fail_the_step(void) {
    const int32_t toks[4] = {5, 17, 42, 99};
    const int D = 256;
    uint16_t bnan[4] = {0x7FC0, 0x7FC0, 0x7FC0, 0x7FC0};
    /* a NaN in the embedding row of token 42 */
    fresh_copy();
    patch("embed.weight", (uint64_t)2 * D * 42 + 2 * 10, bnan, 2);
    expect_step_fails(toks, 4, "after the embedding", "row 2");
    /* a NaN in the LM head (row 7): every logit row is a dot product with it */
    fresh_copy();
    patch("head.weight", (uint64_t)2 * D * 7, bnan, 8);
    expect_step_fails(toks, 4, "LM head", NULL);
    /* an FP8 e4m3 NaN code (0x7F) in the shared expert of layer 2 */
    fresh_copy();
    uint8_t e4m3_nan[64];
    memset(e4m3_nan, 0x7F, sizeof e4m3_nan);
    patch("layers.2.ffn.shared_experts.w1.weight", 0, e4m3_nan, sizeof e4m3_nan);
    expect_step_fails(toks, 4, "layer 2 after moe", NULL);
    /* and in attention: wkv of layer 1 (the KV row is refused before the codec sees it) */
    fresh_copy();
    patch("layers.1.attn.wkv.weight", 0, e4m3_nan, sizeof e4m3_nan);
    expect_step_fails(toks, 4, "layer 1 in the attention KV", NULL);   /* the KV row, before it is stored */
}

/* A hash-routing table may name one expert twice for a token (the reference adds both contributions):
 * the MoE gather list (one entry per row) used to overflow (ASan, found by fuzz_checkpoint). Now the step
 * runs, logits are finite, and the second row of a duplicated token equals a lone row (same computation). */
static void test_tid2eid_duplicate_expert(void) {
    fresh_copy();
    int64_t dup[2] = {3, 3};   /* k = 2 */
    patch("layers.0.ffn.gate.tid2eid", (uint64_t)8 * 2 * 5, dup, sizeof dup);   /* token 5 */
    dsv4_engine_options o = {0};
    o.model_dir = dir;
    o.n_threads = 1;
    o.max_seqs = 1;
    o.max_tokens = 64;
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_engine_create(&o, &e, &err) == DSV4_OK, "create: %s", err.msg);
    if (!e) return;
    int seq;
    dsv4_engine_seq_open(e, &seq, &err);
    const int V = dsv4_engine_vocab_size(e);
    float *logits = calloc((size_t)V, sizeof(float));
    int32_t toks[6] = {5, 5, 5, 5, 5, 5};   /* 6 rows, 12 slots, all on expert 3: two gather passes */
    dsv4_batch_item it = {seq, toks, 6, 1};
    dsv4_status st = dsv4_engine_step(e, &it, 1, logits, &err);
    CHECK(st == DSV4_OK, "step: %s", err.msg);
    int finite = 1;
    for (int v = 0; v < V; v++) finite &= isfinite(logits[v]) != 0;
    CHECK(finite, "non-finite logits");
    CHECK(dsv4_engine_seq_len(e, seq) == 6, "len %ld", dsv4_engine_seq_len(e, seq));
    free(logits);
    dsv4_engine_destroy(e);
}

int main(void) {
    RUN(test_tid2eid_out_of_range);
    RUN(test_e8m0_nan_scale);
    RUN(test_nan_in_small_tensors);
    RUN(test_nan_weights_fail_the_step);
    RUN(test_tid2eid_duplicate_expert);
    dsv4_err err = {{0}};
    if (dir[0]) dsv4_remove_tree(dir, &err);
    return test_finish();
}

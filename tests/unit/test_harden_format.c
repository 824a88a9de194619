/* test_harden_format.c — issue 13, class "format rules": two tensors sharing bytes (the safetensors format
 * requires non-overlapping ranges) are refused; an empty tensor aliases nothing; max_position_embeddings is
 * enforced by the engine before any compute; a NUL byte inside a role, a tool-call name or a tool
 * definition's name is refused by the chat renderer instead of being cut silently. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsv4_files.h"
#include "core/status.h"
#include "dsv4.h"
#include "model/safetensors.h"
#include "test_util.h"
#include "dsv4_chat.h"

/* A safetensors image with the given header JSON and data_len bytes of data; caller frees. */
static uint8_t *image(const char *header, size_t data_len, size_t *size) {
    size_t hl = strlen(header);
    *size = 8 + hl + data_len;
    uint8_t *b = calloc(1, *size);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, header, hl);
    return b;
}

static dsv4_status parse(const char *header, size_t data_len, dsv4_err *err) {
    size_t size;
    uint8_t *b = image(header, data_len, &size);
    dsv4_st_file st;
    dsv4_status s = dsv4_st_file_parse(b, size, "img", &st, err);
    if (s == DSV4_OK) dsv4_st_file_close(&st);
    free(b);
    return s;
}

static void test_aliasing_tensors_refused(void) {
    dsv4_err err = {{0}};
    /* the same bytes under two names */
    dsv4_status s = parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                          "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 16, &err);
    CHECK(s == DSV4_ERR_FORMAT && strstr(err.msg, "overlap"), "identical ranges: %s", err.msg);
    /* a partial overlap */
    s = parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[12,20]}}", 20, &err);
    CHECK(s == DSV4_ERR_FORMAT && strstr(err.msg, "tensor b") && strstr(err.msg, "overlap tensor a"), "partial: %s",
          err.msg);
    /* one inside another */
    s = parse("{\"big\":{\"dtype\":\"I8\",\"shape\":[32],\"data_offsets\":[0,32]},"
              "\"small\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[8,12]}}", 32, &err);
    CHECK(s == DSV4_ERR_FORMAT && strstr(err.msg, "overlap"), "nested: %s", err.msg);
    fprintf(stderr, "    -> %s\n", err.msg);
    /* adjacent ranges and an empty tensor are fine */
    s = parse("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
              "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]},"
              "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}", 20, &err);
    CHECK(s == DSV4_OK, "adjacent: %s", err.msg);
}

/* A checkpoint whose config says max_position_embeddings = 8: a step reaching position 9 fails before any
 * compute with DSV4_ERR_CAPACITY, and the sequence is unchanged. */
static void test_max_position_enforced(void) {
    char dir[PATH_MAX] = "/tmp/dsv4_test_harden_format_XXXXXX";
    if (!mkdtemp(dir)) { perror("mkdtemp"); abort(); }
    char abs[PATH_MAX], from[PATH_MAX * 2], to[PATH_MAX * 2];
    if (!realpath("tests/data/tiny-flash", abs)) abort();
    static const char *files[] = {"model.safetensors.index.json", "model-00001-of-00003.safetensors",
                                  "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(from, sizeof from, "%s/%s", abs, files[i]);
        snprintf(to, sizeof to, "%s/%s", dir, files[i]);
        CHECK(symlink(from, to) == 0, "symlink");
    }
    json_t *cfg = json_load_file("tests/data/tiny-flash/config.json", 0, NULL);
    json_object_set_new(cfg, "max_position_embeddings", json_integer(8));
    snprintf(to, sizeof to, "%s/config.json", dir);
    json_dump_file(cfg, to, 0);
    json_decref(cfg);
    dsv4_engine_options o = {0};
    o.model_dir = dir;
    o.n_threads = 1;
    o.max_seqs = 1;
    o.max_tokens = 64;
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_engine_create(&o, &e, &err) == DSV4_OK, "create: %s", err.msg);
    if (e) {
        CHECK(dsv4_engine_max_positions(e) == 8, "max positions %ld", dsv4_engine_max_positions(e));
        int seq;
        CHECK(dsv4_engine_seq_open(e, &seq, &err) == DSV4_OK, "%s", err.msg);
        int32_t toks[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        float *logits = calloc((size_t)dsv4_engine_vocab_size(e), sizeof(float));
        dsv4_batch_item it = {seq, toks, 6, 1};
        CHECK(dsv4_engine_step(e, &it, 1, logits, &err) == DSV4_OK, "6 tokens: %s", err.msg);
        it = (dsv4_batch_item){seq, toks + 6, 3, 1};
        dsv4_status st = dsv4_engine_step(e, &it, 1, logits, &err);
        CHECK(st == DSV4_ERR_CAPACITY && strstr(err.msg, "max_position_embeddings = 8"), "9th position: %s: %s",
              dsv4_status_name(st), err.msg);
        CHECK(dsv4_engine_seq_len(e, seq) == 6, "len %ld after the refused step", dsv4_engine_seq_len(e, seq));
        it = (dsv4_batch_item){seq, toks + 6, 2, 1};
        CHECK(dsv4_engine_step(e, &it, 1, logits, &err) == DSV4_OK, "8th position: %s", err.msg);
        fprintf(stderr, "    -> %s\n", "a step to position 9 of 8 refused; to 8 accepted");
        free(logits);
        dsv4_engine_destroy(e);
    }
    dsv4_remove_tree(dir, &err);
}

static void expect_render_fails(const char *json, const char *needle) {
    json_error_t je;
    json_t *root = json_loads(json, JSON_ALLOW_NUL, &je);
    CHECK(root != NULL, "bad test JSON: %s", je.text);
    if (!root) return;
    json_t *msgs = json_is_object(root) ? json_object_get(root, "messages") : root;
    json_t *tools = json_is_object(root) ? json_object_get(root, "tools") : NULL;
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    dsv4_tok_buf out = {0};
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_chat_render(msgs, tools, &o, &out, &err);
    CHECK(st == DSV4_ERR_INVALID_ARG && strstr(err.msg, needle), "%s: %s", dsv4_status_name(st), err.msg);
    CHECK(out.len == 0, "output written on failure");
    fprintf(stderr, "    -> %s\n", err.msg);
    dsv4_tok_buf_free(&out);
    json_decref(root);
}

static void test_nul_in_names_refused(void) {
    expect_render_fails("[{\"role\":\"user\\u0000evil\",\"content\":\"hi\"}]", "role contains a NUL byte");
    expect_render_fails("[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"\","
                        "\"tool_calls\":[{\"type\":\"function\",\"function\":{\"name\":\"get\\u0000x\","
                        "\"arguments\":\"{}\"}}]}]",
                        "tool call name contains a NUL byte");
    expect_render_fails("{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
                        "\"function\":{\"name\":\"f\\u0000g\",\"parameters\":{}}}]}",
                        "tool name contains a NUL byte");
    expect_render_fails("[{\"role\":\"system\",\"content\":\"s\",\"tools\":[{\"type\":\"function\","
                        "\"function\":{\"name\":\"a\\u0000\"}}]},{\"role\":\"user\",\"content\":\"hi\"}]",
                        "tool name contains a NUL byte");
}

int main(void) {
    RUN(test_aliasing_tensors_refused);
    RUN(test_max_position_enforced);
    RUN(test_nul_in_names_refused);
    return test_finish();
}

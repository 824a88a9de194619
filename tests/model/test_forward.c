/* test_forward.c — properties of the batched CPU forward pass on the tiny released-format checkpoints:
 * prefill vs chunked prefill vs token-by-token decode give bitwise-identical logits; a sequence's logits do
 * not depend on the other sequences of its batch; admission beyond capacity and KV exhaustion fail cleanly
 * and leave the other sequences' results unchanged; releasing returns every block; bad token ids are
 * rejected without state change. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"
#include "test_util.h"

static const char *const models[] = {"tests/data/tiny-flash", "tests/data/tiny-pro"};

static dsv4_engine *open_engine(const char *model, int max_seqs, long max_tokens, int threads) {
    dsv4_engine_options o = {0};
    o.model_dir = model;
    o.max_seqs = max_seqs;
    o.max_tokens = max_tokens;
    o.n_threads = threads;
    dsv4_err err = {{0}};
    dsv4_engine *e = NULL;
    if (dsv4_engine_create(&o, &e, &err) != DSV4_OK) {
        CHECK(0, "engine create %s: %s", model, err.msg);
        return NULL;
    }
    return e;
}

/* Feeds tokens[0..T) in chunks of the given sizes (cycling), collecting the logits after each position
 * listed in want (a position's logits come from the chunk that ends there). Returns logits [T, vocab] with
 * rows only valid where a chunk ended. */
static void run_chunks(dsv4_engine *e, int seq, const int32_t *tokens, int T, const int *chunks, int n_chunks,
                       float *logits, unsigned char *have) {
    int vocab = dsv4_engine_vocab_size(e), pos = 0, ci = 0;
    dsv4_err err = {{0}};
    while (pos < T) {
        int n = chunks[ci++ % n_chunks];
        if (n > T - pos) n = T - pos;
        dsv4_batch_item it = {seq, tokens + pos, n, 1};
        dsv4_status st = dsv4_engine_step(e, &it, 1, logits + (size_t)(pos + n - 1) * vocab, &err);
        CHECK(st == DSV4_OK, "step at %d: %s", pos, err.msg);
        if (st != DSV4_OK) return;
        have[pos + n - 1] = 1;
        pos += n;
    }
}

/* Lengths crossing every boundary of the tiny models (ratios 4, 8, 16, window 128). */
static void test_prefill_chunked_decode_bitwise(void) {
    for (size_t mi = 0; mi < sizeof models / sizeof models[0]; mi++) {
        dsv4_engine *e = open_engine(models[mi], 3, 4096, 2);
        if (!e) return;
        const int T = 300, vocab = dsv4_engine_vocab_size(e);
        int32_t *tok = test_random_tokens(11 + mi, T, vocab);
        float *a = calloc((size_t)T * vocab, sizeof(float)), *b = calloc((size_t)T * vocab, sizeof(float)),
              *c = calloc((size_t)T * vocab, sizeof(float));
        unsigned char *ha = calloc(T, 1), *hb = calloc(T, 1), *hc = calloc(T, 1);
        int s1, s2, s3;
        dsv4_err err = {{0}};
        CHECK(dsv4_engine_seq_open(e, &s1, &err) == DSV4_OK, "%s", err.msg);
        CHECK(dsv4_engine_seq_open(e, &s2, &err) == DSV4_OK, "%s", err.msg);
        CHECK(dsv4_engine_seq_open(e, &s3, &err) == DSV4_OK, "%s", err.msg);
        int one[] = {1}, mixed[] = {5, 1, 122, 3, 129, 1, 1, 17}, whole[] = {257, 1};
        run_chunks(e, s1, tok, T, one, 1, a, ha);
        run_chunks(e, s2, tok, T, mixed, 8, b, hb);
        run_chunks(e, s3, tok, T, whole, 2, c, hc);
        int compared = 0;
        for (int p = 0; p < T; p++) {
            if (hb[p]) {
                compared++;
                CHECK(memcmp(a + (size_t)p * vocab, b + (size_t)p * vocab, sizeof(float) * vocab) == 0,
                      "%s: chunked vs decode differ at position %d", models[mi], p);
            }
            if (hc[p])
                CHECK(memcmp(a + (size_t)p * vocab, c + (size_t)p * vocab, sizeof(float) * vocab) == 0,
                      "%s: prefill vs decode differ at position %d", models[mi], p);
        }
        CHECK(compared >= 10, "compared %d positions", compared);
        for (int p = 0; p < T; p++)
            for (int v = 0; v < vocab; v++) CHECK(isfinite(a[(size_t)p * vocab + v]), "non-finite logit");
        free(a); free(b); free(c); free(ha); free(hb); free(hc); free(tok);
        dsv4_engine_destroy(e);
    }
}

/* A sequence's logits are bitwise the same alone and in a batch with others (prefills + decodes mixed). */
static void test_batch_independence(void) {
    dsv4_engine *e = open_engine(models[0], 4, 8192, 2);
    if (!e) return;
    const int vocab = dsv4_engine_vocab_size(e), T = 150;
    int32_t *t0 = test_random_tokens(21, T, vocab), *t1 = test_random_tokens(22, T, vocab),
            *t2 = test_random_tokens(23, T, vocab);
    float *alone = malloc(sizeof(float) * (size_t)T * vocab), *batched = malloc(sizeof(float) * 3 * vocab);
    dsv4_err err = {{0}};
    int s;
    CHECK(dsv4_engine_seq_open(e, &s, &err) == DSV4_OK, "%s", err.msg);
    dsv4_batch_item it = {s, t0, 40, 1};
    CHECK(dsv4_engine_step(e, &it, 1, alone + 39 * (size_t)vocab, &err) == DSV4_OK, "%s", err.msg);
    for (int p = 40; p < T; p++) {
        it = (dsv4_batch_item){s, t0 + p, 1, 1};
        CHECK(dsv4_engine_step(e, &it, 1, alone + (size_t)p * vocab, &err) == DSV4_OK, "%s", err.msg);
    }
    dsv4_engine_seq_close(e, s);
    /* Same sequence, now batched with two others doing different things each step. */
    int a, b, c;
    CHECK(dsv4_engine_seq_open(e, &b, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_engine_seq_open(e, &a, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_engine_seq_open(e, &c, &err) == DSV4_OK, "%s", err.msg);
    dsv4_batch_item first[3] = {{b, t1, 7, 1}, {a, t0, 40, 1}, {c, t2, 130, 0}};
    float out3[3 * 512];
    CHECK(vocab <= 512, "vocab");
    CHECK(dsv4_engine_step(e, first, 3, out3, &err) == DSV4_OK, "%s", err.msg);
    CHECK(memcmp(out3 + vocab, alone + 39 * (size_t)vocab, sizeof(float) * vocab) == 0, "batched prefill differs");
    long pb = 7, pc = 130;
    for (int p = 40; p < T && pc < T; p++) {
        dsv4_batch_item items[3];
        int n = 0, want_a;
        items[n++] = (dsv4_batch_item){c, t2 + pc, 1, 1}, pc++;
        want_a = n;
        items[n++] = (dsv4_batch_item){a, t0 + p, 1, 1};
        if (pb + 3 <= T) { items[n++] = (dsv4_batch_item){b, t1 + pb, 3, 1}; pb += 3; }
        CHECK(dsv4_engine_step(e, items, n, batched, &err) == DSV4_OK, "%s", err.msg);
        CHECK(memcmp(batched + (size_t)want_a * vocab, alone + (size_t)p * vocab, sizeof(float) * vocab) == 0,
              "batched decode differs at position %d", p);
    }
    free(t0); free(t1); free(t2); free(alone); free(batched);
    dsv4_engine_destroy(e);
}

/* Capacity: too many sequences, or more tokens than the KV pool holds, fail with CAPACITY and leave the
 * other sequences' state and results unchanged; closing returns every block. Bad token ids are rejected. */
static void test_capacity_and_bad_input(void) {
    dsv4_engine *ref = open_engine(models[0], 2, 1024, 1);
    dsv4_engine *e = open_engine(models[0], 2, 600, 1);
    if (!e || !ref) return;
    const int vocab = dsv4_engine_vocab_size(e);
    int32_t *t = test_random_tokens(31, 400, vocab), *big = test_random_tokens(32, 900, vocab);
    float *l1 = malloc(sizeof(float) * vocab), *l2 = malloc(sizeof(float) * vocab), *scratch = malloc(sizeof(float) * 2 * vocab);
    dsv4_err err = {{0}};
    int a, b, c, r;
    CHECK(dsv4_engine_seq_open(e, &a, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_engine_seq_open(e, &b, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_engine_seq_open(e, &c, &err) == DSV4_ERR_CAPACITY, "third sequence must not fit: %s", err.msg);
    dsv4_batch_item it = {a, t, 200, 1};
    CHECK(dsv4_engine_step(e, &it, 1, l1, &err) == DSV4_OK, "%s", err.msg);
    /* b asks for more than what is left: CAPACITY, and a's next step still equals the reference. */
    dsv4_batch_item both[2] = {{a, t + 200, 1, 1}, {b, big, 900, 1}};
    dsv4_status st = dsv4_engine_step(e, both, 2, scratch, &err);
    CHECK(st == DSV4_ERR_CAPACITY, "expected CAPACITY, got %d (%s)", st, err.msg);
    CHECK(dsv4_engine_seq_len(e, a) == 200 && dsv4_engine_seq_len(e, b) == 0, "positions unchanged after failure");
    /* Bad token id: INVALID_ARG, nothing changes. */
    int32_t bad = vocab + 5;
    dsv4_batch_item badit[2] = {{a, t + 200, 1, 1}, {b, &bad, 1, 1}};
    CHECK(dsv4_engine_step(e, badit, 2, scratch, &err) == DSV4_ERR_INVALID_ARG, "bad token id accepted");
    CHECK(strstr(err.msg, "token id") != NULL, "message names the token id: %s", err.msg);
    it = (dsv4_batch_item){a, t + 200, 1, 1};
    CHECK(dsv4_engine_step(e, &it, 1, l1, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_engine_seq_open(ref, &r, &err) == DSV4_OK, "%s", err.msg);
    it = (dsv4_batch_item){r, t, 200, 1};
    CHECK(dsv4_engine_step(ref, &it, 1, l2, &err) == DSV4_OK, "%s", err.msg);
    it = (dsv4_batch_item){r, t + 200, 1, 1};
    CHECK(dsv4_engine_step(ref, &it, 1, l2, &err) == DSV4_OK, "%s", err.msg);
    CHECK(memcmp(l1, l2, sizeof(float) * vocab) == 0, "a's logits changed by b's failed step");
    /* Closing and reopening: the slot is reusable and starts from a clean state. */
    dsv4_engine_seq_close(e, a);
    dsv4_engine_seq_close(e, b);
    CHECK(dsv4_engine_seq_open(e, &a, &err) == DSV4_OK, "%s", err.msg);
    it = (dsv4_batch_item){a, t, 200, 1};
    CHECK(dsv4_engine_step(e, &it, 1, l1, &err) == DSV4_OK, "%s", err.msg);
    it = (dsv4_batch_item){a, t + 200, 1, 1};
    CHECK(dsv4_engine_step(e, &it, 1, l1, &err) == DSV4_OK, "%s", err.msg);
    CHECK(memcmp(l1, l2, sizeof(float) * vocab) == 0, "reused slot gives different logits (state not reset)");
    int closed = (a == b) ? -1 : b; /* the slot not reopened */
    if (closed >= 0) {
        CHECK(dsv4_engine_step(e, &(dsv4_batch_item){closed, t, 1, 1}, 1, l1, &err) == DSV4_ERR_INVALID_ARG,
              "closed sequence accepted");
        CHECK(dsv4_engine_seq_len(e, closed) == -1, "closed sequence has a length");
    }
    CHECK(dsv4_engine_step(e, &(dsv4_batch_item){1000, t, 1, 1}, 1, l1, &err) == DSV4_ERR_INVALID_ARG,
          "unknown sequence accepted");
    free(t); free(big); free(l1); free(l2); free(scratch);
    dsv4_engine_destroy(e);
    dsv4_engine_destroy(ref);
}

int main(void) {
    RUN(test_prefill_chunked_decode_bitwise);
    RUN(test_batch_independence);
    RUN(test_capacity_and_bad_input);
    return test_finish();
}

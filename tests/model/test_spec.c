/* test_spec.c — the MTP draft head and greedy speculative decoding on the CPU reference (issue 15), on the
 * tiny released-format checkpoints:
 *  - MTP logits do not depend on how the tokens were split into steps (bitwise);
 *  - greedy speculative decoding (k = 1..3) gives the plain greedy tokens, bitwise, both with the MTP's
 *    own drafts (which a random model rarely gets right) and with drafts forced to be right up to a random
 *    point (every acceptance count 0..k occurs);
 *  - after it, the KV state (position, MTP position, block table, every byte of the slot and of the held
 *    blocks, the saved last hidden state) is bitwise that of a run that fed only the accepted tokens;
 *  - two sequences decoded together (different lengths and acceptance) get the same tokens and states;
 *  - the public engine calls agree with plain greedy decoding and refuse a sequence fed without the MTP. */
#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "dsv4.h"
#include "engine/forward.h"
#include "engine/kv_access.h"
#include "engine/model.h"
#include "engine/spec.h"
#include "test_util.h"

static const char *const models[] = {"tests/data/tiny-flash", "tests/data/tiny-pro"};

typedef struct rig {
    dsv4_model *m;
    dsv4_threadpool *pool;
    dsv4_forward *f;
    dsv4_kv_manager *kv;
    float *last_h;  /* [hc*D] of slot 0 */
    int slot;
} rig;

static int rig_open(rig *r, const char *dir) {
    dsv4_err err = {{0}};
    memset(r, 0, sizeof *r);
    if (dsv4_model_load(dir, &r->m, &err) != DSV4_OK || dsv4_threadpool_create(2, &r->pool, &err) != DSV4_OK ||
        dsv4_kv_access_create(r->m->cfg, 2, 4096, &r->kv, &err) != DSV4_OK ||
        dsv4_forward_create(r->m, r->pool, &r->f, &err) != DSV4_OK ||
        dsv4_kv_access_admit(r->kv, &r->slot, &err) != DSV4_OK) {
        CHECK(0, "%s: %s", dir, err.msg);
        return 0;
    }
    r->last_h = calloc((size_t)r->m->cfg->hc_mult * r->m->cfg->dim, sizeof(float));
    return 1;
}

static void rig_close(rig *r) {
    dsv4_forward_destroy(r->f);
    if (r->kv) dsv4_kv_access_destroy(r->kv);
    dsv4_threadpool_destroy(r->pool);
    dsv4_model_free(r->m);
    free(r->last_h);
}

/* Feeds tokens through the MTP step in chunks (cycling sizes); mtp [T-1, V] gets every MTP row, logits
 * [V] the main logits of the last token. */
static int feed_slot(rig *r, int slot, float *last_h, const int32_t *tok, int T, const int *chunks, int n_chunks,
                     float *mtp, float *logits) {
    const int V = r->m->cfg->vocab_size;
    float *main_l = malloc(sizeof(float) * (size_t)V);
    int pos = 0, ci = 0, rows = 0, ok = 1;
    while (pos < T && ok) {
        int n = chunks[ci++ % n_chunks];
        if (n > T - pos) n = T - pos;
        dsv4_seq_step s = {slot, tok + pos, n, 1};
        float *lh[1] = {last_h};
        int got = 0;
        dsv4_err err = {{0}};
        dsv4_status st = dsv4_spec_step(r->f, r->kv, &s, 1, lh, main_l, mtp ? mtp + (size_t)rows * V : NULL, &got, &err);
        CHECK(st == DSV4_OK, "spec step at %d: %s", pos, err.msg);
        ok = st == DSV4_OK;
        rows += got;
        pos += n;
    }
    CHECK(!ok || rows == T - 1, "%d MTP rows for %d tokens", rows, T);
    if (logits) memcpy(logits, main_l, sizeof(float) * (size_t)V);
    free(main_l);
    return ok;
}

static int feed(rig *r, const int32_t *tok, int T, const int *chunks, int n_chunks, float *mtp, float *logits) {
    return feed_slot(r, r->slot, r->last_h, tok, T, chunks, n_chunks, mtp, logits);
}

static void test_mtp_chunk_invariance(void) {
    for (size_t mi = 0; mi < 2; mi++) {
        rig a, b, c;
        if (!rig_open(&a, models[mi]) || !rig_open(&b, models[mi]) || !rig_open(&c, models[mi])) return;
        const int T = 140, V = a.m->cfg->vocab_size; /* past the MTP's 128-slot window */
        int32_t *tok = test_random_tokens(5 + mi, T, V);
        float *ma = malloc(sizeof(float) * (size_t)T * V), *mb = malloc(sizeof(float) * (size_t)T * V),
              *mc = malloc(sizeof(float) * (size_t)T * V);
        int whole[] = {T}, one[] = {1}, mixed[] = {3, 1, 120, 2, 7};
        feed(&a, tok, T, whole, 1, ma, NULL);
        feed(&b, tok, T, one, 1, mb, NULL);
        feed(&c, tok, T, mixed, 5, mc, NULL);
        CHECK(memcmp(ma, mb, sizeof(float) * (size_t)(T - 1) * V) == 0, "%s: prefill vs decode MTP logits", models[mi]);
        CHECK(memcmp(ma, mc, sizeof(float) * (size_t)(T - 1) * V) == 0, "%s: prefill vs chunked MTP logits", models[mi]);
        free(tok); free(ma); free(mb); free(mc);
        rig_close(&a); rig_close(&b); rig_close(&c);
    }
}

/* Every byte of a sequence's state, compared between two managers. */
/* same_ids = 0: blocks are compared by content in table order (their ids depend on the order in which
 * sequences sharing a pool took them). */
static void check_slot_state(rig *x, int xs, const float *xh, rig *y, int ys, const float *yh, int same_ids,
                             const char *what);

static void check_same_state(rig *x, rig *y, const char *what) {
    check_slot_state(x, x->slot, x->last_h, y, y->slot, y->last_h, 1, what);
}

static void check_slot_state(rig *x, int xs, const float *xh, rig *y, int ys, const float *yh, int same_ids,
                             const char *what) {
    CHECK(dsv4_kv_manager_pos(x->kv, xs) == dsv4_kv_manager_pos(y->kv, ys), "%s: position %lld vs %lld",
          what, (long long)dsv4_kv_manager_pos(x->kv, xs), (long long)dsv4_kv_manager_pos(y->kv, ys));
    CHECK(dsv4_kv_manager_mtp_pos(x->kv, xs) == dsv4_kv_manager_mtp_pos(y->kv, ys), "%s: MTP position", what);
    CHECK(dsv4_kv_manager_seq_blocks(x->kv, xs) == dsv4_kv_manager_seq_blocks(y->kv, ys), "%s: blocks", what);
    CHECK(dsv4_kv_manager_free_blocks(x->kv) == dsv4_kv_manager_free_blocks(y->kv), "%s: free blocks", what);
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(x->kv);
    dsv4_kv_layer_view vx, vy;
    dsv4_kv_manager_view(x->kv, xs, 0, &vx, NULL);
    dsv4_kv_manager_view(y->kv, ys, 0, &vy, NULL);
    CHECK(memcmp(vx.ring - s->layer[0].ring_off, vy.ring - s->layer[0].ring_off, s->slot_bytes) == 0,
          "%s: slot bytes (rings, compressor state) differ", what);
    int ratio_layer = -1;
    for (int l = 0; l < s->n_layers; l++)
        if (s->layer[l].ratio) ratio_layer = l;
    if (ratio_layer >= 0) {
        dsv4_kv_manager_view(x->kv, xs, ratio_layer, &vx, NULL);
        dsv4_kv_manager_view(y->kv, ys, ratio_layer, &vy, NULL);
        int same = vx.n_blocks == vy.n_blocks;
        for (int64_t b = 0; same && b < vx.n_blocks; b++)
            same = (!same_ids || vx.block_table[b] == vy.block_table[b]) &&
                   memcmp(vx.block_arena + (size_t)vx.block_table[b] * vx.block_bytes,
                          vy.block_arena + (size_t)vy.block_table[b] * vy.block_bytes, vx.block_bytes) == 0;
        CHECK(same, "%s: block table or block bytes differ", what);
    }
    size_t hd = (size_t)x->m->cfg->hc_mult * x->m->cfg->dim;
    CHECK(memcmp(xh, yh, sizeof(float) * hd) == 0, "%s: saved last hidden state", what);
}

typedef struct forced {
    const int32_t *truth;   /* token at each position of the plain greedy run */
    long n_truth;
    int vocab;
    test_rng rng;
    long hist[DSV4_SPEC_MAX_DRAFT + 1];
} forced;

/* Drafts right up to a random point, then one wrong token. */
static void force_drafts(void *user, int slot, long pos, int32_t first, int k, int32_t *d) {
    forced *fd = (forced *)user + slot;
    (void)first;
    int good = (int)(test_rng_u64(&fd->rng) % (uint64_t)(k + 1));
    for (int j = 0; j < k; j++) {
        long p = pos + 1 + j;
        int32_t t = p < fd->n_truth ? fd->truth[p] : 0;
        d[j] = j < good ? t : (t + 1) % fd->vocab;
    }
    fd->hist[good]++;
}

static void test_spec_equals_plain(void) {
    for (size_t mi = 0; mi < 2; mi++) {
        rig plain, base;
        if (!rig_open(&plain, models[mi]) || !rig_open(&base, models[mi])) return;
        const int Tp = 100, n = 36, V = plain.m->cfg->vocab_size; /* decoding crosses 128 and every ratio */
        int32_t *all = test_random_tokens(100 + mi, Tp + n + 1, V);
        float *lg = malloc(sizeof(float) * (size_t)V);
        int32_t *want = malloc(sizeof(int32_t) * n), *got = malloc(sizeof(int32_t) * n);
        dsv4_err err = {{0}};
        /* Plain: prefill, then one token per forward. */
        dsv4_seq_step s = {plain.slot, all, Tp, 1};
        CHECK(dsv4_forward_step(plain.f, plain.kv, &s, 1, lg, &err) == DSV4_OK, "%s", err.msg);
        int32_t first = test_argmax_f(lg, V), cur = first;
        all[Tp] = first;
        for (int i = 0; i < n; i++) {
            s = (dsv4_seq_step){plain.slot, &cur, 1, 1};
            CHECK(dsv4_forward_step(plain.f, plain.kv, &s, 1, lg, &err) == DSV4_OK, "%s", err.msg);
            want[i] = cur = test_argmax_f(lg, V);
            all[Tp + 1 + i] = cur; /* the plain sequence: prompt, first, outputs */
        }
        /* The state a run that fed exactly the accepted tokens (prompt, first, outputs but the last) has. */
        int mixed[] = {Tp - 3, 1, 2, 5};
        feed(&base, all, Tp + n, mixed, 4, NULL, NULL);
        for (int k = 1; k <= DSV4_SPEC_MAX_DRAFT; k++) {
            for (int mode = 0; mode < 2; mode++) { /* 0: the MTP's own drafts, 1: forced drafts */
                rig spec;
                if (!rig_open(&spec, models[mi])) return;
                int whole[] = {Tp};
                feed(&spec, all, Tp, whole, 1, NULL, lg);
                CHECK(test_argmax_f(lg, V) == first, "prefill through the MTP step changes the logits");
                forced fd = {all, Tp + n + 1, V, {0}, {0}};
                test_rng_seed(&fd.rng, 7 + (uint64_t)k);
                dsv4_spec_stats st;
                float *lh[1] = {spec.last_h};
                dsv4_status rc = dsv4_spec_decode_greedy(spec.f, spec.kv, 1, &spec.slot, lh, &first, n, k, got, &st,
                                                        mode ? force_drafts : NULL, &fd, &err);
                CHECK(rc == DSV4_OK, "spec decode: %s", err.msg);
                CHECK(memcmp(want, got, sizeof(int32_t) * n) == 0, "%s k=%d mode %d: speculative tokens differ from "
                      "plain greedy", models[mi], k, mode);
                if (mode) {
                    CHECK(st.accepted > 0 && st.steps < n, "%s k=%d: forced drafts accepted %ld in %ld rounds",
                          models[mi], k, st.accepted, st.steps);
                    for (int a = 0; a <= k; a++)
                        CHECK(fd.hist[a] > 0, "%s k=%d: acceptance count %d never exercised", models[mi], k, a);
                }
                char what[128];
                snprintf(what, sizeof what, "%s k=%d mode %d", models[mi], k, mode);
                check_same_state(&spec, &base, what);
                rig_close(&spec);
            }
        }
        free(all); free(lg); free(want); free(got);
        rig_close(&plain); rig_close(&base);
    }
}

/* Two sequences of different lengths decoded together, drafts forced right up to a random point chosen
 * per sequence: each gets its plain greedy tokens and ends in the state of a run that fed only its
 * accepted tokens. */
static void test_spec_batch(void) {
    for (size_t mi = 0; mi < 2; mi++) {
        rig plain, base, spec;
        if (!rig_open(&plain, models[mi]) || !rig_open(&base, models[mi]) || !rig_open(&spec, models[mi])) return;
        const int V = plain.m->cfg->vocab_size, n = 30, Tp[2] = {100, 37};
        const size_t hd = (size_t)plain.m->cfg->hc_mult * plain.m->cfg->dim;
        dsv4_err err = {{0}};
        int slots[2] = {spec.slot, -1}, bslot1 = -1, pslot1 = -1;
        CHECK(dsv4_kv_access_admit(spec.kv, &slots[1], &err) == DSV4_OK && dsv4_kv_access_admit(base.kv, &bslot1, &err) ==
              DSV4_OK && dsv4_kv_access_admit(plain.kv, &pslot1, &err) == DSV4_OK, "%s", err.msg);
        float *lh_spec[2] = {spec.last_h, calloc(hd, sizeof(float))}, *lh_base1 = calloc(hd, sizeof(float));
        float *lg = malloc(sizeof(float) * (size_t)V);
        int32_t *all[2], first[2], want[2][30], got[2 * 30];
        forced fd[2];
        for (int q = 0; q < 2; q++) {
            int ps = q ? pslot1 : plain.slot;
            all[q] = test_random_tokens(500 + mi * 2 + q, Tp[q] + n + 1, V);
            dsv4_seq_step s = {ps, all[q], Tp[q], 1};
            CHECK(dsv4_forward_step(plain.f, plain.kv, &s, 1, lg, &err) == DSV4_OK, "%s", err.msg);
            int32_t cur = first[q] = test_argmax_f(lg, V);
            all[q][Tp[q]] = cur;
            for (int i = 0; i < n; i++) {
                s = (dsv4_seq_step){ps, &cur, 1, 1};
                CHECK(dsv4_forward_step(plain.f, plain.kv, &s, 1, lg, &err) == DSV4_OK, "%s", err.msg);
                want[q][i] = all[q][Tp[q] + 1 + i] = cur = test_argmax_f(lg, V);
            }
            fd[q] = (forced){all[q], Tp[q] + n + 1, V, {0}, {0}};
            test_rng_seed(&fd[q].rng, 31 + (uint64_t)q);
            int whole[] = {Tp[q]};
            feed_slot(&spec, slots[q], lh_spec[q], all[q], Tp[q], whole, 1, NULL, lg);
            CHECK(test_argmax_f(lg, V) == first[q], "prefill through the MTP step changes the logits");
        }
        int ones[] = {7, 1, 3};
        feed_slot(&base, base.slot, base.last_h, all[0], Tp[0] + n, ones, 3, NULL, NULL);
        feed_slot(&base, bslot1, lh_base1, all[1], Tp[1] + n, ones, 3, NULL, NULL);
        dsv4_spec_stats st[2];
        CHECK(dsv4_spec_decode_greedy(spec.f, spec.kv, 2, slots, lh_spec, first, n, 3, got, st, force_drafts, fd,
                                      &err) == DSV4_OK, "%s", err.msg);
        for (int q = 0; q < 2; q++) {
            int same = 1;
            for (int i = 0; i < n; i++) same &= got[i * 2 + q] == want[q][i];
            CHECK(same, "%s: batched sequence %d differs from its plain greedy tokens", models[mi], q);
            CHECK(st[q].accepted > 0, "%s: sequence %d accepted nothing", models[mi], q);
        }
        CHECK(st[0].steps != st[1].steps || st[0].accepted != st[1].accepted, "both sequences accepted alike");
        check_slot_state(&spec, slots[0], lh_spec[0], &base, base.slot, base.last_h, 0, "batch sequence 0");
        check_slot_state(&spec, slots[1], lh_spec[1], &base, bslot1, lh_base1, 0, "batch sequence 1");
        for (int q = 0; q < 2; q++) free(all[q]);
        free(lh_spec[1]); free(lh_base1); free(lg);
        rig_close(&plain); rig_close(&base); rig_close(&spec);
    }
}

static void test_engine_api(void) {
    dsv4_engine_options o = {0};
    o.model_dir = models[0];
    o.max_seqs = 2;
    o.max_tokens = 2048;
    o.n_threads = 2;
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    if (dsv4_engine_create(&o, &e, &err) != DSV4_OK) { CHECK(0, "%s", err.msg); return; }
    const int V = dsv4_engine_vocab_size(e), Tp = 20, n = 12;
    int32_t *tok = test_random_tokens(3, Tp, V);
    float *lg = malloc(sizeof(float) * (size_t)V), *mtp = malloc(sizeof(float) * (size_t)Tp * V);
    int a, b, rows = 0;
    CHECK(dsv4_engine_seq_open(e, &a, &err) == DSV4_OK && dsv4_engine_seq_open(e, &b, &err) == DSV4_OK, "%s", err.msg);
    dsv4_batch_item it = {a, tok, Tp, 1};
    CHECK(dsv4_engine_step(e, &it, 1, lg, &err) == DSV4_OK, "%s", err.msg);
    int32_t first = test_argmax_f(lg, V), want[12], got[12];
    CHECK(dsv4_engine_decode_greedy(e, &a, 1, &first, n, want, NULL, &err) == DSV4_OK, "%s", err.msg);
    it = (dsv4_batch_item){b, tok, Tp, 1};
    CHECK(dsv4_engine_step_mtp(e, &it, 1, lg, mtp, &rows, &err) == DSV4_OK && rows == Tp - 1, "%s rows %d", err.msg, rows);
    dsv4_spec_info info;
    CHECK(dsv4_engine_decode_greedy_spec(e, &b, 1, &first, n, 2, got, &info, &err) == DSV4_OK, "%s", err.msg);
    CHECK(memcmp(want, got, sizeof want) == 0, "engine: speculative tokens differ from plain greedy");
    CHECK(info.rounds > 0 && info.drafted >= info.accepted, "engine: info %ld %ld %ld", info.rounds, info.drafted,
          info.accepted);
    /* Sequence a was fed without the MTP: refused, nothing changed. */
    long len = dsv4_engine_seq_len(e, a);
    CHECK(dsv4_engine_decode_greedy_spec(e, &a, 1, &first, 2, 1, got, NULL, &err) == DSV4_ERR_INVALID_ARG,
          "out-of-sync sequence accepted");
    CHECK(dsv4_engine_seq_len(e, a) == len, "refused call changed the sequence");
    CHECK(dsv4_engine_decode_greedy_spec(e, &b, 1, &first, 2, 4, got, NULL, &err) == DSV4_ERR_INVALID_ARG, "k = 4 accepted");
    /* A bad token in an MTP step fails without changing the sequence (main or MTP state). */
    len = dsv4_engine_seq_len(e, b);
    int32_t bad_tok[2] = {1, V};
    it = (dsv4_batch_item){b, bad_tok, 2, 1};
    CHECK(dsv4_engine_step_mtp(e, &it, 1, lg, mtp, &rows, &err) == DSV4_ERR_INVALID_ARG, "bad token accepted");
    CHECK(dsv4_engine_seq_len(e, b) == len, "failed MTP step changed the sequence");
    CHECK(dsv4_engine_decode_greedy_spec(e, &b, 1, &first, 2, 1, got, NULL, &err) == DSV4_OK,
          "sequence unusable after a refused step: %s", err.msg);
    /* Sequence a is out of MTP sync: the MTP step refuses it too. */
    it = (dsv4_batch_item){a, tok, 1, 1};
    CHECK(dsv4_engine_step_mtp(e, &it, 1, lg, mtp, &rows, &err) == DSV4_ERR_INVALID_ARG, "out-of-sync MTP step");
    free(tok); free(lg); free(mtp);
    dsv4_engine_destroy(e);
}

int main(void) {
    RUN(test_mtp_chunk_invariance);
    RUN(test_spec_equals_plain);
    RUN(test_spec_batch);
    RUN(test_engine_api);
    return test_finish();
}

/* test_kv_manager.c — the request-level KV manager (kv_manager.h): block-table growth across 1, 127,
 * 128, 129, 255, 256, 257 tokens (Flash and tiny configs), prepare_step all-or-nothing (CAPACITY names
 * the sequence, nothing moves, other sequences' data intact), release returns every block and slot,
 * slot reuse resets compressor state and rings, views of different sequences address disjoint memory,
 * commit needs prepared blocks, admission limits, pool size derived from max_total_tokens. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/quant.h"
#include "kv/kv_codec.h"
#include "kv/kv_manager.h"
#include "test_kv_configs.h"
#include "test_util.h"

static dsv4_kv_manager *make(void (*cfgfn)(dsv4_config *), int max_req, int64_t n_blocks, int64_t max_seq) {
    dsv4_config c;
    cfgfn(&c);
    dsv4_kv_manager_params p = {0};
    p.max_requests = max_req;
    p.n_blocks = n_blocks;
    p.max_seq_len = max_seq;
    dsv4_kv_manager *m = NULL;
    dsv4_err err;
    dsv4_status st = dsv4_kv_manager_create(&c, &p, &m, &err);
    CHECK(st == DSV4_OK, "create: %s", err.msg);
    return m;
}

static dsv4_status grow(dsv4_kv_manager *m, int slot, int64_t n, int *failed) {
    dsv4_kv_step_seq s = {slot, n};
    dsv4_err err;
    dsv4_status st = dsv4_kv_manager_prepare_step(m, &s, 1, failed, &err);
    if (st == DSV4_OK) st = dsv4_kv_manager_commit(m, slot, n, &err);
    return st;
}

/* ---- growth ------------------------------------------------------------------------------------- */
static void growth_on(void (*cfgfn)(dsv4_config *), const char *name) {
    dsv4_kv_manager *m = make(cfgfn, 2, 8, 4096);
    if (!m) return;
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(m);
    dsv4_err err;
    int slot = -1;
    CHECK(dsv4_kv_manager_admit(m, 0, &slot, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_seq_blocks(m, slot) == 0, "no blocks before any token");
    const int64_t Ts[] = {1, 127, 128, 129, 255, 256, 257};
    printf("  %s (block %d tokens, min ratio %d):", name, s->block_tokens, s->min_ratio);
    int64_t prev_pos = 0;
    int32_t first_ids[8];
    int n_first = 0;
    for (int i = 0; i < 7; i++) {
        int failed = -2;
        CHECK(grow(m, slot, Ts[i] - prev_pos, &failed) == DSV4_OK && failed == -1, "grow to %lld", (long long)Ts[i]);
        prev_pos = Ts[i];
        int64_t nb = dsv4_kv_manager_seq_blocks(m, slot);
        /* Expected: entries of the smallest ratio decide (ceil(floor(T/4)/32) on Flash and tiny). */
        int64_t want = (Ts[i] / s->min_ratio + s->block_tokens / s->min_ratio - 1) / (s->block_tokens / s->min_ratio);
        CHECK(nb == want, "T=%lld: %lld blocks, want %lld", (long long)Ts[i], (long long)nb, (long long)want);
        CHECK(dsv4_kv_manager_pos(m, slot) == Ts[i], "position");
        printf(" T=%lld:%lld", (long long)Ts[i], (long long)nb);
        for (int l = 0; l < s->n_layers; l++) {
            dsv4_kv_layer_view v;
            CHECK(dsv4_kv_manager_view(m, slot, l, &v, &err) == DSV4_OK, "%s", err.msg);
            CHECK(v.pos == Ts[i] && v.n_ring_valid == (Ts[i] < s->window ? Ts[i] : s->window), "ring valid");
            if (v.ratio == 0) {
                CHECK(v.n_blocks == 0 && v.block_table == NULL && v.cap_entries == 0, "SWA has no blocks");
                continue;
            }
            CHECK(v.n_entries == Ts[i] / v.ratio, "layer %d entries %lld", l, (long long)v.n_entries);
            CHECK(v.cap_entries >= v.n_entries && v.cap_entries == nb * v.entries_per_block, "capacity");
        }
        /* Blocks already handed out never move. */
        int cl = 0;
        while (s->layer[cl].ratio == 0) cl++; /* first compressed layer */
        dsv4_kv_layer_view v;
        dsv4_kv_manager_view(m, slot, cl, &v, &err);
        const int32_t *tab = v.block_table;
        if (tab) {
            for (int k = 0; k < n_first; k++) CHECK(tab[k] == first_ids[k], "block %d stayed", k);
            for (int64_t k = n_first; k < nb; k++) first_ids[k] = tab[k];
            n_first = (int)nb;
        }
    }
    printf("\n");
    /* The host block tables agree with the views. */
    int64_t stride = 0;
    const int32_t *tables = dsv4_kv_manager_block_tables(m, &stride);
    CHECK(stride == dsv4_kv_schema_blocks_for_tokens(s, 4096), "table stride %lld", (long long)stride);
    for (int k = 0; k < n_first; k++) CHECK(tables[(size_t)slot * stride + k] == first_ids[k], "table entry %d", k);
    CHECK(tables[(size_t)slot * stride + n_first] == -1, "unused entries are -1");
    CHECK(dsv4_kv_manager_release(m, slot, &err) == DSV4_OK, "%s", err.msg);
    for (int k = 0; k < n_first; k++) CHECK(tables[(size_t)slot * stride + k] == -1, "released entries are -1");
    CHECK(dsv4_kv_manager_free_blocks(m) == 8, "all back");
    dsv4_kv_manager_destroy(m);
}

static void test_growth_flash(void) { growth_on(kvtest_config_flash, "flash"); }
static void test_growth_tiny(void) { growth_on(kvtest_config_tiny, "tiny"); }

/* ---- helpers to write recognizable data through views -------------------------------------------- */
static void make_entry(const dsv4_kv_entry_fmt *f, uint64_t seed, float *x) {
    test_rng r;
    test_rng_seed(&r, seed);
    test_fill_bf16(&r, x, (size_t)(f->nope + f->rope), 0.5);
    dsv4_cpu_fake_quant_fp8(x, (size_t)f->nope, 64);
}

/* Writes entry w of every compressed layer (and ring slot / indexer key) of slot with seed-derived data. */
static void write_all(dsv4_kv_manager *m, int slot, uint64_t tag) {
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(m);
    float x[1024];
    dsv4_err err;
    for (int l = 0; l < s->n_layers; l++) {
        dsv4_kv_layer_view v;
        CHECK(dsv4_kv_manager_view(m, slot, l, &v, &err) == DSV4_OK, "%s", err.msg);
        for (int t = 0; t < v.window; t++) {
            make_entry(v.entry_fmt, tag * 1000003 + (uint64_t)l * 7919 + (uint64_t)t, x);
            CHECK(dsv4_kv_entry_encode(v.entry_fmt, x, dsv4_kv_view_ring_entry(&v, t), &err) == DSV4_OK, "%s", err.msg);
        }
        for (int64_t w = 0; w < v.cap_entries; w++) {
            make_entry(v.entry_fmt, tag * 1000003 + (uint64_t)l * 7919 + 500 + (uint64_t)w, x);
            CHECK(dsv4_kv_entry_encode(v.entry_fmt, x, dsv4_kv_view_entry(&v, w), &err) == DSV4_OK, "%s", err.msg);
            if (v.kind == DSV4_LAYER_CSA) {
                for (int i = 0; i < v.ikey_fmt->dim; i++) x[i] = (float)((int)((tag + w + i + l) % 7) - 3);
                dsv4_cpu_fake_quant_fp4(x, (size_t)v.ikey_fmt->dim);
                CHECK(dsv4_kv_ikey_encode(v.ikey_fmt, x, dsv4_kv_view_ikey_codes(&v, w), dsv4_kv_view_ikey_scales(&v, w),
                                          &err) == DSV4_OK, "%s", err.msg);
            }
        }
    }
}

static int check_all(dsv4_kv_manager *m, int slot, uint64_t tag) {
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(m);
    float x[1024], y[1024];
    dsv4_err err;
    int bad = 0;
    for (int l = 0; l < s->n_layers; l++) {
        dsv4_kv_layer_view v;
        dsv4_kv_manager_view(m, slot, l, &v, &err);
        int dim = v.entry_fmt->nope + v.entry_fmt->rope;
        for (int t = 0; t < v.window; t++) {
            make_entry(v.entry_fmt, tag * 1000003 + (uint64_t)l * 7919 + (uint64_t)t, x);
            dsv4_kv_entry_decode(v.entry_fmt, dsv4_kv_view_ring_entry(&v, t), y);
            bad += memcmp(x, y, sizeof(float) * dim) != 0;
        }
        for (int64_t w = 0; w < v.cap_entries; w++) {
            make_entry(v.entry_fmt, tag * 1000003 + (uint64_t)l * 7919 + 500 + (uint64_t)w, x);
            dsv4_kv_entry_decode(v.entry_fmt, dsv4_kv_view_entry(&v, w), y);
            bad += memcmp(x, y, sizeof(float) * dim) != 0;
            if (v.kind == DSV4_LAYER_CSA) {
                for (int i = 0; i < v.ikey_fmt->dim; i++) x[i] = (float)((int)((tag + w + i + l) % 7) - 3);
                dsv4_cpu_fake_quant_fp4(x, (size_t)v.ikey_fmt->dim);
                dsv4_kv_ikey_decode(v.ikey_fmt, dsv4_kv_view_ikey_codes(&v, w), dsv4_kv_view_ikey_scales(&v, w), y);
                bad += memcmp(x, y, sizeof(float) * v.ikey_fmt->dim) != 0;
            }
        }
    }
    return bad;
}

/* ---- prepare_step all-or-nothing ---------------------------------------------------------------- */
static void test_prepare_all_or_nothing(void) {
    dsv4_kv_manager *m = make(kvtest_config_tiny, 3, 5, 4096);
    if (!m) return;
    dsv4_err err;
    int a, b, c;
    CHECK(dsv4_kv_manager_admit(m, 128, &a, &err) == DSV4_OK, "%s", err.msg); /* 1 block */
    CHECK(dsv4_kv_manager_admit(m, 0, &b, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_admit(m, 0, &c, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_commit(m, a, 128, &err) == DSV4_OK, "%s", err.msg);
    write_all(m, a, 11);
    CHECK(dsv4_kv_manager_free_blocks(m) == 4, "4 free");

    /* a +128 tokens (1 block), b +384 (3 blocks), c +4 (1 block): 5 > 4 -> c is named, nothing moves. */
    dsv4_kv_step_seq step[3] = {{a, 128}, {b, 384}, {c, 4}};
    int failed = -2;
    CHECK(dsv4_kv_manager_prepare_step(m, step, 3, &failed, &err) == DSV4_ERR_CAPACITY, "capacity");
    CHECK(failed == 2, "the third sequence is at fault: %d", failed);
    printf("  %s\n", err.msg);
    CHECK(dsv4_kv_manager_free_blocks(m) == 4 && dsv4_kv_manager_seq_blocks(m, a) == 1 &&
              dsv4_kv_manager_seq_blocks(m, b) == 0 && dsv4_kv_manager_seq_blocks(m, c) == 0, "nothing moved");
    CHECK(dsv4_kv_manager_pos(m, a) == 128 && dsv4_kv_manager_pos(m, b) == 0, "positions unchanged");
    CHECK(check_all(m, a, 11) == 0, "a's data intact");
    CHECK(dsv4_kv_manager_commit(m, b, 4, &err) == DSV4_ERR_INVALID_ARG, "commit past the held blocks refused");

    /* Invalid lists: duplicates, unknown slots, negative counts. */
    dsv4_kv_step_seq dup[2] = {{a, 1}, {a, 1}};
    CHECK(dsv4_kv_manager_prepare_step(m, dup, 2, &failed, &err) == DSV4_ERR_INVALID_ARG && failed == 1, "dup");
    dsv4_kv_step_seq unk[2] = {{b, 1}, {2 + 5, 1}};
    CHECK(dsv4_kv_manager_prepare_step(m, unk, 2, &failed, &err) == DSV4_ERR_INVALID_ARG && failed == 1, "unknown");
    dsv4_kv_step_seq neg[1] = {{b, -1}};
    CHECK(dsv4_kv_manager_prepare_step(m, neg, 1, &failed, &err) == DSV4_ERR_INVALID_ARG && failed == 0, "neg");
    dsv4_kv_step_seq too_long[1] = {{b, 4097}};
    CHECK(dsv4_kv_manager_prepare_step(m, too_long, 1, &failed, &err) == DSV4_ERR_CAPACITY && failed == 0, "max_seq");
    CHECK(dsv4_kv_manager_free_blocks(m) == 4, "still nothing moved");

    /* A fitting step: a +128 (1), b +384 (3) = 4 blocks exactly. */
    CHECK(dsv4_kv_manager_prepare_step(m, step, 2, &failed, &err) == DSV4_OK && failed == -1, "%s", err.msg);
    CHECK(dsv4_kv_manager_free_blocks(m) == 0, "pool full");
    CHECK(dsv4_kv_manager_seq_blocks(m, a) == 2 && dsv4_kv_manager_seq_blocks(m, b) == 3, "blocks");
    /* Preparing again for the same tokens needs nothing more. */
    CHECK(dsv4_kv_manager_prepare_step(m, step, 2, &failed, &err) == DSV4_OK, "idempotent");
    CHECK(dsv4_kv_manager_commit(m, a, 128, &err) == DSV4_OK && dsv4_kv_manager_commit(m, b, 384, &err) == DSV4_OK,
          "%s", err.msg);
    /* b's new blocks are written; a's old data must survive; then a is rewritten fully and b checked. */
    write_all(m, b, 22);
    CHECK(check_all(m, b, 22) == 0, "b's data");
    write_all(m, a, 33);
    CHECK(check_all(m, b, 22) == 0, "b intact after a wrote all its blocks");
    CHECK(check_all(m, a, 33) == 0, "a's data");
    /* Decode-style steps with the pool full: 1 token each keeps working until a block boundary. */
    dsv4_kv_step_seq one[2] = {{a, 1}, {b, 1}};
    CHECK(dsv4_kv_manager_prepare_step(m, one, 2, &failed, &err) == DSV4_OK, "within blocks: %s", err.msg);
    dsv4_kv_manager_destroy(m);
}

/* ---- release / slot reuse ----------------------------------------------------------------------- */
static void test_release_and_reuse(void) {
    dsv4_kv_manager *m = make(kvtest_config_tiny, 2, 6, 1024);
    if (!m) return;
    dsv4_err err;
    int64_t free0 = dsv4_kv_manager_free_blocks(m);
    int a, b;
    CHECK(dsv4_kv_manager_admit(m, 300, &a, &err) == DSV4_OK, "%s", err.msg); /* 3 blocks */
    CHECK(dsv4_kv_manager_admit(m, 200, &b, &err) == DSV4_OK, "%s", err.msg); /* 2 blocks */
    CHECK(dsv4_kv_manager_free_blocks(m) == free0 - 5, "5 held");
    int c;
    CHECK(dsv4_kv_manager_admit(m, 0, &c, &err) == DSV4_ERR_CAPACITY, "no slot left");
    CHECK(dsv4_kv_manager_free_slots(m) == 0, "slots");
    CHECK(dsv4_kv_manager_release(m, a, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_release(m, a, &err) == DSV4_ERR_INVALID_ARG, "double release");
    CHECK(dsv4_kv_manager_admit(m, 1000, &c, &err) == DSV4_ERR_CAPACITY, "8 blocks > 4 free");
    CHECK(dsv4_kv_manager_free_slots(m) == 1 && dsv4_kv_manager_free_blocks(m) == free0 - 2, "failed admit changed nothing");

    /* Dirty b's state (rings, compressor rows) through its views, release, re-admit: fresh. */
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(m);
    for (int l = 0; l < s->n_layers; l++) {
        dsv4_kv_layer_view v;
        dsv4_kv_manager_view(m, b, l, &v, &err);
        memset(v.ring, 0x5a, (size_t)v.window * v.entry_bytes);
        dsv4_kv_cmp_view *cs[2] = {&v.cmp, &v.icmp};
        for (int k = 0; k < 2; k++) {
            if (!cs[k]->ratio) continue;
            size_t ncur = (size_t)cs[k]->ratio * (cs[k]->overlap ? 2 : 1) * cs[k]->d;
            for (size_t i = 0; i < ncur; i++) cs[k]->kv_cur[i] = cs[k]->sc_cur[i] = 1.5f;
            if (cs[k]->overlap)
                for (size_t i = 0; i < (size_t)cs[k]->ratio * cs[k]->d; i++) cs[k]->kv_prev[i] = cs[k]->sc_prev[i] = 2.5f;
        }
    }
    CHECK(dsv4_kv_manager_release(m, b, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_free_blocks(m) == free0 && dsv4_kv_manager_free_slots(m) == 2, "everything back");
    int b2;
    CHECK(dsv4_kv_manager_admit(m, 0, &b2, &err) == DSV4_OK && b2 == b, "LIFO reuse of slot %d (got %d)", b, b2);
    CHECK(dsv4_kv_manager_pos(m, b2) == 0, "position reset");
    int dirty = 0;
    for (int l = 0; l < s->n_layers; l++) {
        dsv4_kv_layer_view v;
        dsv4_kv_manager_view(m, b2, l, &v, &err);
        for (size_t i = 0; i < (size_t)v.window * v.entry_bytes; i++) dirty += v.ring[i] != 0;
        dsv4_kv_cmp_view *cs[2] = {&v.cmp, &v.icmp};
        for (int k = 0; k < 2; k++) {
            if (!cs[k]->ratio) continue;
            size_t ncur = (size_t)cs[k]->ratio * (cs[k]->overlap ? 2 : 1) * cs[k]->d;
            for (size_t i = 0; i < ncur; i++) dirty += cs[k]->kv_cur[i] != 0.0f || !(isinf(cs[k]->sc_cur[i]) && cs[k]->sc_cur[i] < 0);
            if (cs[k]->overlap)
                for (size_t i = 0; i < (size_t)cs[k]->ratio * cs[k]->d; i++)
                    dirty += cs[k]->kv_prev[i] != 0.0f || !(isinf(cs[k]->sc_prev[i]) && cs[k]->sc_prev[i] < 0);
        }
    }
    CHECK(dirty == 0, "%d stale values after slot reuse", dirty);
    CHECK(dsv4_kv_manager_release(m, b2, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_free_blocks(m) == free0, "free blocks before == after: %lld vs %lld",
          (long long)dsv4_kv_manager_free_blocks(m), (long long)free0);
    dsv4_kv_layer_view v;
    CHECK(dsv4_kv_manager_view(m, b2, 0, &v, &err) == DSV4_ERR_INVALID_ARG, "no view of a released slot");
    dsv4_kv_manager_destroy(m);
}

/* Many random admit/grow/release rounds: block accounting always adds up. */
static void test_accounting_random(void) {
    dsv4_kv_manager *m = make(kvtest_config_tiny, 4, 20, 2048);
    if (!m) return;
    test_rng r;
    test_rng_seed(&r, 9);
    int active[4] = {-1, -1, -1, -1};
    dsv4_err err;
    for (int it = 0; it < 3000; it++) {
        int k = (int)(test_rng_u64(&r) % 4);
        int op = (int)(test_rng_u64(&r) % 4);
        if (active[k] < 0) {
            int s;
            if (dsv4_kv_manager_admit(m, (int64_t)(test_rng_u64(&r) % 300), &s, &err) == DSV4_OK) active[k] = s;
        } else if (op == 0) {
            CHECK(dsv4_kv_manager_release(m, active[k], &err) == DSV4_OK, "%s", err.msg);
            active[k] = -1;
        } else {
            int failed;
            int64_t before = dsv4_kv_manager_seq_blocks(m, active[k]), fb = dsv4_kv_manager_free_blocks(m);
            dsv4_status st = grow(m, active[k], (int64_t)(test_rng_u64(&r) % 100), &failed);
            if (st != DSV4_OK)
                CHECK(dsv4_kv_manager_seq_blocks(m, active[k]) == before && dsv4_kv_manager_free_blocks(m) == fb,
                      "failed step moved blocks");
        }
        int64_t held = 0;
        for (int j = 0; j < 4; j++)
            if (active[j] >= 0) held += dsv4_kv_manager_seq_blocks(m, active[j]);
        CHECK(held + dsv4_kv_manager_free_blocks(m) == 20, "it %d: held %lld + free %lld != 20", it, (long long)held,
              (long long)dsv4_kv_manager_free_blocks(m));
        if (test_case_failed) break;
    }
    for (int j = 0; j < 4; j++)
        if (active[j] >= 0) dsv4_kv_manager_release(m, active[j], &err);
    CHECK(dsv4_kv_manager_free_blocks(m) == 20 && dsv4_kv_manager_free_slots(m) == 4, "all back at the end");
    dsv4_kv_manager_destroy(m);
}

/* ---- views address disjoint memory --------------------------------------------------------------- */
typedef struct { uintptr_t lo, hi; int seq; } range;
static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static void test_views_disjoint(void) {
    dsv4_kv_manager *m = make(kvtest_config_tiny, 3, 9, 1024);
    if (!m) return;
    dsv4_err err;
    int slots[3];
    for (int i = 0; i < 3; i++) CHECK(dsv4_kv_manager_admit(m, 129 + 128 * i, &slots[i], &err) == DSV4_OK, "%s", err.msg);
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(m);
    size_t cap = 100000, n = 0;
    range *rs = malloc(cap * sizeof *rs);
    for (int q = 0; q < 3; q++)
        for (int l = 0; l < s->n_layers; l++) {
            dsv4_kv_layer_view v;
            CHECK(dsv4_kv_manager_view(m, slots[q], l, &v, &err) == DSV4_OK, "%s", err.msg);
#define ADD(p, len) do { if (n < cap) rs[n++] = (range){(uintptr_t)(p), (uintptr_t)(p) + (len), q}; } while (0)
            ADD(v.ring, (size_t)v.window * v.entry_bytes);
            dsv4_kv_cmp_view *cs[2] = {&v.cmp, &v.icmp};
            for (int k = 0; k < 2; k++) {
                if (!cs[k]->ratio) continue;
                size_t ncur = (size_t)cs[k]->ratio * (cs[k]->overlap ? 2 : 1) * cs[k]->d * 4;
                ADD(cs[k]->kv_cur, ncur);
                ADD(cs[k]->sc_cur, ncur);
                if (cs[k]->overlap) {
                    ADD(cs[k]->kv_prev, (size_t)cs[k]->ratio * cs[k]->d * 4);
                    ADD(cs[k]->sc_prev, (size_t)cs[k]->ratio * cs[k]->d * 4);
                }
            }
            for (int64_t w = 0; w < v.cap_entries; w++) {
                ADD(dsv4_kv_view_entry(&v, w), (size_t)v.entry_bytes);
                if (v.kind == DSV4_LAYER_CSA) {
                    ADD(dsv4_kv_view_ikey_codes(&v, w), (size_t)v.ikey_code_bytes);
                    ADD(dsv4_kv_view_ikey_scales(&v, w), (size_t)v.ikey_n_scales);
                }
            }
#undef ADD
        }
    CHECK(n < cap, "range buffer large enough");
    qsort(rs, n, sizeof *rs, cmp_range);
    int overlaps = 0;
    for (size_t i = 1; i < n; i++) overlaps += rs[i].lo < rs[i - 1].hi;
    CHECK(overlaps == 0, "%d overlapping ranges among %zu", overlaps, n);
    printf("  %zu disjoint ranges over 3 sequences\n", n);
    free(rs);
    dsv4_kv_manager_destroy(m);
}

static void test_sizing_from_tokens(void) {
    dsv4_config c;
    kvtest_config_flash(&c);
    dsv4_kv_manager_params p = {0};
    p.max_requests = 2;
    p.max_total_tokens = 1000;
    dsv4_kv_manager *m = NULL;
    dsv4_err err;
    CHECK(dsv4_kv_manager_create(&c, &p, &m, &err) == DSV4_OK, "%s", err.msg);
    if (!m) return;
    /* ceil(floor(1000/4)/32) = 8 blocks + 1 slack per request. */
    CHECK(dsv4_kv_manager_total_blocks(m) == 10, "derived blocks %lld", (long long)dsv4_kv_manager_total_blocks(m));
    int a;
    CHECK(dsv4_kv_manager_admit(m, 1001, &a, &err) == DSV4_ERR_CAPACITY, "longer than max_seq_len");
    CHECK(dsv4_kv_manager_admit(m, 1000, &a, &err) == DSV4_OK, "%s", err.msg);
    dsv4_kv_manager_destroy(m);
    p.max_requests = 0;
    CHECK(dsv4_kv_manager_create(&c, &p, &m, &err) == DSV4_ERR_INVALID_ARG && m == NULL, "bad params");
}

int main(void) {
    RUN(test_growth_flash);
    RUN(test_growth_tiny);
    RUN(test_prepare_all_or_nothing);
    RUN(test_release_and_reuse);
    RUN(test_accounting_random);
    RUN(test_views_disjoint);
    RUN(test_sizing_from_tokens);
    return test_finish();
}

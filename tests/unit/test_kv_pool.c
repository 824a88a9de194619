/* test_kv_pool.c — the block allocator and slot state of kv_pool.h: all-or-nothing acquire (exhaustion
 * returns CAPACITY and changes nothing, data of held blocks intact), release validation (out of range,
 * not acquired, listed twice -> nothing changes), every block comes back, slot reset (rings 0, compressor
 * values 0, scores -inf; other slots untouched), and the memory hook (used for every arena byte, freed,
 * allocation failure leaves nothing behind). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv/kv_pool.h"
#include "kv/kv_schema.h"
#include "test_kv_configs.h"
#include "test_util.h"

static dsv4_kv_schema S;

static void test_acquire_release(void) {
    dsv4_kv_pool p;
    dsv4_err err;
    CHECK(dsv4_kv_pool_init(&p, &S, 10, 2, NULL, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_pool_n_free(&p) == 10, "all free");
    int32_t a[10], b[10];
    CHECK(dsv4_kv_pool_acquire(&p, 4, a, &err) == DSV4_OK, "%s", err.msg);
    for (int i = 0; i < 4; i++) CHECK(a[i] == i, "fresh pool hands out ids lowest first: %d", a[i]);
    /* Fill the held blocks with a pattern, exhaust, check nothing moved and the data is intact. */
    for (int i = 0; i < 4; i++) memset(dsv4_kv_pool_block_addr(&p, a[i]), 0x40 + i, S.block_bytes);
    for (int i = 0; i < 10; i++) b[i] = -7;
    CHECK(dsv4_kv_pool_acquire(&p, 7, b, &err) == DSV4_ERR_CAPACITY, "7 > 6 free");
    CHECK(dsv4_kv_pool_n_free(&p) == 6, "unchanged after failure");
    for (int i = 0; i < 10; i++) CHECK(b[i] == -7, "output untouched on failure");
    printf("  exhaustion message: %s\n", err.msg);
    CHECK(dsv4_kv_pool_acquire(&p, 6, b, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_pool_acquire(&p, 1, b + 6, &err) == DSV4_ERR_CAPACITY, "empty");
    CHECK(dsv4_kv_pool_acquire(&p, 0, b + 6, &err) == DSV4_OK, "zero blocks is fine when empty");
    for (int i = 0; i < 4; i++) {
        const uint8_t *d = dsv4_kv_pool_block_addr(&p, a[i]);
        int ok = 1;
        for (size_t k = 0; k < S.block_bytes; k++) ok &= d[k] == 0x40 + i;
        CHECK(ok, "block %d data intact", a[i]);
    }
    /* Every id unique across both acquisitions. */
    int seen[10] = {0};
    for (int i = 0; i < 4; i++) seen[a[i]]++;
    for (int i = 0; i < 6; i++) seen[b[i]]++;
    for (int i = 0; i < 10; i++) CHECK(seen[i] == 1, "id %d handed out %d times", i, seen[i]);

    /* Bad releases change nothing. */
    int32_t bad1[2] = {a[0], a[0]}, bad2[2] = {a[1], 10}, bad3[1] = {-1};
    CHECK(dsv4_kv_pool_release(&p, 2, bad1, &err) == DSV4_ERR_INVALID_ARG, "listed twice");
    CHECK(dsv4_kv_pool_release(&p, 2, bad2, &err) == DSV4_ERR_INVALID_ARG, "out of range");
    CHECK(dsv4_kv_pool_release(&p, 1, bad3, &err) == DSV4_ERR_INVALID_ARG, "negative");
    CHECK(dsv4_kv_pool_n_free(&p) == 0, "nothing released");
    CHECK(dsv4_kv_pool_release(&p, 4, a, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_pool_release(&p, 1, a, &err) == DSV4_ERR_INVALID_ARG, "double free caught");
    CHECK(dsv4_kv_pool_release(&p, 6, b, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_pool_n_free(&p) == 10, "every block back: %lld", (long long)dsv4_kv_pool_n_free(&p));
    CHECK(dsv4_kv_pool_acquire(&p, 10, b, &err) == DSV4_OK, "whole pool again");
    CHECK(dsv4_kv_pool_release(&p, 10, b, &err) == DSV4_OK, "and back");
    dsv4_kv_pool_free(&p);
}

static int slot_is_fresh(const dsv4_kv_pool *p, int slot) {
    const uint8_t *base = dsv4_kv_pool_slot_addr(p, slot);
    int ok = 1;
    for (int i = 0; i < S.n_layers; i++) {
        const dsv4_kv_layer_schema *L = &S.layer[i];
        for (size_t k = 0; k < (size_t)S.window * S.entry.bytes; k++) ok &= base[L->ring_off + k] == 0;
        const dsv4_kv_cmp_schema *cs[2] = {&L->cmp, &L->icmp};
        for (int c = 0; c < 2; c++) {
            if (!cs[c]->present) continue;
            size_t ncur = (size_t)cs[c]->ratio * (cs[c]->overlap ? 2 : 1) * cs[c]->d;
            const float *kv = (const float *)(const void *)(base + cs[c]->kv_cur_off);
            const float *sc = (const float *)(const void *)(base + cs[c]->sc_cur_off);
            for (size_t k = 0; k < ncur; k++) ok &= kv[k] == 0.0f && isinf(sc[k]) && sc[k] < 0;
            if (cs[c]->overlap) {
                size_t nprev = (size_t)cs[c]->ratio * cs[c]->d;
                kv = (const float *)(const void *)(base + cs[c]->kv_prev_off);
                sc = (const float *)(const void *)(base + cs[c]->sc_prev_off);
                for (size_t k = 0; k < nprev; k++) ok &= kv[k] == 0.0f && isinf(sc[k]) && sc[k] < 0;
            }
        }
    }
    return ok;
}

static void test_slot_reset(void) {
    dsv4_kv_pool p;
    dsv4_err err;
    CHECK(dsv4_kv_pool_init(&p, &S, 2, 3, NULL, &err) == DSV4_OK, "%s", err.msg);
    for (int s = 0; s < 3; s++) CHECK(slot_is_fresh(&p, s), "slot %d fresh after init", s);
    /* Dirty every slot, reset slot 1 only. Padding between regions is also dirtied and must not matter. */
    for (int s = 0; s < 3; s++) memset(dsv4_kv_pool_slot_addr(&p, s), 0x3c, S.slot_bytes);
    CHECK(dsv4_kv_pool_slot_reset(&p, 1, &err) == DSV4_OK, "%s", err.msg);
    CHECK(slot_is_fresh(&p, 1), "slot 1 reset");
    CHECK(!slot_is_fresh(&p, 0) && !slot_is_fresh(&p, 2), "neighbours untouched");
    const uint8_t *s2 = dsv4_kv_pool_slot_addr(&p, 2);
    int ok = 1;
    for (size_t k = 0; k < S.slot_bytes; k++) ok &= s2[k] == 0x3c;
    CHECK(ok, "slot 2 bytes unchanged");
    CHECK(dsv4_kv_pool_slot_reset(&p, 3, &err) == DSV4_ERR_INVALID_ARG, "range");
    dsv4_kv_pool_free(&p);
}

/* ---- memory hook -------------------------------------------------------------------------------- */
typedef struct {
    int n_alloc, n_free, n_fill, fail_at; /* fail_at: 1-based alloc call that fails, 0 = never */
    size_t bytes;
} counting;

static dsv4_status c_alloc(void *ctx, size_t bytes, void **out) {
    counting *c = ctx;
    if (c->fail_at && c->n_alloc + 1 == c->fail_at) return DSV4_ERR_NOMEM;
    c->n_alloc++;
    c->bytes += bytes;
    return dsv4_kv_mem_host()->alloc(NULL, bytes, out);
}
static void c_release(void *ctx, void *p) {
    counting *c = ctx;
    if (p) c->n_free++;
    dsv4_kv_mem_host()->release(NULL, p);
}
static dsv4_status c_fill(void *ctx, void *dst, uint32_t pattern, size_t n) {
    ((counting *)ctx)->n_fill++;
    return dsv4_kv_mem_host()->fill32(NULL, dst, pattern, n);
}

static void test_memory_hook(void) {
    counting c = {0};
    dsv4_kv_mem_ops ops = {&c, c_alloc, c_release, c_fill, 1, NULL};
    dsv4_kv_pool p;
    dsv4_err err;
    CHECK(dsv4_kv_pool_init(&p, &S, 5, 2, &ops, &err) == DSV4_OK, "%s", err.msg);
    CHECK(c.n_alloc == 2 && c.bytes == 5 * S.block_bytes + 2 * S.slot_bytes, "two arenas of the schema size");
    CHECK(c.n_fill > 0, "resets go through the hook");
    dsv4_kv_pool_free(&p);
    CHECK(c.n_free == 2, "both arenas released");
    for (int fail = 1; fail <= 2; fail++) {
        counting f = {0};
        f.fail_at = fail;
        dsv4_kv_mem_ops fo = {&f, c_alloc, c_release, c_fill, 1, NULL};
        CHECK(dsv4_kv_pool_init(&p, &S, 5, 2, &fo, &err) == DSV4_ERR_NOMEM, "alloc %d fails", fail);
        CHECK(f.n_free == f.n_alloc, "nothing left allocated (%d/%d)", f.n_free, f.n_alloc);
        CHECK(p.blocks == NULL && p.slots == NULL && p.free_ids == NULL, "pool zeroed");
    }
}

int main(void) {
    dsv4_config c;
    dsv4_err err;
    kvtest_config_tiny(&c);
    if (dsv4_kv_schema_init(&S, &c, 0, &err) != DSV4_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    RUN(test_acquire_release);
    RUN(test_slot_reset);
    RUN(test_memory_hook);
    return test_finish();
}

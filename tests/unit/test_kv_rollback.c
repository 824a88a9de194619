/* test_kv_rollback.c — the speculative-decoding undo pieces of the KV cache (issue 15): kv_rollback.h
 * save/restore (a scribbled step is undone byte for byte, kept positions stay, limits are enforced),
 * dsv4_kv_manager_truncate (blocks go back last-acquired-first so the next acquisition returns the same
 * ids; bad arguments change nothing) and the MTP position's bounds. The end-to-end property (a real
 * forward undone to the bytes of a run that never saw the rejected tokens) is tests/model/test_spec.c.
 * Arenas that are not host-accessible (device memory) go through the memory hook's copy: checked here with a
 * host-backed hook that only copies (the device itself: tests/model/test_cuda_mtp.c). */
#include <stdlib.h>
#include <string.h>

#include "kv/kv_manager.h"
#include "kv/kv_rollback.h"
#include "test_kv_configs.h"
#include "test_util.h"

static dsv4_kv_manager *make_mem(int64_t n_blocks, const dsv4_kv_mem_ops *mem) {
    dsv4_config c;
    kvtest_config_tiny(&c);   /* ratios 4, 8, 4 + SWA and the MTP; window 16; 128-token blocks */
    dsv4_kv_manager_params p = {0};
    p.max_requests = 2;
    p.n_blocks = n_blocks;
    p.max_seq_len = 4096;
    p.mem = mem;
    dsv4_kv_manager *m = NULL;
    dsv4_err err;
    CHECK(dsv4_kv_manager_create(&c, &p, &m, &err) == DSV4_OK, "create: %s", err.msg);
    return m;
}

static dsv4_kv_manager *make(int64_t n_blocks) { return make_mem(n_blocks, NULL); }

static void advance(dsv4_kv_manager *m, int slot, int64_t n) {
    dsv4_kv_step_seq s = {slot, n};
    dsv4_err err;
    CHECK(dsv4_kv_manager_prepare_step(m, &s, 1, NULL, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_commit(m, slot, n, &err) == DSV4_OK, "%s", err.msg);
}

/* Slot base and the whole block arena, to compare everything. */
static uint8_t *slot_base(dsv4_kv_manager *m, int slot) {
    dsv4_kv_layer_view v;
    dsv4_kv_manager_view(m, slot, 0, &v, NULL);
    return v.ring - dsv4_kv_manager_schema(m)->layer[0].ring_off;
}
static uint8_t *block_arena(dsv4_kv_manager *m, int slot, size_t *bytes) {
    dsv4_kv_layer_view v;
    dsv4_kv_manager_view(m, slot, 1, &v, NULL);
    *bytes = v.block_bytes * (size_t)dsv4_kv_manager_total_blocks(m);
    return v.block_arena;
}

/* Writes pattern bytes where a step over positions [p0, p0+n) writes: ring records, compressor rows,
 * overlap halves and the completed entries / indexer keys, in every layer. */
static void scribble(dsv4_kv_manager *m, int slot, int64_t p0, int n, uint8_t byte) {
    const dsv4_kv_schema *s = dsv4_kv_manager_schema(m);
    for (int l = 0; l < s->n_layers; l++) {
        dsv4_kv_layer_view v;
        dsv4_kv_manager_view(m, slot, l, &v, NULL);
        for (int64_t t = p0; t < p0 + n; t++) {
            memset(dsv4_kv_view_ring_entry(&v, t), byte, (size_t)v.entry_bytes);
            const dsv4_kv_cmp_view *cs[2] = {&v.cmp, &v.icmp};
            for (int j = 0; j < 2; j++) {
                const dsv4_kv_cmp_view *c = cs[j];
                if (!c->ratio) continue;
                int w = (c->overlap ? 2 : 1) * c->d;
                memset(c->kv_cur + (size_t)(t % c->ratio) * w, byte, sizeof(float) * w);
                memset(c->sc_cur + (size_t)(t % c->ratio) * w, byte, sizeof(float) * w);
                if (c->overlap && (t + 1) % c->ratio == 0) {
                    memset(c->kv_prev, byte, sizeof(float) * (size_t)c->ratio * c->d);
                    memset(c->sc_prev, byte, sizeof(float) * (size_t)c->ratio * c->d);
                }
            }
            if (v.ratio && (t + 1) % v.ratio == 0) {
                memset(dsv4_kv_view_entry(&v, t / v.ratio), byte, (size_t)v.entry_bytes);
                if (v.kind == DSV4_LAYER_CSA) {
                    memset(dsv4_kv_view_ikey_codes(&v, t / v.ratio), byte, (size_t)v.ikey_code_bytes);
                    memset(dsv4_kv_view_ikey_scales(&v, t / v.ratio), byte, (size_t)v.ikey_n_scales);
                }
            }
        }
    }
}

static void test_undo_is_bytewise(void) {
    dsv4_kv_manager *m = make(8);
    if (!m) return;
    int slot;
    dsv4_err err;
    CHECK(dsv4_kv_manager_admit(m, 0, &slot, &err) == DSV4_OK, "%s", err.msg);
    advance(m, slot, 129);
    scribble(m, slot, 0, 129 > 16 ? 16 : 129, 0x5a);   /* stale bytes everywhere the step will touch */
    const size_t sb = dsv4_kv_manager_schema(m)->slot_bytes;
    size_t ab;
    uint8_t *arena = block_arena(m, slot, &ab);
    uint8_t *slot0 = malloc(sb), *arena0 = malloc(ab);
    memcpy(slot0, slot_base(m, slot), sb);
    memcpy(arena0, arena, ab);
    int64_t free0 = dsv4_kv_manager_free_blocks(m), held0 = dsv4_kv_manager_seq_blocks(m, slot);
    dsv4_kv_rollback rb;
    CHECK(dsv4_kv_rollback_init(&rb, m, 4, &err) == DSV4_OK, "%s", err.msg);
    /* A step of 4 at 129..132 completes entry 32 of the ratio-4 layers: a new block. Without its blocks
     * the save is refused. */
    CHECK(dsv4_kv_rollback_save(&rb, m, slot, 0, dsv4_kv_manager_schema(m)->n_layers, 129, 4, &err) ==
              DSV4_ERR_INVALID_ARG, "save before prepare accepted");
    dsv4_kv_step_seq st = {slot, 4};
    CHECK(dsv4_kv_manager_prepare_step(m, &st, 1, NULL, &err) == DSV4_OK, "%s", err.msg);
    int32_t new_block = -1;
    {
        dsv4_kv_layer_view v;
        dsv4_kv_manager_view(m, slot, 1, &v, NULL);
        CHECK(v.n_blocks == held0 + 1, "the step needs one more block");
        new_block = v.block_table[v.n_blocks - 1];
    }
    CHECK(dsv4_kv_rollback_save(&rb, m, slot, 0, dsv4_kv_manager_schema(m)->n_layers, 129, 4, &err) == DSV4_OK,
          "%s", err.msg);
    scribble(m, slot, 129, 4, 0xc3);
    CHECK(dsv4_kv_manager_commit(m, slot, 4, &err) == DSV4_OK, "%s", err.msg);
    dsv4_kv_rollback_restore(&rb, m, 0);
    CHECK(dsv4_kv_manager_truncate(m, slot, 129, &err) == DSV4_OK, "%s", err.msg);
    CHECK(memcmp(slot0, slot_base(m, slot), sb) == 0, "slot bytes not restored");
    CHECK(memcmp(arena0, arena, ab) == 0, "block bytes not restored");
    CHECK(dsv4_kv_manager_free_blocks(m) == free0 && dsv4_kv_manager_seq_blocks(m, slot) == held0,
          "blocks not given back");
    /* LIFO: the next block taken is the one given back. */
    CHECK(dsv4_kv_manager_prepare_step(m, &st, 1, NULL, &err) == DSV4_OK, "%s", err.msg);
    {
        dsv4_kv_layer_view v;
        dsv4_kv_manager_view(m, slot, 1, &v, NULL);
        CHECK(v.block_table[v.n_blocks - 1] == new_block, "block %d taken again, %d given back",
              v.block_table[v.n_blocks - 1], new_block);
    }
    /* Keeping 2 of 3: position 129's and 130's bytes stay, 131's are restored. */
    CHECK(dsv4_kv_rollback_save(&rb, m, slot, 0, 1, 129, 3, &err) == DSV4_OK, "%s", err.msg);
    dsv4_kv_layer_view v0;
    dsv4_kv_manager_view(m, slot, 0, &v0, NULL);
    uint8_t before131[64];
    memcpy(before131, dsv4_kv_view_ring_entry(&v0, 131), sizeof before131);
    scribble(m, slot, 129, 3, 0x77);
    dsv4_kv_rollback_restore(&rb, m, 2);
    CHECK(dsv4_kv_view_ring_entry(&v0, 129)[0] == 0x77 && dsv4_kv_view_ring_entry(&v0, 130)[0] == 0x77,
          "kept positions restored");
    CHECK(memcmp(before131, dsv4_kv_view_ring_entry(&v0, 131), sizeof before131) == 0, "rejected position kept");
    dsv4_kv_rollback_free(&rb);
    free(slot0);
    free(arena0);
    dsv4_kv_manager_destroy(m);
}

static void test_limits_and_bounds(void) {
    dsv4_kv_manager *m = make(8);
    if (!m) return;
    int slot;
    dsv4_err err;
    dsv4_kv_rollback rb;
    CHECK(dsv4_kv_rollback_init(&rb, m, 5, &err) == DSV4_ERR_INVALID_ARG, "5 tokens > smallest ratio 4 accepted");
    CHECK(dsv4_kv_rollback_init(&rb, m, 0, &err) == DSV4_ERR_INVALID_ARG, "0 tokens accepted");
    CHECK(dsv4_kv_manager_admit(m, 0, &slot, &err) == DSV4_OK, "%s", err.msg);
    advance(m, slot, 10);
    CHECK(dsv4_kv_manager_truncate(m, slot, 11, &err) == DSV4_ERR_INVALID_ARG, "truncate past the position");
    CHECK(dsv4_kv_manager_truncate(m, slot, -1, &err) == DSV4_ERR_INVALID_ARG, "negative truncate");
    CHECK(dsv4_kv_manager_truncate(m, 1, 0, &err) == DSV4_ERR_INVALID_ARG, "truncate of a free slot");
    CHECK(dsv4_kv_manager_pos(m, slot) == 10, "a refused truncate changed the position");
    CHECK(dsv4_kv_manager_mtp_pos(m, slot) == 0, "MTP position starts at 0");
    CHECK(dsv4_kv_manager_mtp_commit(m, slot, 11, &err) == DSV4_ERR_INVALID_ARG, "MTP past the tokens");
    CHECK(dsv4_kv_manager_mtp_commit(m, slot, 9, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_truncate(m, slot, 5, &err) == DSV4_OK && dsv4_kv_manager_mtp_pos(m, slot) == 5,
          "truncate clamps the MTP position");
    CHECK(dsv4_kv_manager_mtp_pos(m, 1) == -1, "MTP position of a free slot");
    CHECK(dsv4_kv_manager_release(m, slot, &err) == DSV4_OK, "%s", err.msg);
    CHECK(dsv4_kv_manager_admit(m, 0, &slot, &err) == DSV4_OK && dsv4_kv_manager_mtp_pos(m, slot) == 0,
          "admit resets the MTP position");
    dsv4_kv_manager_destroy(m);
}

/* A device-like hook (host_accessible 0) over host memory: every rollback byte goes through copy(). */
static long n_copies, fail_after = -1;
static dsv4_status copy_hook(void *ctx, void *dst, const void *src, size_t bytes, int to_mem) {
    (void)ctx; (void)to_mem;
    if (fail_after >= 0 && n_copies >= fail_after) return DSV4_ERR_CUDA;
    n_copies++;
    memcpy(dst, src, bytes);
    return DSV4_OK;
}

static void test_copy_hook(void) {
    const dsv4_kv_mem_ops *h = dsv4_kv_mem_host();
    dsv4_kv_mem_ops dev = {NULL, h->alloc, h->release, h->fill32, 0, copy_hook};
    dsv4_kv_mem_ops nocopy = {NULL, h->alloc, h->release, h->fill32, 0, NULL};
    dsv4_err err;
    dsv4_kv_rollback rb;
    dsv4_kv_manager *m0 = make_mem(8, &nocopy);
    CHECK(m0 && dsv4_kv_rollback_init(&rb, m0, 3, &err) == DSV4_ERR_INVALID_ARG, "no copy hook accepted");
    dsv4_kv_manager_destroy(m0);
    dsv4_kv_manager *m = make_mem(8, &dev);
    if (!m) return;
    int slot;
    CHECK(dsv4_kv_manager_admit(m, 0, &slot, &err) == DSV4_OK, "%s", err.msg);
    advance(m, slot, 21);
    dsv4_kv_step_seq st = {slot, 3};
    CHECK(dsv4_kv_manager_prepare_step(m, &st, 1, NULL, &err) == DSV4_OK, "%s", err.msg);
    const size_t sb = dsv4_kv_manager_schema(m)->slot_bytes;
    size_t ab;
    uint8_t *arena = block_arena(m, slot, &ab);
    uint8_t *slot0 = malloc(sb), *arena0 = malloc(ab);
    memcpy(slot0, slot_base(m, slot), sb);
    memcpy(arena0, arena, ab);
    const int L = dsv4_kv_manager_schema(m)->n_layers;
    CHECK(dsv4_kv_rollback_init(&rb, m, 3, &err) == DSV4_OK, "%s", err.msg);
    n_copies = 0;
    CHECK(dsv4_kv_rollback_save(&rb, m, slot, 0, L, 21, 3, &err) == DSV4_OK, "%s", err.msg);
    const long saved = n_copies;
    scribble(m, slot, 21, 3, 0xa5);   /* 21..23: completes entry 5 of the ratio-4 layers */
    dsv4_kv_rollback_restore(&rb, m, 0);
    CHECK(saved > 0 && n_copies == 2 * saved, "%ld copies to save, %ld in all (every region twice)", saved, n_copies);
    CHECK(rb.copy_st == DSV4_OK, "restore copy status");
    CHECK(memcmp(slot0, slot_base(m, slot), sb) == 0, "slot bytes not restored through the hook");
    CHECK(memcmp(arena0, arena, ab) == 0, "block bytes not restored through the hook");
    /* A failed copy: the save reports it; a failed restore copy is reported by the next save. */
    n_copies = 0;
    fail_after = 3;
    CHECK(dsv4_kv_rollback_save(&rb, m, slot, 0, L, 21, 3, &err) == DSV4_ERR_CUDA, "failed save copy not reported");
    fail_after = -1;
    CHECK(dsv4_kv_rollback_save(&rb, m, slot, 0, L, 21, 3, &err) == DSV4_OK, "%s", err.msg);
    n_copies = 0;
    fail_after = 2;
    dsv4_kv_rollback_restore(&rb, m, 0);
    fail_after = -1;
    CHECK(rb.copy_st == DSV4_ERR_CUDA, "failed restore copy not recorded");
    CHECK(dsv4_kv_rollback_save(&rb, m, slot, 0, L, 21, 3, &err) == DSV4_ERR_CUDA, "failed restore not reported");
    CHECK(dsv4_kv_rollback_save(&rb, m, slot, 0, L, 21, 3, &err) == DSV4_OK, "the report is once: %s", err.msg);
    dsv4_kv_rollback_free(&rb);
    free(slot0);
    free(arena0);
    dsv4_kv_manager_destroy(m);
}

int main(void) {
    RUN(test_undo_is_bytewise);
    RUN(test_limits_and_bounds);
    RUN(test_copy_hook);
    return test_finish();
}

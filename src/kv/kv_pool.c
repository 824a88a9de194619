/* kv_pool.c — arenas, block free list and slot reset (see kv_pool.h). */
#include "kv/kv_pool.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/status.h"

/* ---- host memory hook ------------------------------------------------------------------------------ */

/* Physical memory of the machine in bytes (0 if unknown). */
static uint64_t host_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    return pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz : 0;
}

/* An arena above 3/4 of the machine's memory is refused up front: an absurd --ctx would otherwise ask the
 * allocator for terabytes (a sanitizer abort) or get overcommitted pages that the zero fill below then
 * touches one by one until the OOM killer ends the process. The quarter left is for the weights' page
 * cache, the workspaces and everything else (docs/RELIABILITY.md). */
static dsv4_status host_alloc(void *ctx, size_t bytes, void **out) {
    (void)ctx;
    *out = NULL;
    uint64_t mem = host_memory_bytes();
    if (mem && bytes > mem / 4 * 3) return DSV4_ERR_NOMEM;
    size_t n = (bytes + DSV4_KV_REGION_ALIGN - 1) / DSV4_KV_REGION_ALIGN * DSV4_KV_REGION_ALIGN;
    *out = aligned_alloc(DSV4_KV_REGION_ALIGN, n ? n : DSV4_KV_REGION_ALIGN);
    return *out ? DSV4_OK : DSV4_ERR_NOMEM;
}

static void host_release(void *ctx, void *p) {
    (void)ctx;
    free(p);
}

static dsv4_status host_fill32(void *ctx, void *dst, uint32_t pattern, size_t n_words) {
    (void)ctx;
    uint8_t *d = dst;
    if (pattern == 0) {
        memset(d, 0, n_words * 4);
        return DSV4_OK;
    }
    for (size_t i = 0; i < n_words; i++) memcpy(d + 4 * i, &pattern, 4);
    return DSV4_OK;
}

static const dsv4_kv_mem_ops host_ops = {NULL, host_alloc, host_release, host_fill32, 1, NULL};

const dsv4_kv_mem_ops *dsv4_kv_mem_host(void) { return &host_ops; }

/* ---- init / free ----------------------------------------------------------------------------------- */

dsv4_status dsv4_kv_pool_init(dsv4_kv_pool *p, const dsv4_kv_schema *schema, int64_t n_blocks, int n_slots,
                              const dsv4_kv_mem_ops *mem, dsv4_err *err) {
    memset(p, 0, sizeof *p);
    if (!schema || n_blocks < 0 || n_blocks > INT32_MAX || n_slots < 1)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv pool: bad arguments (n_blocks %lld, n_slots %d)",
                            (long long)n_blocks, n_slots);
    if (schema->block_bytes == 0) n_blocks = 0; /* no compressed layer: nothing to page */
    p->schema = schema;
    p->mem = mem ? *mem : host_ops;
    p->n_blocks = n_blocks;
    p->n_slots = n_slots;
    dsv4_status st = DSV4_OK;
    if (n_blocks > 0) {
        p->free_ids = malloc((size_t)n_blocks * sizeof *p->free_ids);
        p->in_use = calloc((size_t)n_blocks, 1);
        if (!p->free_ids || !p->in_use) {
            st = dsv4_err_set(err, DSV4_ERR_NOMEM, "kv pool: free list of %lld blocks", (long long)n_blocks);
            goto fail;
        }
        for (int64_t i = 0; i < n_blocks; i++) p->free_ids[i] = (int32_t)(n_blocks - 1 - i);
        p->n_free = n_blocks;
        size_t bytes = (size_t)n_blocks * schema->block_bytes;
        void *b = NULL;
        st = p->mem.alloc(p->mem.ctx, bytes, &b);
        if (st != DSV4_OK) {
            dsv4_err_set(err, st,
                         "kv pool: cannot allocate a block arena of %zu bytes (more than 3/4 of the host's "
                         "%llu bytes of memory); lower the KV capacity (--ctx)",
                         bytes, (unsigned long long)host_memory_bytes());
            goto fail;
        }
        p->blocks = b;
        st = p->mem.fill32(p->mem.ctx, p->blocks, 0, bytes / 4);
        if (st != DSV4_OK) {
            dsv4_err_set(err, st, "kv pool: clearing the block arena");
            goto fail;
        }
    }
    {
        size_t bytes = (size_t)n_slots * schema->slot_bytes;
        void *s = NULL;
        st = p->mem.alloc(p->mem.ctx, bytes, &s);
        if (st != DSV4_OK) {
            dsv4_err_set(err, st,
                         "kv pool: cannot allocate a slot arena of %zu bytes (more than 3/4 of the host's "
                         "%llu bytes of memory)",
                         bytes, (unsigned long long)host_memory_bytes());
            goto fail;
        }
        p->slots = s;
    }
    for (int s = 0; s < n_slots; s++) {
        st = dsv4_kv_pool_slot_reset(p, s, err);
        if (st != DSV4_OK) goto fail;
    }
    return DSV4_OK;
fail:
    dsv4_kv_pool_free(p);
    return st;
}

void dsv4_kv_pool_free(dsv4_kv_pool *p) {
    if (!p) return;
    if (p->blocks) p->mem.release(p->mem.ctx, p->blocks);
    if (p->slots) p->mem.release(p->mem.ctx, p->slots);
    free(p->free_ids);
    free(p->in_use);
    memset(p, 0, sizeof *p);
}

/* ---- block allocator ------------------------------------------------------------------------------- */

dsv4_status dsv4_kv_pool_acquire(dsv4_kv_pool *p, int64_t n, int32_t *ids, dsv4_err *err) {
    if (n < 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv pool: acquire of %lld blocks", (long long)n);
    if (n > p->n_free)
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "kv pool: %lld blocks requested, %lld free of %lld",
                            (long long)n, (long long)p->n_free, (long long)p->n_blocks);
    for (int64_t i = 0; i < n; i++) {
        int32_t id = p->free_ids[--p->n_free];
        DSV4_ASSERT(!p->in_use[id]);
        p->in_use[id] = 1;
        ids[i] = id;
    }
    return DSV4_OK;
}

dsv4_status dsv4_kv_pool_release(dsv4_kv_pool *p, int64_t n, const int32_t *ids, dsv4_err *err) {
    /* Check everything first (in_use is flipped to 2 to catch an id listed twice, then restored). */
    int64_t bad = -1;
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= p->n_blocks || p->in_use[ids[i]] != 1) {
            bad = i;
            break;
        }
        p->in_use[ids[i]] = 2;
    }
    int64_t checked = bad < 0 ? n : bad;
    for (int64_t i = 0; i < checked; i++) p->in_use[ids[i]] = 1;
    if (bad >= 0)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv pool: release of block id %d (entry %lld): %s",
                            ids[bad], (long long)bad,
                            (ids[bad] < 0 || ids[bad] >= p->n_blocks) ? "out of range" : "not acquired or listed twice");
    for (int64_t i = 0; i < n; i++) {
        p->in_use[ids[i]] = 0;
        p->free_ids[p->n_free++] = ids[i];
    }
    return DSV4_OK;
}

/* ---- slot reset ------------------------------------------------------------------------------------ */

static dsv4_status fill_region(dsv4_kv_pool *p, uint8_t *base, size_t off, size_t bytes, uint32_t pattern) {
    return p->mem.fill32(p->mem.ctx, base + off, pattern, bytes / 4);
}

static dsv4_status cmp_reset(dsv4_kv_pool *p, uint8_t *slot, const dsv4_kv_cmp_schema *c) {
    if (!c->present) return DSV4_OK;
    size_t cur = (size_t)c->ratio * (c->overlap ? 2 : 1) * c->d * sizeof(float);
    size_t prev = (size_t)c->ratio * c->d * sizeof(float);
    DSV4_TRY(fill_region(p, slot, c->kv_cur_off, cur, 0));
    DSV4_TRY(fill_region(p, slot, c->sc_cur_off, cur, DSV4_KV_SCORE_EMPTY_BITS));
    if (c->overlap) {
        DSV4_TRY(fill_region(p, slot, c->kv_prev_off, prev, 0));
        DSV4_TRY(fill_region(p, slot, c->sc_prev_off, prev, DSV4_KV_SCORE_EMPTY_BITS));
    }
    return DSV4_OK;
}

dsv4_status dsv4_kv_pool_slot_reset(dsv4_kv_pool *p, int slot, dsv4_err *err) {
    if (slot < 0 || slot >= p->n_slots)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv pool: slot %d out of range [0, %d)", slot, p->n_slots);
    const dsv4_kv_schema *s = p->schema;
    uint8_t *base = dsv4_kv_pool_slot_addr(p, slot);
    for (int i = 0; i < s->n_layers; i++) {
        const dsv4_kv_layer_schema *L = &s->layer[i];
        dsv4_status st = fill_region(p, base, L->ring_off, (size_t)s->window * s->entry.bytes, 0);
        if (st == DSV4_OK) st = cmp_reset(p, base, &L->cmp);
        if (st == DSV4_OK) st = cmp_reset(p, base, &L->icmp);
        if (st != DSV4_OK) return dsv4_err_set(err, st, "kv pool: reset of slot %d layer %d", slot, i);
    }
    return DSV4_OK;
}

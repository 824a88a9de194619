/* kv_pool.h — the KV memory pools: the block arena (paged compressed entries + indexer keys of every
 * compressed layer, addressed by block id) with its block allocator, and the slot arena (per-request
 * window rings and compressor tail states, addressed by slot index), laid out by kv_schema.h.
 *
 * Owns: the two arenas (allocated once, at init, through a memory-ops hook so that the CUDA backend can
 * supply device memory), the free list of block ids. Must not: allocate after init, touch arena bytes
 * except in init and slot_reset, know about requests or positions (that is kv_manager's job), or hand
 * out a block twice. Acquire/release happen between steps only; nothing here is thread-safe.
 *
 * Decision: one block-id space for all pools. A block id b names the same 128-token range (block_tokens)
 * of one sequence in every compressed layer (CSA main + indexer keys, HCA main of any ratio); the arena is
 * block-major ([n_blocks][block_bytes]), each layer at a fixed offset inside the block. So a sequence has
 * one block table, a step needs one allocation, and the all-or-nothing check is one comparison. */
#ifndef DSV4_KV_POOL_H
#define DSV4_KV_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "kv/kv_schema.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Memory hook. The default (dsv4_kv_mem_host) uses aligned host memory. A device implementation returns
 * device pointers; the pool then only does pointer arithmetic on them and writes them via fill32. */
typedef struct dsv4_kv_mem_ops {
    void *ctx;                                                          /* borrowed, passed to every call */
    dsv4_status (*alloc)(void *ctx, size_t bytes, void **out);          /* >= DSV4_KV_REGION_ALIGN aligned */
    void (*release)(void *ctx, void *p);                                /* p from alloc, or NULL */
    dsv4_status (*fill32)(void *ctx, void *dst, uint32_t pattern, size_t n_words); /* dst[i] = pattern */
    int host_accessible; /* 1: host code may read/write the memory directly (CPU backend, tests) */
    /* Synchronous copy between host memory and this memory: to_mem 1 copies the host src to dst here, 0 the
     * src here to the host dst. NULL where host_accessible (memcpy). Used by kv_rollback.h only. */
    dsv4_status (*copy)(void *ctx, void *dst, const void *src, size_t bytes, int to_mem);
} dsv4_kv_mem_ops;

/* The host allocator (aligned_alloc + plain stores). Static storage; never NULL. */
const dsv4_kv_mem_ops *dsv4_kv_mem_host(void);

#define DSV4_KV_SCORE_EMPTY_BITS 0xff800000u /* -inf: score of an empty compressor row (spec §4.5) */

typedef struct dsv4_kv_pool {
    const dsv4_kv_schema *schema; /* borrowed; must outlive the pool */
    dsv4_kv_mem_ops mem;          /* copy of the hook */
    int64_t n_blocks;             /* block ids are 0 .. n_blocks-1 (< 2^31) */
    int n_slots;                  /* request slots 0 .. n_slots-1 */
    uint8_t *blocks;              /* owned (mem): [n_blocks, schema->block_bytes]; NULL if empty */
    uint8_t *slots;               /* owned (mem): [n_slots, schema->slot_bytes] */
    int32_t *free_ids;            /* owned (host): [n_blocks] stack, free_ids[0 .. n_free) are free */
    int64_t n_free;               /* free blocks */
    uint8_t *in_use;              /* owned (host): [n_blocks] 1 = acquired */
} dsv4_kv_pool;

/* Allocates both arenas and the free list; zero-fills the block arena and resets every slot (see
 * slot_reset). mem NULL = host. n_blocks >= 0 (0 is fine for a model without compressed layers),
 * n_slots >= 1. On failure nothing stays allocated and *p is zeroed. */
dsv4_status dsv4_kv_pool_init(dsv4_kv_pool *p, const dsv4_kv_schema *schema, int64_t n_blocks, int n_slots,
                              const dsv4_kv_mem_ops *mem, dsv4_err *err);
void dsv4_kv_pool_free(dsv4_kv_pool *p);

/* Takes n free block ids into ids[n], all or nothing: with fewer than n free it returns DSV4_ERR_CAPACITY
 * and changes nothing. Ids come out lowest-first from a fresh pool; block contents are not cleared
 * (every entry is written by the compressor before it becomes visible). */
dsv4_status dsv4_kv_pool_acquire(dsv4_kv_pool *p, int64_t n, int32_t *ids, dsv4_err *err);

/* Returns n block ids. Every id must be in range, acquired, and listed once; otherwise returns
 * DSV4_ERR_INVALID_ARG and changes nothing. */
dsv4_status dsv4_kv_pool_release(dsv4_kv_pool *p, int64_t n, const int32_t *ids, dsv4_err *err);

static inline int64_t dsv4_kv_pool_n_free(const dsv4_kv_pool *p) { return p->n_free; }

/* Puts slot s into the "new request" state: every window ring zeroed, every compressor kv row 0 and every
 * score row -inf (DSV4_KV_SCORE_EMPTY_BITS), so a reused slot never pools stale data (spec §4.5). */
dsv4_status dsv4_kv_pool_slot_reset(dsv4_kv_pool *p, int slot, dsv4_err *err);

/* Addresses (host or device pointers depending on mem; no dereference here). */
static inline uint8_t *dsv4_kv_pool_block_addr(const dsv4_kv_pool *p, int32_t id) {
    return p->blocks + (size_t)id * p->schema->block_bytes;
}
static inline uint8_t *dsv4_kv_pool_slot_addr(const dsv4_kv_pool *p, int slot) {
    return p->slots + (size_t)slot * p->schema->slot_bytes;
}

#ifdef __cplusplus
}
#endif
#endif

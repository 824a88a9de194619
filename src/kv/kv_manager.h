/* kv_manager.h — the single owner of KV-cache state (design §3): pools, block allocator, request slots,
 * per-sequence block tables and positions. The rest of the engine sees typed, zero-allocation views.
 *
 * Life of a request:   admit (slot + blocks for the prompt, state reset)
 *                      { prepare_step (blocks for the tokens the step adds, all-or-nothing)
 *                        forward pass writes ring slots / compressor state / new entries through views
 *                        commit (position += tokens processed) }*
 *                      release (blocks and slot back).
 * Owns: the pool (kv_pool.h), the slot free list, the block tables [max_requests, max_blocks_per_seq] and
 * positions (host memory). Must not: allocate after create, read or write cache contents (only the pool
 * resets a slot), or change anything when a call fails. Calls happen between steps, from one thread. */
#ifndef DSV4_KV_MANAGER_H
#define DSV4_KV_MANAGER_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "core/status.h"
#include "kv/kv_pool.h"
#include "kv/kv_schema.h"
#include "dsv4_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_kv_manager dsv4_kv_manager;

typedef struct dsv4_kv_manager_params {
    int max_requests;         /* request slots, >= 1 */
    int64_t n_blocks;         /* block pool size; 0 = derive from max_total_tokens */
    int64_t max_total_tokens; /* with n_blocks == 0: blocks_for_tokens(max_total_tokens) + max_requests
                                 (one block of rounding slack per request) */
    int64_t max_seq_len;      /* tokens one sequence may reach (sizes its block table); 0 = max_total_tokens,
                                 or n_blocks * block_tokens when that is 0 too */
    int block_tokens;         /* 0 = schema default (128 for Flash / Pro) */
    const dsv4_kv_mem_ops *mem; /* NULL = host memory */
} dsv4_kv_manager_params;

/* Derives the schema from cfg (copied; cfg need not outlive the manager), allocates the pool and the host
 * tables. Errors: CONFIG (schema), INVALID_ARG (params), NOMEM. */
dsv4_status dsv4_kv_manager_create(const dsv4_config *cfg, const dsv4_kv_manager_params *params,
                                   dsv4_kv_manager **out, dsv4_err *err);
void dsv4_kv_manager_destroy(dsv4_kv_manager *m);

/* Takes a free slot for a new request, resets its state (rings 0, compressor rows empty), position 0, and
 * allocates the blocks n_prompt_tokens will need (0 = none yet). Errors: CAPACITY (no free slot, not enough
 * blocks, or n_prompt_tokens > max_seq_len), nothing changed. */
dsv4_status dsv4_kv_manager_admit(dsv4_kv_manager *m, int64_t n_prompt_tokens, int *slot, dsv4_err *err);

/* Returns every block and the slot of an admitted request. INVALID_ARG if slot is not admitted. */
dsv4_status dsv4_kv_manager_release(dsv4_kv_manager *m, int slot, dsv4_err *err);

/* One sequence of a step: it will process n_new tokens at positions pos .. pos+n_new-1. */
typedef struct dsv4_kv_step_seq {
    int slot;
    int64_t n_new;
} dsv4_kv_step_seq;

/* Before a step: makes sure every listed sequence holds blocks_for_tokens(pos + n_new) blocks (entries the
 * step will emit get a home before it runs). All or nothing: on failure no block moves and *failed (if
 * non-NULL) is the index in seqs of the sequence at fault: INVALID_ARG (slot not admitted, listed twice,
 * n_new < 0) or CAPACITY (the first sequence, in list order, whose blocks do not fit in what is free, or
 * that would pass max_seq_len). *failed is -1 on success. */
dsv4_status dsv4_kv_manager_prepare_step(dsv4_kv_manager *m, const dsv4_kv_step_seq *seqs, int n, int *failed,
                                         dsv4_err *err);

/* After a step: pos += n_tokens. The blocks for the new position must have been prepared
 * (INVALID_ARG otherwise, nothing changed). */
dsv4_status dsv4_kv_manager_commit(dsv4_kv_manager *m, int slot, int64_t n_tokens, dsv4_err *err);

/* Speculative-decoding rollback: the position goes back to n_tokens (<= position) and the blocks that
 * n_tokens does not need are released (last acquired first: the pool's free list returns to the order it
 * had before they were acquired). Cache bytes are not touched (kv_rollback.h restores them); the MTP
 * position is clamped to n_tokens. INVALID_ARG (nothing changed) for a bad slot or n_tokens. */
dsv4_status dsv4_kv_manager_truncate(dsv4_kv_manager *m, int slot, int64_t n_tokens, dsv4_err *err);

/* The MTP block (spec §4.10) keeps its own window ring (layer n_layers of the schema) whose rows run one
 * position behind the main model: the row at position i needs the token at i+1. mtp_pos = committed MTP
 * rows (0 at admit); it never passes the sequence's position. -1 if not admitted. */
int64_t dsv4_kv_manager_mtp_pos(const dsv4_kv_manager *m, int slot);
/* mtp_pos += n_rows; INVALID_ARG (nothing changed) if that would pass the committed tokens. */
dsv4_status dsv4_kv_manager_mtp_commit(dsv4_kv_manager *m, int slot, int64_t n_rows, dsv4_err *err);

/* ---- views ---------------------------------------------------------------------------------------- */

/* One compressor's tail state (FP32, spec §4.5; row j of *_cur holds token t with t mod ratio == j). */
typedef struct dsv4_kv_cmp_view {
    int ratio;       /* r; 0 = no such compressor (all pointers NULL) */
    int d;           /* value width */
    int overlap;     /* 1: CSA (coff = 2) */
    float *kv_prev;  /* view [r, d]: A-half values of the previous window (overlap only, else NULL) */
    float *sc_prev;  /* view [r, d]: their scores (ape included; -inf = empty) */
    float *kv_cur;   /* view [r, coff*d]: current window values */
    float *sc_cur;   /* view [r, coff*d]: current window scores */
} dsv4_kv_cmp_view;

/* Everything the forward pass needs for one (sequence, layer). Filling it allocates nothing; it stays
 * valid until the next prepare_step / release of the slot (cap_entries and n_blocks change there). */
typedef struct dsv4_kv_layer_view {
    int layer;
    dsv4_layer_kind kind;
    int ratio;                        /* 0 SWA */
    int64_t pos;                      /* committed tokens = position of the next token */
    /* sliding window */
    uint8_t *ring;                    /* view [window, entry_bytes] compact entries, slot(t) = t mod window */
    int window;
    int n_ring_valid;                 /* min(pos, window) committed ring slots */
    /* compressed entries + indexer keys (SWA: n_blocks = 0, pointers NULL) */
    int64_t n_entries;                /* committed entries floor(pos / ratio) */
    int64_t cap_entries;              /* entries with storage = n_blocks * entries_per_block */
    const int32_t *block_table;       /* view [n_blocks] block ids of this sequence */
    int64_t n_blocks;
    uint8_t *block_arena;             /* view: arena base (host or device pointer) */
    size_t block_bytes;               /* arena stride per block id */
    size_t main_off;                  /* this layer's entries inside a block: [entries_per_block, entry_bytes] */
    size_t ikey_off, ikey_scale_off;  /* CSA: indexer region inside a block; scales at ikey_off+ikey_scale_off */
    int entries_per_block;
    int entry_bytes;                  /* = entry_fmt->bytes */
    int ikey_code_bytes, ikey_n_scales;
    const dsv4_kv_entry_fmt *entry_fmt; /* borrowed from the manager's schema */
    const dsv4_kv_ikey_fmt *ikey_fmt;   /* borrowed; CSA only (NULL otherwise) */
    dsv4_kv_cmp_view cmp;             /* main compressor (CSA, HCA) */
    dsv4_kv_cmp_view icmp;            /* indexer compressor (CSA) */
} dsv4_kv_layer_view;

/* Fills *v for (slot, layer), 0 <= layer < n_layers + n_mtp_layers. INVALID_ARG if not admitted. */
dsv4_status dsv4_kv_manager_view(const dsv4_kv_manager *m, int slot, int layer, dsv4_kv_layer_view *v,
                                 dsv4_err *err);

/* Ring record of position t (any t >= 0; the caller knows which are valid). */
static inline uint8_t *dsv4_kv_view_ring_entry(const dsv4_kv_layer_view *v, int64_t t) {
    DSV4_ASSERT(t >= 0);
    return v->ring + (size_t)(t % v->window) * (size_t)v->entry_bytes;
}

/* Main compressed entry w, 0 <= w < cap_entries: [entry_bytes] record (kv_schema.h format). */
static inline uint8_t *dsv4_kv_view_entry(const dsv4_kv_layer_view *v, int64_t w) {
    DSV4_ASSERT(w >= 0 && w < v->cap_entries);
    int64_t b = w / v->entries_per_block, e = w % v->entries_per_block;
    return v->block_arena + (size_t)v->block_table[b] * v->block_bytes + v->main_off + (size_t)e * v->entry_bytes;
}

/* Indexer key w (CSA), 0 <= w < cap_entries: packed codes [ikey_code_bytes] and scales [ikey_n_scales]. */
static inline uint8_t *dsv4_kv_view_ikey_codes(const dsv4_kv_layer_view *v, int64_t w) {
    DSV4_ASSERT(v->kind == DSV4_LAYER_CSA && w >= 0 && w < v->cap_entries);
    int64_t b = w / v->entries_per_block, e = w % v->entries_per_block;
    return v->block_arena + (size_t)v->block_table[b] * v->block_bytes + v->ikey_off + (size_t)e * v->ikey_code_bytes;
}
static inline uint8_t *dsv4_kv_view_ikey_scales(const dsv4_kv_layer_view *v, int64_t w) {
    DSV4_ASSERT(v->kind == DSV4_LAYER_CSA && w >= 0 && w < v->cap_entries);
    int64_t b = w / v->entries_per_block, e = w % v->entries_per_block;
    return v->block_arena + (size_t)v->block_table[b] * v->block_bytes + v->ikey_off + v->ikey_scale_off +
           (size_t)e * v->ikey_n_scales;
}

/* ---- queries -------------------------------------------------------------------------------------- */
const dsv4_kv_schema *dsv4_kv_manager_schema(const dsv4_kv_manager *m);
const dsv4_kv_mem_ops *dsv4_kv_manager_mem(const dsv4_kv_manager *m);   /* the arenas' memory hook */
int64_t dsv4_kv_manager_pos(const dsv4_kv_manager *m, int slot);          /* -1 if not admitted */
int64_t dsv4_kv_manager_seq_blocks(const dsv4_kv_manager *m, int slot);   /* blocks held; -1 if not admitted */
int64_t dsv4_kv_manager_free_blocks(const dsv4_kv_manager *m);
int64_t dsv4_kv_manager_total_blocks(const dsv4_kv_manager *m);
int dsv4_kv_manager_free_slots(const dsv4_kv_manager *m);
/* Host block tables for a device mirror: [max_requests, *max_blocks_per_seq] int32, -1 = no block.
 * Copy it (e.g. cudaMemcpyAsync) after prepare_step; it changes only in admit/prepare_step/release. */
const int32_t *dsv4_kv_manager_block_tables(const dsv4_kv_manager *m, int64_t *max_blocks_per_seq);

#ifdef __cplusplus
}
#endif
#endif

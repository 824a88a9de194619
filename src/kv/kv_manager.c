/* kv_manager.c — request slots, block tables, positions, step preparation and views (see kv_manager.h).
 * Every fallible call checks everything first and mutates only after all checks passed. */
#include "kv/kv_manager.h"

#include <stdlib.h>
#include <string.h>

struct dsv4_kv_manager {
    dsv4_kv_schema schema;   /* owned copy; the pool and views point into it */
    dsv4_kv_pool pool;       /* owned */
    int max_requests;
    int64_t max_seq_len;     /* tokens */
    int64_t max_blocks_per_seq;
    int32_t *tables;         /* owned [max_requests, max_blocks_per_seq], -1 = none */
    int64_t *pos;            /* owned [max_requests] committed tokens; -1 = slot free */
    int64_t *n_held;         /* owned [max_requests] blocks held */
    int64_t *mtp_pos;        /* owned [max_requests] committed MTP rows (position of the MTP block's next row) */
    int *free_slots;         /* owned [max_requests] stack; [0, n_free_slots) free */
    int n_free_slots;
    uint32_t *mark;          /* owned [max_requests] duplicate detection in prepare_step (generation stamps) */
    uint32_t gen;
};

static int slot_active(const dsv4_kv_manager *m, int slot) {
    return slot >= 0 && slot < m->max_requests && m->pos[slot] >= 0;
}

dsv4_status dsv4_kv_manager_create(const dsv4_config *cfg, const dsv4_kv_manager_params *pr,
                                   dsv4_kv_manager **out, dsv4_err *err) {
    *out = NULL;
    if (!cfg || !pr || pr->max_requests < 1 || pr->n_blocks < 0 || pr->max_total_tokens < 0 || pr->max_seq_len < 0)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv manager: bad parameters");
    dsv4_kv_manager *m = calloc(1, sizeof *m);
    if (!m) return dsv4_err_set(err, DSV4_ERR_NOMEM, "kv manager: allocation");
    dsv4_status st = dsv4_kv_schema_init(&m->schema, cfg, pr->block_tokens, err);
    if (st != DSV4_OK) {
        free(m);
        return st;
    }
    const dsv4_kv_schema *s = &m->schema;
    int64_t n_blocks = pr->n_blocks;
    if (n_blocks == 0 && pr->max_total_tokens > 0 && s->block_bytes > 0)
        n_blocks = dsv4_kv_schema_blocks_for_tokens(s, pr->max_total_tokens) + pr->max_requests;
    int64_t max_seq = pr->max_seq_len ? pr->max_seq_len
                                      : (pr->max_total_tokens ? pr->max_total_tokens : n_blocks * s->block_tokens);
    m->max_requests = pr->max_requests;
    m->max_seq_len = max_seq;
    m->max_blocks_per_seq = dsv4_kv_schema_blocks_for_tokens(s, max_seq);
    if (m->max_blocks_per_seq > (int64_t)1 << 30) {
        free(m);
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv manager: max_seq_len %lld too large", (long long)max_seq);
    }
    size_t nt = (size_t)pr->max_requests * (size_t)(m->max_blocks_per_seq ? m->max_blocks_per_seq : 1);
    m->tables = malloc(nt * sizeof *m->tables);
    m->pos = malloc((size_t)pr->max_requests * sizeof *m->pos);
    m->n_held = calloc((size_t)pr->max_requests, sizeof *m->n_held);
    m->free_slots = malloc((size_t)pr->max_requests * sizeof *m->free_slots);
    m->mark = calloc((size_t)pr->max_requests, sizeof *m->mark);
    m->mtp_pos = calloc((size_t)pr->max_requests, sizeof *m->mtp_pos);
    if (!m->tables || !m->pos || !m->n_held || !m->free_slots || !m->mark || !m->mtp_pos) {
        dsv4_kv_manager_destroy(m);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "kv manager: host tables");
    }
    for (size_t i = 0; i < nt; i++) m->tables[i] = -1;
    for (int i = 0; i < pr->max_requests; i++) {
        m->pos[i] = -1;
        m->free_slots[i] = pr->max_requests - 1 - i; /* slot 0 is handed out first */
    }
    m->n_free_slots = pr->max_requests;
    st = dsv4_kv_pool_init(&m->pool, &m->schema, n_blocks, pr->max_requests, pr->mem, err);
    if (st != DSV4_OK) {
        dsv4_kv_manager_destroy(m);
        return st;
    }
    *out = m;
    return DSV4_OK;
}

void dsv4_kv_manager_destroy(dsv4_kv_manager *m) {
    if (!m) return;
    dsv4_kv_pool_free(&m->pool);
    free(m->tables);
    free(m->pos);
    free(m->n_held);
    free(m->free_slots);
    free(m->mark);
    free(m->mtp_pos);
    free(m);
}

static int32_t *table_of(const dsv4_kv_manager *m, int slot) {
    return m->tables + (size_t)slot * (size_t)m->max_blocks_per_seq;
}

/* ---- admit / release ------------------------------------------------------------------------------ */

dsv4_status dsv4_kv_manager_admit(dsv4_kv_manager *m, int64_t n_prompt_tokens, int *slot, dsv4_err *err) {
    if (n_prompt_tokens < 0)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv admit: n_prompt_tokens %lld", (long long)n_prompt_tokens);
    if (m->n_free_slots == 0)
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "kv admit: all %d request slots in use", m->max_requests);
    if (n_prompt_tokens > m->max_seq_len)
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "kv admit: %lld prompt tokens exceed max_seq_len %lld",
                            (long long)n_prompt_tokens, (long long)m->max_seq_len);
    int s = m->free_slots[m->n_free_slots - 1];
    int64_t need = dsv4_kv_schema_blocks_for_tokens(&m->schema, n_prompt_tokens);
    DSV4_ASSERT(need <= m->max_blocks_per_seq);
    dsv4_status st = dsv4_kv_pool_acquire(&m->pool, need, table_of(m, s), err);
    if (st != DSV4_OK) {
        dsv4_err_prefix(err, "kv admit of %lld tokens", (long long)n_prompt_tokens);
        for (int64_t i = 0; i < need; i++) table_of(m, s)[i] = -1;
        return st;
    }
    st = dsv4_kv_pool_slot_reset(&m->pool, s, err);
    if (st != DSV4_OK) {
        DSV4_ASSERT(dsv4_kv_pool_release(&m->pool, need, table_of(m, s), NULL) == DSV4_OK);
        for (int64_t i = 0; i < need; i++) table_of(m, s)[i] = -1;
        return st;
    }
    m->n_free_slots--;
    m->pos[s] = 0;
    m->mtp_pos[s] = 0;
    m->n_held[s] = need;
    *slot = s;
    return DSV4_OK;
}

dsv4_status dsv4_kv_manager_release(dsv4_kv_manager *m, int slot, dsv4_err *err) {
    if (!slot_active(m, slot)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv release: slot %d not admitted", slot);
    int32_t *t = table_of(m, slot);
    dsv4_status st = dsv4_kv_pool_release(&m->pool, m->n_held[slot], t, err);
    DSV4_ASSERT(st == DSV4_OK); /* the table only ever holds ids acquired for this slot */
    for (int64_t i = 0; i < m->n_held[slot]; i++) t[i] = -1;
    m->n_held[slot] = 0;
    m->pos[slot] = -1;
    m->free_slots[m->n_free_slots++] = slot;
    return DSV4_OK;
}

/* ---- steps ---------------------------------------------------------------------------------------- */

dsv4_status dsv4_kv_manager_prepare_step(dsv4_kv_manager *m, const dsv4_kv_step_seq *seqs, int n, int *failed,
                                         dsv4_err *err) {
    if (failed) *failed = -1;
    if (n < 0 || (n > 0 && !seqs)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv prepare_step: bad list");
    if (++m->gen == 0) { /* stamps wrapped: clear them once */
        memset(m->mark, 0, (size_t)m->max_requests * sizeof *m->mark);
        m->gen = 1;
    }
    /* Pass 1: validate and count, in list order. */
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        int s = seqs[i].slot;
        dsv4_status bad = DSV4_OK;
        if (!slot_active(m, s)) {
            bad = dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv prepare_step: seqs[%d]: slot %d not admitted", i, s);
        } else if (m->mark[s] == m->gen) {
            bad = dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv prepare_step: seqs[%d]: slot %d listed twice", i, s);
        } else if (seqs[i].n_new < 0) {
            bad = dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv prepare_step: seqs[%d]: n_new %lld", i,
                               (long long)seqs[i].n_new);
        } else if (m->pos[s] + seqs[i].n_new > m->max_seq_len) {
            bad = dsv4_err_set(err, DSV4_ERR_CAPACITY, "kv prepare_step: seqs[%d] (slot %d): %lld + %lld tokens "
                               "exceed max_seq_len %lld", i, s, (long long)m->pos[s], (long long)seqs[i].n_new,
                               (long long)m->max_seq_len);
        } else {
            int64_t want = dsv4_kv_schema_blocks_for_tokens(&m->schema, m->pos[s] + seqs[i].n_new);
            int64_t need = want > m->n_held[s] ? want - m->n_held[s] : 0;
            if (total + need > dsv4_kv_pool_n_free(&m->pool))
                bad = dsv4_err_set(err, DSV4_ERR_CAPACITY,
                                   "kv prepare_step: seqs[%d] (slot %d) needs %lld blocks, %lld of %lld free left "
                                   "after the sequences before it", i, s, (long long)need,
                                   (long long)(dsv4_kv_pool_n_free(&m->pool) - total),
                                   (long long)dsv4_kv_pool_n_free(&m->pool));
            total += need;
        }
        if (bad != DSV4_OK) {
            if (failed) *failed = i;
            return bad;
        }
        m->mark[s] = m->gen;
    }
    /* Pass 2: allocate; cannot fail after pass 1. */
    for (int i = 0; i < n; i++) {
        int s = seqs[i].slot;
        int64_t want = dsv4_kv_schema_blocks_for_tokens(&m->schema, m->pos[s] + seqs[i].n_new);
        if (want <= m->n_held[s]) continue;
        dsv4_status st = dsv4_kv_pool_acquire(&m->pool, want - m->n_held[s], table_of(m, s) + m->n_held[s], NULL);
        DSV4_ASSERT(st == DSV4_OK);
        m->n_held[s] = want;
    }
    return DSV4_OK;
}

dsv4_status dsv4_kv_manager_commit(dsv4_kv_manager *m, int slot, int64_t n_tokens, dsv4_err *err) {
    if (!slot_active(m, slot)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv commit: slot %d not admitted", slot);
    if (n_tokens < 0 || m->pos[slot] + n_tokens > m->max_seq_len ||
        dsv4_kv_schema_blocks_for_tokens(&m->schema, m->pos[slot] + n_tokens) > m->n_held[slot])
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                            "kv commit: slot %d: %lld + %lld tokens not prepared (%lld blocks held)", slot,
                            (long long)m->pos[slot], (long long)n_tokens, (long long)m->n_held[slot]);
    m->pos[slot] += n_tokens;
    return DSV4_OK;
}

/* Rollback (speculative decoding): position back to n_tokens, and the blocks that n_tokens does not need
 * go back to the pool, last acquired first, so the pool's free list is as it was before they were taken. */
dsv4_status dsv4_kv_manager_truncate(dsv4_kv_manager *m, int slot, int64_t n_tokens, dsv4_err *err) {
    if (!slot_active(m, slot)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv truncate: slot %d not admitted", slot);
    if (n_tokens < 0 || n_tokens > m->pos[slot])
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv truncate: slot %d: %lld tokens, position is %lld", slot,
                            (long long)n_tokens, (long long)m->pos[slot]);
    int64_t want = dsv4_kv_schema_blocks_for_tokens(&m->schema, n_tokens);
    int32_t *t = table_of(m, slot);
    while (m->n_held[slot] > want) {
        int64_t i = --m->n_held[slot];
        dsv4_status st = dsv4_kv_pool_release(&m->pool, 1, &t[i], NULL);
        DSV4_ASSERT(st == DSV4_OK);
        t[i] = -1;
    }
    m->pos[slot] = n_tokens;
    if (m->mtp_pos[slot] > n_tokens) m->mtp_pos[slot] = n_tokens;
    return DSV4_OK;
}

int64_t dsv4_kv_manager_mtp_pos(const dsv4_kv_manager *m, int slot) {
    return slot_active(m, slot) ? m->mtp_pos[slot] : -1;
}

dsv4_status dsv4_kv_manager_mtp_commit(dsv4_kv_manager *m, int slot, int64_t n_rows, dsv4_err *err) {
    if (!slot_active(m, slot)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv mtp commit: slot %d not admitted", slot);
    if (n_rows < 0 || m->mtp_pos[slot] + n_rows > m->pos[slot])
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv mtp commit: slot %d: %lld + %lld MTP rows pass the %lld "
                            "committed tokens", slot, (long long)m->mtp_pos[slot], (long long)n_rows,
                            (long long)m->pos[slot]);
    m->mtp_pos[slot] += n_rows;
    return DSV4_OK;
}

/* ---- views ---------------------------------------------------------------------------------------- */

static void cmp_view(dsv4_kv_cmp_view *v, const dsv4_kv_cmp_schema *c, uint8_t *slot) {
    memset(v, 0, sizeof *v);
    if (!c->present) return;
    v->ratio = c->ratio;
    v->d = c->d;
    v->overlap = c->overlap;
    v->kv_cur = (float *)(void *)(slot + c->kv_cur_off);
    v->sc_cur = (float *)(void *)(slot + c->sc_cur_off);
    if (c->overlap) {
        v->kv_prev = (float *)(void *)(slot + c->kv_prev_off);
        v->sc_prev = (float *)(void *)(slot + c->sc_prev_off);
    }
}

dsv4_status dsv4_kv_manager_view(const dsv4_kv_manager *m, int slot, int layer, dsv4_kv_layer_view *v,
                                 dsv4_err *err) {
    if (!slot_active(m, slot)) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv view: slot %d not admitted", slot);
    const dsv4_kv_schema *s = &m->schema;
    if (layer < 0 || layer >= s->n_layers)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv view: layer %d out of range [0, %d)", layer, s->n_layers);
    const dsv4_kv_layer_schema *L = &s->layer[layer];
    uint8_t *sb = dsv4_kv_pool_slot_addr(&m->pool, slot);
    memset(v, 0, sizeof *v);
    v->layer = layer;
    v->kind = L->kind;
    v->ratio = L->ratio;
    v->pos = m->pos[slot];
    v->ring = sb + L->ring_off;
    v->window = s->window;
    v->n_ring_valid = (int)(v->pos < s->window ? v->pos : s->window);
    v->entry_bytes = s->entry.bytes;
    v->entry_fmt = &s->entry;
    if (L->ratio != 0) {
        v->n_entries = v->pos / L->ratio;
        v->n_blocks = m->n_held[slot];
        v->cap_entries = v->n_blocks * L->entries_per_block;
        v->block_table = table_of(m, slot);
        v->block_arena = m->pool.blocks;
        v->block_bytes = s->block_bytes;
        v->main_off = L->main_off;
        v->entries_per_block = L->entries_per_block;
        cmp_view(&v->cmp, &L->cmp, sb);
        if (L->kind == DSV4_LAYER_CSA) {
            v->ikey_off = L->ikey_off;
            v->ikey_scale_off = L->ikey_scale_off;
            v->ikey_code_bytes = s->ikey.code_bytes;
            v->ikey_n_scales = s->ikey.n_scales;
            v->ikey_fmt = &s->ikey;
            cmp_view(&v->icmp, &L->icmp, sb);
        }
    }
    return DSV4_OK;
}

/* ---- queries -------------------------------------------------------------------------------------- */

const dsv4_kv_schema *dsv4_kv_manager_schema(const dsv4_kv_manager *m) { return &m->schema; }
const dsv4_kv_mem_ops *dsv4_kv_manager_mem(const dsv4_kv_manager *m) { return &m->pool.mem; }
int64_t dsv4_kv_manager_pos(const dsv4_kv_manager *m, int slot) { return slot_active(m, slot) ? m->pos[slot] : -1; }
int64_t dsv4_kv_manager_seq_blocks(const dsv4_kv_manager *m, int slot) {
    return slot_active(m, slot) ? m->n_held[slot] : -1;
}
int64_t dsv4_kv_manager_free_blocks(const dsv4_kv_manager *m) { return dsv4_kv_pool_n_free(&m->pool); }
int64_t dsv4_kv_manager_total_blocks(const dsv4_kv_manager *m) { return m->pool.n_blocks; }
int dsv4_kv_manager_free_slots(const dsv4_kv_manager *m) { return m->n_free_slots; }
const int32_t *dsv4_kv_manager_block_tables(const dsv4_kv_manager *m, int64_t *max_blocks_per_seq) {
    if (max_blocks_per_seq) *max_blocks_per_seq = m->max_blocks_per_seq;
    return m->tables;
}

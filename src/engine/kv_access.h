/* kv_access.h — the forward pass's narrow view of the KV-cache manager (src/kv): per-sequence window
 * rows, compressed entries and indexer keys as float rows (decoded from / encoded to the compact
 * bit-exact storage), and the compressor tail state in place. Keeps forward_cpu.c independent of the
 * storage layout. All functions address memory the manager prepared; none allocate. */
#ifndef DSV4_ENGINE_KV_ACCESS_H
#define DSV4_ENGINE_KV_ACCESS_H

#include "dsv4.h"
#include "kv/kv_manager.h"

#ifdef __cplusplus
extern "C" {
#endif

enum { DSV4_KV_COMP_MAIN = 0, DSV4_KV_COMP_INDEXER = 1 };

/* Compressor tail state of one sequence, layer and compressor (FP32, raw per-token values; scores
 * include ape): overlap: prev [r, d] (first half of the previous window), cur [r, 2d]; non-overlap:
 * cur [r, d], prev NULL. Row of token t is t mod r. Empty rows: value 0, score -inf. */
typedef struct dsv4_kv_comp_state {
    float *prev_val, *prev_score;
    float *cur_val, *cur_score;
} dsv4_kv_comp_state;

/* Creates a manager for cfg with max_seqs slots and capacity for max_tokens tokens of compressed state
 * over all sequences (rounded up to whole blocks). */
dsv4_status dsv4_kv_access_create(const dsv4_config *cfg, int max_seqs, long max_tokens, dsv4_kv_manager **out,
                                  dsv4_err *err);
void dsv4_kv_access_destroy(dsv4_kv_manager *kv);
dsv4_status dsv4_kv_access_admit(dsv4_kv_manager *kv, int *slot, dsv4_err *err);
void dsv4_kv_access_release(dsv4_kv_manager *kv, int slot);
int dsv4_kv_access_slot_valid(dsv4_kv_manager *kv, int slot);

dsv4_status dsv4_kv_access_prepare(dsv4_kv_manager *kv, const int *slots, const int *counts, int n, dsv4_err *err);
long dsv4_kv_access_seq_len(dsv4_kv_manager *kv, int slot);
void dsv4_kv_access_commit(dsv4_kv_manager *kv, const int *slots, const int *counts, int n);

void dsv4_kv_access_window_read(dsv4_kv_manager *kv, int slot, int layer, long pos, float *out);
/* The three writes refuse a row holding a NaN or infinity (DSV4_ERR_FORMAT, nothing written): such a row
 * comes from a non-finite weight or activation, and the caller fails the step naming the layer. Any other
 * row they cannot store is a bug (assert). */
dsv4_status dsv4_kv_access_window_write(dsv4_kv_manager *kv, int slot, int layer, long pos, const float *row);
void dsv4_kv_access_comp_read(dsv4_kv_manager *kv, int slot, int layer, long w, float *out);
dsv4_status dsv4_kv_access_comp_write(dsv4_kv_manager *kv, int slot, int layer, long w, const float *row);
void dsv4_kv_access_idx_read(dsv4_kv_manager *kv, int slot, int layer, long w, float *out);
dsv4_status dsv4_kv_access_idx_write(dsv4_kv_manager *kv, int slot, int layer, long w, const float *row);
dsv4_kv_comp_state dsv4_kv_access_comp_state(dsv4_kv_manager *kv, int slot, int layer, int which);

#ifdef __cplusplus
}
#endif
#endif

/* cuda_step.h — the per-step inputs of the CUDA forward pass as the device sees them (dsv4_glue_step), shared
 * by the launchers that compute something position-dependent: the KV codec (cuda_kv_codec.h), the compressor
 * tail state (cuda_compressor_state.h) and the attention index lists (cuda_index_lists.h). Plain C header.
 *
 * Everything position-dependent is computed on the device from these inputs: the ring slot, window validity,
 * which compressor window completes, how many entries a query sees. The host only knows shapes (rows,
 * sequences, the number of tokens of each sequence), so a decode step can be captured once in a CUDA graph
 * and replayed with new inputs. A sequence whose slot is -1 is padding: nothing of it is written to the KV
 * cache, its attention lists are empty. */
#ifndef DSV4_BACKEND_CUDA_CUDA_STEP_H
#define DSV4_BACKEND_CUDA_CUDA_STEP_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Per-step inputs, device pointers (rows = token rows, sequences in step order, rows of a sequence
 * contiguous and in position order). */
typedef struct dsv4_glue_step {
    const int32_t *pos;    /* [rows] position of each row */
    const int32_t *rseq;   /* [rows] sequence index (in the step) of each row */
    const int32_t *sslot;  /* [n_seq] KV slot, -1 = padding */
    const int32_t *spos0;  /* [n_seq] committed length before the step (position of its first row) */
    const int32_t *srow0;  /* [n_seq] first row */
    const int32_t *sn;     /* [n_seq] rows (new tokens) */
    int rows, n_seq;
} dsv4_glue_step;

#ifdef __cplusplus
}
#endif
#endif

/* spec.h — the MTP draft head kept in step with a sequence, and greedy speculative decoding (issue 15; spec
 * §4.10). Written against forward.h and the KV manager only; the decode runs over a small backend table
 * (dsv4_spec_backend: the CPU reference, or the CUDA forward that engine.c plugs in).
 *
 * MTP bookkeeping of a sequence ("in sync"): the MTP block has run every row whose next token is known,
 * so its position (dsv4_kv_manager_mtp_pos) is max(len - 1, 0), and last_h holds the main model's final
 * hyper-connection state at position len - 1 (the h of the row that waits for the next token). The caller
 * owns last_h ([hc * D] floats per sequence); dsv4_spec_step keeps both in sync, and so does
 * dsv4_spec_decode_greedy, which leaves the KV state bitwise equal to that of a run that fed the same
 * accepted tokens through dsv4_spec_step (rejected drafts leave no trace: kv_rollback.h). */
#ifndef DSV4_ENGINE_SPEC_H
#define DSV4_ENGINE_SPEC_H

#include <stdint.h>

#include "dsv4.h"
#include "engine/forward.h"
#include "kv/kv_manager.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_SPEC_MAX_DRAFT 3

/* As dsv4_forward_step, then the MTP block runs (and commits) every row of each sequence whose next token
 * became known: position pos0 - 1 (with last_h[i], when the sequence had tokens) and pos0 .. pos0+n-2.
 * last_h[i] ([hc*D], borrowed, of steps[i]'s sequence) is updated to the step's last row. mtp_logits
 * (optional): [*n_mtp_rows, vocab], rows in step order then position order. Every sequence must be in
 * sync (INVALID_ARG otherwise, nothing changed). */
dsv4_status dsv4_spec_step(dsv4_forward *f, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps,
                           float *const *last_h, float *logits, float *mtp_logits, int *n_mtp_rows, dsv4_err *err);

typedef struct dsv4_spec_stats {
    long steps;      /* verification forwards */
    long drafted;    /* draft tokens proposed */
    long accepted;   /* draft tokens accepted */
} dsv4_spec_stats;

/* The forward a speculative decode runs over: the CPU reference (dsv4_spec_backend_cpu) or the CUDA forward
 * (engine.c). Both calls have forward.h's contracts; step's hidden (optional) gets the final HC state of every
 * row of the step, [rows, hc, D] FP32 in step order (dsv4_forward_hidden). */
typedef struct dsv4_spec_backend {
    void *fwd;                   /* borrowed: dsv4_forward or dsv4_forward_cuda */
    const dsv4_model *model;     /* borrowed */
    dsv4_status (*step)(void *fwd, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps, float *logits,
                        float *hidden, dsv4_err *err);
    dsv4_status (*mtp)(void *fwd, dsv4_kv_manager *kv, const dsv4_mtp_step *steps, int n_steps, float *logits,
                       float *h_out, dsv4_err *err);
} dsv4_spec_backend;
void dsv4_spec_backend_cpu(dsv4_forward *f, dsv4_spec_backend *out);

/* Tests only: replaces the MTP's drafts of a sequence (d[0..k-1], the tokens it proposed after `first` at
 * position pos) before verification, to drive every acceptance count; the MTP block still runs as usual. */
typedef void (*dsv4_spec_draft_fn)(void *user, int slot, long pos, int32_t first, int k, int32_t *d);

/* Greedy speculative decoding of n_seqs in-sync sequences (slots[i], last_h[i] its state): feeds first[i]
 * to each, and produces n_steps tokens per sequence, out [n_steps, n_seqs] (as dsv4_engine_decode_greedy),
 * each the argmax (ties: lower id) of the main model's logits: exactly the tokens and the KV state of plain
 * greedy decoding (one token per forward). Each round drafts up to k (1..3) tokens per sequence with the MTP
 * block (chained: a draft row's own HC state is the h of the next), verifies all sequences' drafts in one
 * forward of k+1 rows each, keeps per sequence the longest agreeing prefix plus the main model's token
 * after it and rolls the rest back; sequences accept different counts and finish when they have n_steps
 * tokens. stats (optional): [n_seqs]. One rank only. On failure a sequence may be left part-way (its KV
 * state then matches the tokens fed so far, but it may be out of MTP sync). */
dsv4_status dsv4_spec_decode_greedy(dsv4_forward *f, dsv4_kv_manager *kv, int n_seqs, const int *slots,
                                    float *const *last_h, const int32_t *first, int n_steps, int k, int32_t *out,
                                    dsv4_spec_stats *stats, dsv4_spec_draft_fn draft_hook, void *hook_user,
                                    dsv4_err *err);
/* The same over any backend (kv: the backend's KV manager; device arenas need the memory hook's copy for the
 * rollback, kv_rollback.h). On the GPU the verification rows and a one-token decode sum in different orders,
 * so the tokens are plain greedy decoding's except where the main model has a near tie. */
dsv4_status dsv4_spec_decode_greedy_on(const dsv4_spec_backend *be, dsv4_kv_manager *kv, int n_seqs, const int *slots,
                                       float *const *last_h, const int32_t *first, int n_steps, int k, int32_t *out,
                                       dsv4_spec_stats *stats, dsv4_spec_draft_fn draft_hook, void *hook_user,
                                       dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

/* forward.h — the forward pass of DeepSeek V4 over a batch of sequences, on the CPU reference backend
 * (spec §4). Each sequence of a step brings new tokens (a prefill chunk of any length, or one decode
 * token) at consecutive positions starting at its current length; one step runs all of them through every
 * layer and returns FP32 logits for the sequences that ask for them (the last position of their chunk).
 * The per-request state (SWA rings, compressed caches, indexer keys, compressor tails) lives in the KV
 * manager (src/kv); this module only reads and appends through its views.
 *
 * Determinism contract: a sequence's results are bitwise independent of the other sequences in the batch
 * and of how its tokens were split into steps (prefill vs chunked prefill vs token-by-token decode): every
 * op is row-independent and per-position work is done in position order. */
#ifndef DSV4_ENGINE_FORWARD_H
#define DSV4_ENGINE_FORWARD_H

#include <stdint.h>

#include "core/threadpool.h"
#include "dist/comm.h"
#include "dsv4.h"
#include "engine/model.h"
#include "kv/kv_manager.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_seq_step {
    int slot;               /* KV manager slot of the sequence (admitted) */
    const int32_t *tokens;  /* [n_tokens] borrowed; positions are slot's current length onward */
    int n_tokens;           /* >= 1 */
    int want_logits;        /* 1: write logits of the chunk's last position; DSV4_LOGITS_ALL: of every position
                               (n_tokens rows; speculative verification, one rank only) */
} dsv4_seq_step;

enum { DSV4_LOGITS_ALL = 2 };

/* Called after every layer with the hyper-connection state of every row of the step
 * (X [n_rows, hc, D], float32 holding bf16 values); rows are the batch's tokens in order. Optional. */
typedef dsv4_layer_dump_fn dsv4_layer_hook;

typedef struct dsv4_forward dsv4_forward;

dsv4_status dsv4_forward_create(const dsv4_model *model, dsv4_threadpool *pool, dsv4_forward **out,
                                dsv4_err *err);
void dsv4_forward_destroy(dsv4_forward *f);
const dsv4_model *dsv4_forward_model(const dsv4_forward *f);
void dsv4_forward_set_hook(dsv4_forward *f, dsv4_layer_hook hook, void *user);
/* Tensor/expert parallelism: the model was loaded for one rank (dsv4_model_load_shard, world > 1) and comm
 * (borrowed; its rank/world must equal the model's shard) joins the forwards of the other ranks. Every rank
 * runs dsv4_forward_step with the same steps on its own (replicated) KV manager, concurrently; the logits
 * and every rank's state come out bitwise identical on all ranks. A step without a communicator on a
 * partitioned model fails with DSV4_ERR_INVALID_ARG. */
void dsv4_forward_set_comm(dsv4_forward *f, dsv4_comm *comm);
/* Tests only: run a deliberately broken variant (dsv4_fault of dsv4.h). */
void dsv4_forward_set_fault(dsv4_forward *f, int fault);

/* Runs one step. Before the step, the caller has admitted every slot; this function asks the KV manager
 * to prepare the blocks the step needs (all-or-nothing) and fails with DSV4_ERR_CAPACITY without touching
 * any state if they are not available. logits: [n_want, vocab] in the order of steps with want_logits.
 * On success every sequence's length advances by its n_tokens. */
dsv4_status dsv4_forward_step(dsv4_forward *f, dsv4_kv_manager *kv, const dsv4_seq_step *steps, int n_steps,
                              float *logits, dsv4_err *err);

/* The final hyper-connection state (after the last layer, before hc_head) of rows [row0, row0+n) of the
 * last dsv4_forward_step, [n, hc, D] float32 holding bf16 values, copied to dst. Valid until the next
 * step or MTP call on f. Rows are the step's tokens in order (sequence by sequence). */
void dsv4_forward_hidden(const dsv4_forward *f, int row0, int n, float *dst);

/* ---- MTP block (spec §4.10) -------------------------------------------------------------------------
 * The checkpoint's draft head. Row at position p of a sequence combines the main model's final HC state
 * at p (h) with the token at p+1 (next) and predicts the token at p+2; it runs its own SWA block (layer
 * n_layers of the KV schema: its own window ring, θ = rope_theta without YaRN, learned-routing MoE) and
 * the logits come from its hc_head, its norm and the shared head. RoPE position of the row: p (the same
 * start position as the main model, as the official block is called). Rows of a sequence are consecutive
 * positions pos0 .. pos0+n-1; positions below pos0 are read from the MTP ring. */
typedef struct dsv4_mtp_step {
    int slot;               /* KV manager slot (admitted) */
    long pos0;              /* position of the first row */
    const float *h;         /* [n, hc, D] borrowed: main (or, chained drafting, MTP) final HC state per row */
    const int32_t *next;    /* [n] borrowed: token at position p+1 of each row */
    int n;                  /* >= 1 */
    int want_logits;        /* 0, 1 (last row) or DSV4_LOGITS_ALL */
    int commit;             /* 1: the rows are final: pos0 must equal the slot's MTP position, which then
                               advances by n (and may not pass the committed tokens). 0: draft rows; they
                               write the ring like any row (save / restore it with kv_rollback.h), and the
                               caller makes sure the ring holds every position below pos0 they read */
} dsv4_mtp_step;

/* Runs the MTP block over the rows of the steps (one rank only: DSV4_ERR_UNSUPPORTED on a partitioned
 * model or a checkpoint without mtp.0.*). logits: [rows wanted, vocab] FP32 in step order. h_out
 * (optional): [total rows, hc, D] the block's own final HC state (the h of a chained draft row). Fails
 * with INVALID_ARG (nothing changed) on bad input. Does not touch the main model's state. */
dsv4_status dsv4_forward_mtp(dsv4_forward *f, dsv4_kv_manager *kv, const dsv4_mtp_step *steps, int n_steps,
                             float *logits, float *h_out, dsv4_err *err);

/* The input checks of an MTP batch, the same on every backend (forward_cpu.c; the CUDA MTP runs them too):
 * a non-empty batch, admitted distinct slots, rows with h and tokens in [0, vocab), committed rows starting
 * at the slot's MTP position and within its committed tokens. *rows (optional): the batch's total rows. */
dsv4_status dsv4_mtp_check_steps(dsv4_kv_manager *kv, const dsv4_mtp_step *steps, int n_steps, int vocab, int *rows,
                                 dsv4_err *err);
/* A sequence "in sync" (spec.h): slot admitted and the MTP block has run every row whose next token is known
 * (its MTP position is max(len - 1, 0)). INVALID_ARG naming the slot otherwise. */
dsv4_status dsv4_mtp_check_sync(dsv4_kv_manager *kv, int slot, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

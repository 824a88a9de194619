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
    int want_logits;        /* 1: write logits of the chunk's last position */
} dsv4_seq_step;

/* Called after every layer with the hyper-connection state of every row of the step
 * (X [n_rows, hc, D], float32 holding bf16 values); rows are the batch's tokens in order. Optional. */
typedef dsv4_layer_dump_fn dsv4_layer_hook;

typedef struct dsv4_forward dsv4_forward;

dsv4_status dsv4_forward_create(const dsv4_model *model, dsv4_threadpool *pool, dsv4_forward **out,
                                dsv4_err *err);
void dsv4_forward_destroy(dsv4_forward *f);
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

#ifdef __cplusplus
}
#endif
#endif

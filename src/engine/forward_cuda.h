/* forward_cuda.h — the DeepSeek V4 forward pass on one CUDA device: the same computation, in the same order,
 * as forward_cpu.c (the reference), with weights resident on the device in their released formats, the KV
 * cache in device arenas (compact bit-exact entries, kv_schema.h) and decode steps replayed from captured
 * CUDA graphs. Plain C; without DSV4_HAVE_CUDA every entry point fails with DSV4_ERR_UNSUPPORTED
 * ("backend cuda not compiled in").
 *
 * Owns: the CUDA context, the device weights, the KV manager (created with a device-memory hook; callers
 * admit/release through dsv4_forward_cuda_kv and the kv_access.h functions), a workspace sized at creation
 * for max_rows rows and max_seqs sequences, pinned input staging, one graph per decode bucket
 * (1, 2, 4, ... max_seqs sequences of one token). Nothing allocates, synchronizes or branches on device data
 * inside a step; a step waits for the device only when it copies logits back.
 *
 * Not thread-safe: one caller drives it. */
#ifndef DSV4_ENGINE_FORWARD_CUDA_H
#define DSV4_ENGINE_FORWARD_CUDA_H

#include <stdint.h>

#include "dist/comm.h"
#include "dsv4.h"
#include "engine/forward.h"
#include "engine/model.h"
#include "kv/kv_manager.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_forward_cuda dsv4_forward_cuda;

typedef struct dsv4_forward_cuda_options {
    int device;        /* CUDA device ordinal */
    int max_seqs;      /* KV slots = most sequences in one step; <= 0: 8 */
    long max_tokens;   /* KV capacity in tokens (all sequences) and the longest sequence; <= 0: max_seqs*4096 */
    int max_rows;      /* most token rows per device pass (larger steps are split); <= 0: 512 */
    int no_graphs;     /* 1: decode steps run eagerly (tests compare against graph replay) */
    int verbose;       /* 1: upload progress and rate on stderr */
    int capacity_lists;/* benchmarks only: 1 = attention walks the capacity-sized lists (window + max entries),
                        * the behaviour before the live-length bounds; results are bitwise the same */
    dsv4_comm *comm;   /* borrowed, optional: this forward is rank comm->rank of a tensor/expert-parallel group
                        * (docs/MULTI_GPU.md). It computes the slice of the model's shard (m->shard: heads,
                        * groups, index heads, experts, vocab rows; only those weights are uploaded) and joins
                        * the ranks where forward_cpu.c does — embedding (FP32 all-reduce), indexer scores
                        * (BF16 all-reduce), wo_b and routed experts (FP32 all-reduce), head (all-gather) —
                        * with the collectives enqueued on this forward's stream and captured in its decode
                        * graphs. Required when m->shard.world > 1; with a one-rank communicator the
                        * collectives still run (and the results equal comm == NULL bit for bit). NULL: the
                        * single-GPU path, no collective. Every rank must run the same steps in the same
                        * order, each on its own host thread (dsv4_forward_cuda_* are per-thread calls). */
} dsv4_forward_cuda_options;

/* Uploads the model's weights (m must outlive the forward; wo_a is dequantized to BF16 on the device),
 * creates the KV manager on device memory and the workspace. Errors: UNSUPPORTED (no CUDA in this build or
 * no device), CUDA, NOMEM (device memory), CONFIG (a shape the kernels do not take). */
dsv4_status dsv4_forward_cuda_create(const dsv4_model *m, const dsv4_forward_cuda_options *opt,
                                     dsv4_forward_cuda **out, dsv4_err *err);
void dsv4_forward_cuda_destroy(dsv4_forward_cuda *f);

/* Device memory dsv4_forward_cuda_create(m, opt) would take on one GPU, computed without a device from the
 * same measuring passes: weight_bytes = the weight arena + the wo_a scratch of placement; other_bytes = the
 * workspace + the KV arenas and block tables + the context's own workspaces. (Not counted: the CUDA
 * context itself and allocator rounding; callers keep a margin.) UNSUPPORTED without CUDA. */
dsv4_status dsv4_forward_cuda_plan_bytes(const dsv4_model *m, const dsv4_forward_cuda_options *opt,
                                         size_t *weight_bytes, size_t *other_bytes, dsv4_err *err);

/* The KV manager (owned by f): admit / release / positions through kv_access.h. */
dsv4_kv_manager *dsv4_forward_cuda_kv(dsv4_forward_cuda *f);
void dsv4_forward_cuda_set_graphs(dsv4_forward_cuda *f, int enabled);

/* One step, the contract of dsv4_forward_step (forward.h): all-or-nothing block preparation, logits
 * [n_want, vocab] FP32 in the order of steps with want_logits, lengths advance on success. Steps where
 * every sequence brings one token replay the decode graph of the smallest bucket >= n_steps. */
dsv4_status dsv4_forward_cuda_step(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                   dsv4_err *err);

/* ---- MTP block (spec §4.10; forward_cuda_mtp.c) ----------------------------------------------------------
 * One GPU holding the whole model only: with a communicator (or a checkpoint without mtp.0.*) both calls
 * fail with DSV4_ERR_UNSUPPORTED. The MTP's window ring is layer n_layers of f's KV manager (mtp_pos there).
 *
 * dsv4_forward_cuda_mtp: the contract of forward.h's dsv4_forward_mtp (same checks, same messages, logits
 * [rows wanted, vocab] FP32 in step order, h_out optional [total rows, hc, D], committed steps advance the MTP
 * position): the h rows come from the host and go up as BF16 (exact for the BF16 values a forward produces;
 * others are rounded to nearest even). Runs eagerly and waits for the device. */
dsv4_status dsv4_forward_cuda_mtp(dsv4_forward_cuda *f, const dsv4_mtp_step *steps, int n_steps, float *logits,
                                  float *h_out, dsv4_err *err);

/* The main step of dsv4_forward_cuda_step, then (pass by pass) the MTP rows whose next token it made known,
 * committed: what spec.h's dsv4_spec_step does on the CPU, with the main model's final state kept on the
 * device (per slot, the state at its last fed position: the h of the row that waits for the next token).
 * Every sequence must be in MTP sync (spec.h: MTP position = max(length - 1, 0); INVALID_ARG otherwise,
 * nothing changed). mtp_logits (optional): [*n_mtp_rows, vocab], rows in step order then position order.
 * A failure after a pass was committed leaves that pass's tokens in (as dsv4_forward_cuda_step); the MTP of
 * the failing pass may be behind: the caller closes the sequence. */
dsv4_status dsv4_forward_cuda_step_mtp(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                       float *mtp_logits, int *n_mtp_rows, dsv4_err *err);

/* Speculative decoding support (spec.c over this forward; one GPU, a checkpoint with mtp.0.*, else UNSUPPORTED):
 * dsv4_forward_cuda_step_hidden is dsv4_forward_cuda_step (DSV4_LOGITS_ALL gives every row's logits) that also
 * writes the final hyper-connection state of every row of the step to hidden [rows, hc, D] FP32 (BF16 values;
 * rows in step order, as forward.h's dsv4_forward_hidden). dsv4_forward_cuda_mtp_state reads (get) or replaces
 * (set) the kept state of a slot (dsv4_forward_cuda_step_mtp: the main model's final state at its last position,
 * [hc, D] FP32); set marks it as the state at the slot's current length; get fails with INVALID_ARG when no state
 * of the current length is kept. */
dsv4_status dsv4_forward_cuda_step_hidden(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                          float *hidden, dsv4_err *err);
dsv4_status dsv4_forward_cuda_mtp_state(dsv4_forward_cuda *f, int slot, float *get, const float *set, dsv4_err *err);

/* Greedy decoding entirely on the device: each sequence (slot) is fed first[i] at its current position,
 * then n_steps-1 more steps feed back the argmax; out [n_steps, n_slots] holds the argmax token of every
 * step. The loop is n_steps graph replays with no host work in between (tokens and positions advance on
 * the device). ms (optional): device time of the loop, in milliseconds (CUDA events). */
dsv4_status dsv4_forward_cuda_decode_greedy(dsv4_forward_cuda *f, const int *slots, int n_slots,
                                            const int32_t *first, int n_steps, int32_t *out, double *ms,
                                            dsv4_err *err);

/* Layer hook (dsv4_layer_dump_fn, forward.h's dsv4_layer_hook): while set, every pass runs eagerly (no graph)
 * and after each layer downloads X (BF16 on the device) as FP32 [rows, hc, hidden] (the pass's rows: the
 * step's tokens sequence by sequence, as on the CPU), calls fn, and uploads X back (BF16, round to nearest
 * even: exact for values the hook took from BF16 data), so the hook may overwrite X (teacher forcing).
 * NULL removes it. Errors: NOMEM (host staging of max_rows rows). */
dsv4_status dsv4_forward_cuda_set_hook(dsv4_forward_cuda *f, dsv4_layer_dump_fn fn, void *user, dsv4_err *err);

/* Collective timing (tensor parallel only; benches): while on, passes run eagerly and CUDA events are recorded
 * around every collective; dsv4_forward_cuda_collective_time then gives the total device time between those
 * event pairs (waiting for peers included) and their number, over the last dsv4_forward_cuda_step.
 * Errors: INVALID_ARG without a communicator, CUDA (event creation). */
dsv4_status dsv4_forward_cuda_time_collectives(dsv4_forward_cuda *f, int on, dsv4_err *err);
void dsv4_forward_cuda_collective_time(const dsv4_forward_cuda *f, double *ms, int *n_calls);

/* Per-op profile (engine/profile.h; benches): while p is set (borrowed), passes run eagerly, an event is
 * recorded after every op group and each pass waits for the device at its end to add its times to p. NULL
 * turns it off; the decode graphs are neither captured nor changed while it is set. */
struct dsv4_prof;
void dsv4_forward_cuda_set_profile(dsv4_forward_cuda *f, struct dsv4_prof *p);

/* Device name and the weight upload (bytes, GB/s) for logs and benches. */
void dsv4_forward_cuda_describe(const dsv4_forward_cuda *f, char *buf, size_t n);

#ifdef __cplusplus
}
#endif
#endif

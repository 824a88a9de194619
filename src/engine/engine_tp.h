/* engine_tp.h — the ranks 1..N-1 of a tensor/expert-parallel engine on the CPU backend (rank 0 is the
 * engine's own model/KV/forward): one model shard, thread pool, replicated KV manager and forward each,
 * joined by the thread communicator. The engine mirrors every admission and release on them and runs
 * each step on all ranks at once (rank 0 on the caller's thread, the others on one host thread each —
 * the same one-thread-per-rank structure as a host thread per GPU with NCCL; docs/MULTI_GPU.md). */
#ifndef DSV4_ENGINE_ENGINE_TP_H
#define DSV4_ENGINE_ENGINE_TP_H

#include "dist/comm.h"
#include "dsv4.h"
#include "engine/forward.h"
#include "engine/forward_cuda.h"
#include "engine/model.h"
#include "kv/kv_manager.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_tp_group dsv4_tp_group;

/* Creates the communicator of world ranks and ranks 1..world-1 (world >= 2) for model_dir, each with
 * max(1, n_threads_total / world) pool threads (n_threads_total <= 0: all online CPUs) and its own KV
 * manager (max_seqs, max_tokens). *rank0_comm (owned by the group) is to be given to rank 0's forward. */
dsv4_status dsv4_tp_group_create(const char *model_dir, int world, int n_threads_total, int max_seqs,
                                 long max_tokens, dsv4_tp_group **out, dsv4_comm **rank0_comm, dsv4_err *err);
void dsv4_tp_group_destroy(dsv4_tp_group *g);
/* Pool threads each rank (rank 0 included) should use. */
int dsv4_tp_threads_per_rank(int n_threads_total, int world);
void dsv4_tp_group_set_fault(dsv4_tp_group *g, int fault);

/* Mirrors a rank-0 admission: every peer admits too and must get the same slot (replicated managers
 * make the same choices); DSV4_ERR_INTERNAL otherwise (the peers' admissions are then undone). */
dsv4_status dsv4_tp_group_admit(dsv4_tp_group *g, int slot0, dsv4_err *err);
void dsv4_tp_group_release(dsv4_tp_group *g, int slot);

/* Runs one step on every rank: peers on their threads, rank 0 (f0, kv0) on the caller's. logits come from
 * rank 0 (every rank holds the same bits). Returns rank 0's status, or the first peer failure. */
dsv4_status dsv4_tp_group_step(dsv4_tp_group *g, dsv4_forward *f0, dsv4_kv_manager *kv0, const dsv4_seq_step *steps,
                               int n_steps, float *logits, dsv4_err *err);

/* Tests: the logits rank r (1..world-1) computed in the last step ([n_want, vocab]; NULL when none). */
const float *dsv4_tp_group_peer_logits(const dsv4_tp_group *g, int rank);

/* ---- the CUDA group: one GPU per rank, devices 0..world-1, NCCL between them ---------------------------
 * Same structure: rank 0 is the engine's forward (on the caller's thread), ranks 1..world-1 are owned here
 * and run each step on a host thread of their own. Every rank holds a forward_cuda over its shard (its
 * weights only), its own replicated KV manager on its GPU, and its NCCL communicator (options.comm). */

/* DSV4_ERR_UNSUPPORTED naming both numbers when fewer than `world` CUDA devices are visible (or the build
 * has no CUDA). Cheap: meant to run before anything is loaded. */
dsv4_status dsv4_tp_cuda_check_devices(int world, dsv4_err *err);

/* Creates the NCCL communicators of devices 0..world-1 (world >= 2), rank 0's forward on m0 (the engine's
 * shard 0, borrowed) into *f0 (owned by the caller), and ranks 1..world-1 (each loads its shard of
 * model_dir and uploads it) — all ranks in parallel, one host thread each. `base` gives max_seqs,
 * max_tokens, max_rows, graphs and verbosity (its device and comm are ignored). */
dsv4_status dsv4_tp_cuda_group_create(const char *model_dir, int world, const dsv4_model *m0,
                                      const dsv4_forward_cuda_options *base, dsv4_tp_group **out,
                                      dsv4_forward_cuda **f0, dsv4_err *err);
/* dsv4_forward_cuda_step on every rank at once (logits from rank 0; every rank holds the same bits). */
dsv4_status dsv4_tp_cuda_step(dsv4_tp_group *g, dsv4_forward_cuda *f0, const dsv4_seq_step *steps, int n_steps,
                              float *logits, dsv4_err *err);
/* dsv4_forward_cuda_decode_greedy on every rank at once; DSV4_ERR_INTERNAL if the ranks' tokens differ. */
dsv4_status dsv4_tp_cuda_decode_greedy(dsv4_tp_group *g, dsv4_forward_cuda *f0, const int *slots, int n_slots,
                                       const int32_t *first, int n_steps, int32_t *out, double *ms, dsv4_err *err);
/* Tests and benches: the forward of rank r (1..world-1), NULL otherwise. */
dsv4_forward_cuda *dsv4_tp_group_peer_cuda(const dsv4_tp_group *g, int rank);

#ifdef __cplusplus
}
#endif
#endif

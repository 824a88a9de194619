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

#ifdef __cplusplus
}
#endif
#endif

/* engine_tp.h — the ranks of an engine: one group owns ranks 0..N-1 of a tensor/expert-parallel engine,
 * on either backend, and N = 1 is a group of one (no communicator, no threads). Each rank holds its shard
 * of the model (dsv4_model_load_shard), its forward (the cpu reference with a thread pool of its own, or a
 * forward_cuda on GPU r), its KV manager (replicated: every rank's holds the same state) and, when N > 1,
 * its endpoint of the communicator (threads on the cpu, NCCL between the GPUs). The group mirrors every
 * admission and release on all ranks and hands each step to all of them at once through one hand-off: rank
 * 0 runs it on the caller's thread, ranks 1..N-1 on a host thread each (created per step) — the same
 * one-thread-per-rank structure on both backends (docs/MULTI_GPU.md). engine.c talks to the group only.
 *
 * Not thread-safe: one caller drives the group (the engine's). */
#ifndef DSV4_ENGINE_ENGINE_TP_H
#define DSV4_ENGINE_ENGINE_TP_H

#include "dsv4.h"
#include "engine/forward.h"
#include "engine/forward_cuda.h"
#include "engine/model.h"
#include "kv/kv_manager.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_tp_group dsv4_tp_group;

typedef struct dsv4_tp_options {
    const char *model_dir;     /* borrowed: checkpoint directory */
    int world;                 /* ranks; <= 1: one. cuda: GPUs 0..world-1, one rank each */
    int cuda;                  /* 0: the cpu forward on every rank; 1: forward_cuda */
    int n_threads;             /* cpu: pool threads of all ranks together, max(1, n_threads / world) per rank;
                                  <= 0: all online CPUs */
    int max_seqs;              /* KV slots of every rank's manager (> 0) */
    long max_tokens;           /* KV capacity in tokens of every rank's manager (> 0) */
    int fault;                 /* cpu only: the dsv4_fault every rank's forward runs (0 = none; the caller
                                  checks the range) */
    dsv4_progress_fn progress; /* optional: "checkpoint" and "weights" of rank 0's load (dsv4.h; every rank maps
                                  the same files, so rank 0 reading them pages them in for all); cuda: the
                                  upload progress of every rank on stderr too */
    void *progress_user;       /* borrowed, passed to progress */
    const dsv4_synthetic_model *synthetic; /* borrowed, optional: preset set → rank 0's model is generated in
                                  memory (dsv4_model_create_synth; world 1 only) instead of loaded from model_dir */
} dsv4_tp_options;

/* Creates every rank. With cuda, first checks that `world` CUDA devices are visible (DSV4_ERR_UNSUPPORTED
 * naming both numbers, or that the build has no CUDA backend) — once, before anything is loaded. Then
 * loads rank 0's shard on the caller's thread (partitions the model does not divide fail here, with
 * DSV4_ERR_CONFIG naming the dimension, before any other rank starts), creates the communicator of world
 * ranks (world > 1), and builds all ranks at once — rank 0's forward on the caller's thread, ranks
 * 1..world-1 (load + forward) on a host thread each, so the GPUs' uploads overlap. Errors of a rank past
 * its load name it ("rank r" / "rank r (GPU r)") when world > 1. On failure nothing is left. */
dsv4_status dsv4_tp_group_create(const dsv4_tp_options *opt, dsv4_tp_group **out, dsv4_err *err);
void dsv4_tp_group_destroy(dsv4_tp_group *g);   /* NULL is fine */

int dsv4_tp_group_world(const dsv4_tp_group *g);
int dsv4_tp_group_on_cuda(const dsv4_tp_group *g);   /* 1: the ranks are forward_cuda on GPUs */
/* Rank 0's shard (its config is every rank's) and rank 0's KV manager (positions and block counts are the
 * same on every rank): views, valid while g lives. */
const dsv4_model *dsv4_tp_group_model(const dsv4_tp_group *g);
dsv4_kv_manager *dsv4_tp_group_kv(const dsv4_tp_group *g);
/* The forward of rank r (views): the cpu one (NULL on cuda) and the cuda one (NULL on the cpu); NULL for r
 * out of range. Rank 0's cpu forward is the MTP path of a one-rank engine (spec.h); tests and benches. */
dsv4_forward *dsv4_tp_group_forward(const dsv4_tp_group *g, int rank);
dsv4_forward_cuda *dsv4_tp_group_forward_cuda(const dsv4_tp_group *g, int rank);

/* Admits one sequence on every rank: rank 0 picks the slot (*slot) and every other rank must get the same
 * one (replicated managers make the same choices); DSV4_ERR_INTERNAL otherwise. All or nothing: on any
 * failure no rank keeps the admission. */
dsv4_status dsv4_tp_group_admit(dsv4_tp_group *g, int *slot, dsv4_err *err);
/* Releases slot on every rank that holds it. */
void dsv4_tp_group_release(dsv4_tp_group *g, int slot);

/* Runs one step (forward.h's contract: dsv4_forward_step / dsv4_forward_cuda_step) on every rank at once.
 * logits [n_want, vocab] come from rank 0 (every rank computes the same bits). Returns rank 0's status,
 * or the first failing rank's (its error prefixed "rank r"). */
dsv4_status dsv4_tp_group_step(dsv4_tp_group *g, const dsv4_seq_step *steps, int n_steps, float *logits,
                               dsv4_err *err);
/* dsv4_forward_cuda_decode_greedy on every rank at once (out [n_steps, n_slots] from rank 0);
 * DSV4_ERR_INTERNAL if the ranks' tokens differ. cuda only (DSV4_ERR_UNSUPPORTED on the cpu, where the
 * engine loops over steps). */
dsv4_status dsv4_tp_group_decode_greedy(dsv4_tp_group *g, const int *slots, int n_slots, const int32_t *first,
                                        int n_steps, int32_t *out, double *ms, dsv4_err *err);

/* The layer hook on rank 0 (its state is every rank's; the hook must not write it when world > 1: the
 * other ranks would not see the change). On cuda, a failure to get the host staging leaves no hook. */
void dsv4_tp_group_set_hook(dsv4_tp_group *g, dsv4_layer_dump_fn fn, void *user);
/* The per-op profile of forward_cuda (profile.h): cuda and one rank only (DSV4_ERR_UNSUPPORTED otherwise,
 * except that p = NULL always succeeds). */
dsv4_status dsv4_tp_group_set_profile(dsv4_tp_group *g, struct dsv4_prof *p, dsv4_err *err);

/* Tests: the logits rank r (1..world-1) computed in the last step ([n_want, vocab]; NULL when none). */
const float *dsv4_tp_group_peer_logits(const dsv4_tp_group *g, int rank);

#ifdef __cplusplus
}
#endif
#endif

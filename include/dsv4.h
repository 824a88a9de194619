/* dsv4.h — the public header of the dsv4 engine: engine, sequences, steps, options; it re-exports the status
 * codes and the error-message type (dsv4_status.h). The other public headers in include/ (tokenizer, chat
 * encoding, sampler, ...) are listed in docs/ARCHITECTURE.md, "Layering". Plain C11. */
#ifndef DSV4_H
#define DSV4_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4_status.h"   /* dsv4_status, dsv4_err, dsv4_status_name */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- engine --------------------------------------------------------------------------------------
 * An engine holds one loaded model, its KV-cache pools and a forward pass. Sequences are opened (a KV
 * slot is admitted), fed tokens in steps, and closed (every block returned). One step runs a batch of
 * sequences, each with a prefill chunk or one decode token. Not thread-safe: one caller drives it. */
typedef struct dsv4_engine dsv4_engine;

/* Progress of dsv4_engine_create, for front ends that draw a bar: stage "checkpoint" (open + validate +
 * bind; done 0 then 1 of total 1) then "weights" (bytes of the weight files read in so far, of total). */
typedef void (*dsv4_progress_fn)(void *user, const char *stage, uint64_t done, uint64_t total);

/* A random-weight model built in memory instead of a checkpoint directory: the presets of `dsv4 synth`, the
 * same value distributions, nothing read from or written to disk. */
typedef struct dsv4_synthetic_model {
    const char *preset;      /* "tiny" or "flash-shapes"; NULL: no synthetic model (model_dir is used) */
    int n_layers;            /* main layers; <= 0: the preset's */
    int n_experts;           /* routed experts per layer; <= 0: the preset's */
    uint64_t seed;
    int on_device;           /* 1: no host copy at all, every weight is generated directly in GPU memory when
                                the engine starts (cuda backend and one GPU only; the MTP block is left out
                                unless with_mtp); 0: generated in host memory (either backend) */
    int with_mtp;            /* on_device: 1 generates the MTP block too (speculative decoding benches) */
} dsv4_synthetic_model;

typedef struct dsv4_engine_options {
    const char *model_dir;   /* checkpoint directory (config.json + safetensors); NULL with synthetic.preset */
    dsv4_synthetic_model synthetic; /* used when synthetic.preset is set (then model_dir must be NULL) */
    const char *backend;     /* "cpu" (default) or "cuda" */
    int n_threads;           /* CPU backend worker threads; <= 0: all online CPUs */
    int max_seqs;            /* concurrent sequences (KV slots); <= 0: 8 */
    long max_tokens;         /* KV capacity in tokens over all sequences; <= 0: max_seqs * 4096 */
    int fault;               /* tests only: a dsv4_fault, a deliberately broken variant (0 = none) */
    int gpus;                /* tensor/expert-parallel ranks (docs/MULTI_GPU.md); <= 1: one. cpu backend: ranks
                                are host threads sharing the machine (n_threads split between them); cuda:
                                one GPU per rank over NCCL (written, not yet run on a multi-GPU
                                machine: docs/MULTI_GPU.md) */
    dsv4_progress_fn progress; /* optional; when set, create also reads every page of the mapped weight
                                  files once (64 MiB per call), so loading time shows in the bar rather
                                  than in the first step */
    void *progress_user;     /* passed to progress (borrowed) */
} dsv4_engine_options;

/* Deliberately broken forward variants, used only to prove that the comparisons against oracles
 * discriminate (a test must fail with each of them). */
typedef enum dsv4_fault {
    DSV4_FAULT_NONE = 0,
    DSV4_FAULT_NO_SINK,          /* attention without the per-head sink */
    DSV4_FAULT_NO_COMPRESSED,    /* compressed entries ignored (window only) */
    DSV4_FAULT_ROPE_POS,         /* RoPE of queries at position t+1 instead of t */
    DSV4_FAULT_NO_KV_QUANT,      /* window KV not FP8 fake-quantized */
    DSV4_FAULT_MTP_SHIFT,        /* MTP rows take the previous row's hidden state (off-by-one alignment) */
    DSV4_FAULT_COUNT
} dsv4_fault;
const char *dsv4_fault_name(int fault);   /* "none", "no-sink", ...; NULL if out of range */
/* CUDA devices the cuda backend can use: 0 when this build has no CUDA backend or no device is visible
 * (never an error). Front ends use it to pick a default backend. */
int dsv4_engine_cuda_devices(void);

typedef struct dsv4_batch_item {
    int seq;                 /* from dsv4_engine_seq_open */
    const int32_t *tokens;   /* [n_tokens] the sequence's next tokens */
    int n_tokens;
    int want_logits;         /* 1: logits of the last of these tokens are returned */
} dsv4_batch_item;

/* Called after every layer with the hyper-connection state of every token row of the step,
 * X [n_rows, hc, hidden] float32 holding BF16 values (rows in batch order). X is the input of the next
 * layer: a hook may overwrite it (teacher forcing: feed an oracle's state to compare one layer at a time);
 * written values must be BF16-exact. */
typedef void (*dsv4_layer_dump_fn)(void *user, int layer, float *X, int n_rows, int hc, int hidden);

dsv4_status dsv4_engine_create(const dsv4_engine_options *opt, dsv4_engine **out, dsv4_err *err);
void dsv4_engine_destroy(dsv4_engine *e);
int dsv4_engine_vocab_size(const dsv4_engine *e);
int dsv4_engine_n_layers(const dsv4_engine *e);
int dsv4_engine_eos_id(const dsv4_engine *e);
/* The model's max_position_embeddings: a step that would take a sequence past it fails (DSV4_ERR_CAPACITY). */
long dsv4_engine_max_positions(const dsv4_engine *e);
/* Admits a new sequence; DSV4_ERR_CAPACITY when every slot is taken (nothing changes). */
dsv4_status dsv4_engine_seq_open(dsv4_engine *e, int *seq, dsv4_err *err);
void dsv4_engine_seq_close(dsv4_engine *e, int seq);
long dsv4_engine_seq_len(const dsv4_engine *e, int seq);
/* Runs one step. logits: [number of items with want_logits, vocab] FP32. On failure (bad token id,
 * KV exhausted, past max_position_embeddings) no sequence's state changes. A NaN or infinite activation
 * or logit fails the step with DSV4_ERR_FORMAT naming where it appeared (cpu: the layer and op, positions
 * not committed; cuda: the logits, positions committed); either way close the sequence, whose compressor
 * state may have advanced. */
dsv4_status dsv4_engine_step(dsv4_engine *e, const dsv4_batch_item *items, int n_items, float *logits,
                             dsv4_err *err);
/* Greedy decoding of n_seqs open sequences: feeds first[i] to seqs[i], then n_steps-1 more steps each
 * feeding back the argmax; out [n_steps, n_seqs] gets the argmax token of every step (ties: lower id).
 * On the cuda backend the loop runs on the device (argmax on the device, graph replays, no host work
 * between steps) and device_ms (optional) is its device time; the cpu backend runs dsv4_engine_step. */
dsv4_status dsv4_engine_decode_greedy(dsv4_engine *e, const int *seqs, int n_seqs, const int32_t *first,
                                      int n_steps, int32_t *out, double *device_ms, dsv4_err *err);
/* KV-cache occupancy, for admission control and metrics (both backends: on cuda the forward's manager).
 * A block holds block_tokens tokens of compressed state of one sequence; sliding-window state lives in the
 * slot and needs no block. */
typedef struct dsv4_engine_kv_stats {
    long blocks_total, blocks_used, blocks_free;
    int block_tokens;        /* tokens per block */
    int slots_free;          /* sequences that can still be opened */
    long max_seq_tokens;     /* the longest sequence the cache can hold (the engine's max_tokens) */
} dsv4_engine_kv_stats;
void dsv4_engine_get_kv_stats(const dsv4_engine *e, dsv4_engine_kv_stats *out);
/* Blocks a sequence holds once it has n_tokens tokens (a step growing a sequence from a to b tokens needs
 * dsv4_engine_kv_blocks_for(e, b) - dsv4_engine_kv_blocks_for(e, a) free blocks). */
long dsv4_engine_kv_blocks_for(const dsv4_engine *e, long n_tokens);
/* ---- MTP draft head and speculative decoding (spec §4.10, issue 15; one rank) ------------------------
 * The checkpoint's MTP block predicts the token after next from the main model's final hyper-connection
 * state and the next token. Its state (own window ring) lives with the sequence; to use it, feed EVERY
 * token of the sequence through dsv4_engine_step_mtp or dsv4_engine_decode_greedy_spec (a sequence fed
 * through dsv4_engine_step is refused by both with DSV4_ERR_INVALID_ARG). DSV4_ERR_UNSUPPORTED with
 * gpus > 1 or for a checkpoint without mtp.0.*. On the cuda backend the greedy speculative tokens are the
 * plain greedy ones except at a near tie of the main model's logits (the verification rows and a one-token
 * decode sum in different orders on the GPU). */
/* As dsv4_engine_step, then the MTP block runs over every position whose next token became known:
 * pos0-1 (when the sequence already had tokens) .. pos0+n-2. mtp_logits (optional, else NULL): up to
 * [sum of n_tokens, vocab] FP32, *n_mtp_rows rows written in item order then position order; row of
 * position p = the MTP's logits for the token at p+2. */
dsv4_status dsv4_engine_step_mtp(dsv4_engine *e, const dsv4_batch_item *items, int n_items, float *logits,
                                 float *mtp_logits, int *n_mtp_rows, dsv4_err *err);
typedef struct dsv4_spec_info {
    long rounds;     /* verification rounds, summed over the sequences (one forward verifies them all) */
    long drafted;    /* tokens drafted by the MTP block */
    long accepted;   /* of those, accepted */
} dsv4_spec_info;
/* Greedy speculative decoding: the same tokens (bitwise, and the same KV state) as
 * dsv4_engine_decode_greedy with the same arguments (out [n_steps, n_seqs]), drafting up to k (1..3) tokens
 * per sequence and forward with the MTP block; sequences accept different counts. info (optional) gets the
 * totals over the sequences. */
dsv4_status dsv4_engine_decode_greedy_spec(dsv4_engine *e, const int *seqs, int n_seqs, const int32_t *first,
                                           int n_steps, int k, int32_t *out, dsv4_spec_info *info, dsv4_err *err);

/* Sampled speculative decoding (docs/SAMPLING.md "Speculative sampling"). A sampler is a request's
 * sampling state (engine/sampler.h: dsv4_sampler_init with its parameters and seed); its output is
 * distributed exactly as plain sampling's with the same parameters (the rejection rule), and it is the
 * same function of the seed on every run. */
typedef struct dsv4_sampler dsv4_sampler;
#define DSV4_SPEC_MAX_K 3
typedef struct dsv4_spec_options {
    int k;               /* drafts per round, 1..DSV4_SPEC_MAX_K */
    int adaptive;        /* 1: per sequence, drafting turns off while its acceptance does not pay for the
                            round's cost, probing now and then (docs/SAMPLING.md "Adaptive drafting") */
    double cost_ratio;   /* the cost of a round (verification of k+1 rows + k draft rows) in plain one-token
                            steps; <= 0: the backend's measured default (dsv4_engine_spec_cost) */
} dsv4_spec_options;
/* The backend's default cost_ratio for k drafts. */
double dsv4_engine_spec_cost(const dsv4_engine *e, int k);
/* One speculative round per sequence: feeds cur[i] (the pending token) and up to k drafts, and returns
 * n_out[i] (1..k+1) tokens in out [n_seqs, k+1] (sequence i's at out[i*(k+1)]); the last one is the new
 * pending token (not fed). samplers: NULL (all greedy) or [n_seqs], each NULL (greedy: the argmax, the
 * tokens of dsv4_engine_decode_greedy) or a sampler whose step counts the tokens generated so far; every
 * returned token is accepted into it. max_out (optional): at most max_out[i] >= 1 tokens for sequence i
 * (fewer drafts). With opt->adaptive the engine keeps a controller per sequence (reset by seq_open). */
dsv4_status dsv4_engine_spec_round(dsv4_engine *e, const int *seqs, int n_seqs, const int32_t *cur,
                                   const dsv4_spec_options *opt, dsv4_sampler *const *samplers, const int *max_out,
                                   int32_t *out, int *n_out, dsv4_spec_info *info, dsv4_err *err);
/* Rounds until every sequence has n_steps tokens: out [n_steps, n_seqs] (as dsv4_engine_decode_greedy; with
 * greedy samplers the same tokens). */
dsv4_status dsv4_engine_decode_spec(dsv4_engine *e, const int *seqs, int n_seqs, const int32_t *first, int n_steps,
                                    const dsv4_spec_options *opt, dsv4_sampler *const *samplers, int32_t *out,
                                    dsv4_spec_info *info, dsv4_err *err);
/* Benches only: the number of drafts (0..k) a round accepts for sequence seq, whatever they are, so that
 * random weights (which accept nothing) run at a set acceptance. NULL: the real rule. */
typedef int (*dsv4_spec_accept_fn)(void *user, int seq, int k);
void dsv4_engine_set_spec_accept(dsv4_engine *e, dsv4_spec_accept_fn fn, void *user);

/* Layer dumps exist on the cpu backend only (ignored on cuda). */
void dsv4_engine_set_layer_dump(dsv4_engine *e, dsv4_layer_dump_fn fn, void *user);

#ifdef __cplusplus
}
#endif
#endif /* DSV4_H */

/* dsv4_bench.h — the arithmetic and the device peers behind `dsv4 bench` (tools/dsv4/cmd_bench.c):
 *
 *   - what a decode step must read from memory (its HBM roofline) and what a prefill must compute, from
 *     the config alone (the tensor list of dsv4_checkpoint_expected_visit, in the released formats, and
 *     the KV schema of kv_schema.h);
 *   - the two ceilings measured on the device in the same run: a large device-to-device copy (bandwidth =
 *     bytes read + bytes written per second) and a cuBLASLt BF16 GEMM of a Flash-shaped layer (TFLOP/s);
 *     on the cpu backend a host memcpy (same counting) and no GEMM peer.
 *
 * Counting rules (docs/PERF.md "dsv4 bench" repeats them):
 *   decode bytes per step = every non-routed weight of the main layers (MTP excluded: the decode loop does
 *     not run it) + the head, final norm and hc_head + B embedding rows + for every layer the distinct
 *     routed experts the batch selects (expected value E·(1−(1−k/E)^B) for B tokens choosing k of E
 *     uniformly) + per sequence the KV it must read at its context T: per layer min(T, window) window
 *     entries, and for a CSA layer every indexer key (T/4 of them) + min(top-k, T/4) selected entries, for
 *     an HCA layer every one of its T/r entries, plus the compressor tail state once per r tokens.
 *     Weights count in their released formats (FP8 + scales, FP4 experts + scales, BF16 elsewhere), i.e.
 *     what must be read, not what a given kernel reads (the CUDA forward keeps wo_a in BF16: 2x its bytes).
 *   prefill FLOPs of a prompt of P tokens = per token 2·(dense matmul parameters + k experts' parameters)
 *     + per layer attention 4·H·hd·K_t (QKᵀ and PV over the K_t entries token t sees) + the CSA indexer
 *     2·heads·dim·(t+1)/4, + the head once (only the last token's logits are computed).
 * Plain C11.
 * Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in src/engine/bench.c
 * (dsv4_bench_profile: src/engine/profile.c). */
#ifndef DSV4_BENCH_H
#define DSV4_BENCH_H

#include <stddef.h>
#include <stdio.h>

#include "dsv4.h"
#include "dsv4_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_bench_cost {
    dsv4_config cfg;            /* copy */
    double dense_bytes;         /* non-routed weights + scales of the main layers, read once per step */
    double head_bytes;          /* head + final norm + hc_head */
    double embed_row_bytes;     /* one embedding row */
    double tid2eid_row_bytes;   /* one token's hash-routing row, per hash layer */
    double expert_bytes;        /* one routed expert (w1, w2, w3 + scales) of one layer */
    double dense_params;        /* matmul parameters applied to every token (main layers) */
    double expert_params;       /* one routed expert's parameters */
    double head_params;         /* head matmul parameters (vocab x dim) */
    double weight_bytes_total;  /* main layers + embed + head (MTP excluded) */
} dsv4_bench_cost;

dsv4_status dsv4_bench_cost_init(const dsv4_config *cfg, dsv4_bench_cost *c, dsv4_err *err);

/* Expected distinct experts when B tokens each pick k of E uniformly: E·(1 − (1 − k/E)^B). */
double dsv4_bench_expected_experts(int E, int k, int B);

/* KV bytes one sequence must read in one decode step at context T (tokens already cached). */
double dsv4_bench_kv_read_bytes(const dsv4_bench_cost *c, double T);

/* Bytes a decode step of B sequences at context T must read (weights touched + KV). */
double dsv4_bench_decode_bytes(const dsv4_bench_cost *c, int B, double T);

/* Weight bytes a prefill of P tokens must read at least once (dense + head + distinct experts). */
double dsv4_bench_prefill_bytes(const dsv4_bench_cost *c, long P);

/* FLOPs of a prefill of P tokens into an empty sequence (see the header comment). */
double dsv4_bench_prefill_flops(const dsv4_bench_cost *c, long P);

/* Host memcpy bandwidth, (read + write) bytes per second / 1e9, median of 5 copies of 256 MiB. */
double dsv4_bench_host_copy_gbps(void);

/* Monotonic wall clock in seconds, and the median of v[n] (sorts v in place). */
double dsv4_bench_now_s(void);
double dsv4_bench_median(double *v, int n);

/* Device-to-device cudaMemcpy bandwidth on `device` ((read + write) GB/s, 1 GiB buffers of random data,
 * median of 7 batches of 4 copies between CUDA events): the copy ceiling every CUDA benchmark divides by.
 * UNSUPPORTED without CUDA. */
dsv4_status dsv4_bench_cuda_copy_gbps(int device, double *copy_gbps, dsv4_err *err);

/* CUDA peers on `device`: device-to-device cudaMemcpy bandwidth ((read + write) GB/s, 1 GiB buffers,
 * median of 7 batches of 4 copies, CUDA events) and a cuBLASLt BF16 GEMM (FP32 accumulate, BF16 out) of the
 * wo_b shape [N = dim, K = o_groups·o_lora] at M = gemm_m rows with random inputs (TFLOP/s, median of 7
 * batches of 5). desc gets the device description (dsv4_cuda_describe). UNSUPPORTED without CUDA. */
dsv4_status dsv4_bench_cuda_peers(int device, const dsv4_config *cfg, int gemm_m, double *copy_gbps,
                                  double *gemm_tflops, char *desc, size_t desc_n, dsv4_err *err);

/* `dsv4 bench --profile`: opens an engine on model_dir (cuda backend, one GPU), then
 *   - prefill: one prompt of prompt_len random tokens, warm-up pass, then the profiled step;
 *   - decode: `batch` sequences prefilled to `context` tokens (unprofiled), one warm-up decode step, then one
 *     profiled decode step (every sequence one token, eager);
 * and prints both tables to out (prompt_len or batch <= 0 skips that part). copy_gbps / peak_tflops are the
 * ceilings the bench measured in the same run (0: ratios not shown). Returns 0 ok, 1 failure (message on
 * stderr). */
int dsv4_bench_profile(const char *model_dir, long prompt_len, int batch, long context, int n_threads,
                       double copy_gbps, double peak_tflops, FILE *out);

/* ---- synthetic models generated on the device (bench_synth.c; `dsv4 bench --on-device`) ---------------- */

/* Bytes the checkpoint dsv4_synth_write would write for cfg (every tensor, MTP included). */
double dsv4_bench_synth_disk_bytes(const dsv4_config *cfg);
/* Space available to an unprivileged user on the filesystem holding path (statvfs); -1 when unknown. */
double dsv4_bench_fs_free_bytes(const char *path);
/* Free memory of CUDA device `device` (bytes). UNSUPPORTED without CUDA. */
dsv4_status dsv4_bench_cuda_free_bytes(int device, double *free_bytes, dsv4_err *err);
/* Device bytes (weights as placed + workspace + KV + context workspaces) of the synthetic preset with
 * n_layers layers and n_experts experts generated on the device, in an engine of max_seqs sequences and
 * max_tokens KV tokens (dsv4_forward_cuda_plan_bytes: needs a CUDA build, not a device). */
dsv4_status dsv4_bench_synth_device_bytes(const char *preset, int n_layers, int n_experts, int max_seqs,
                                          long max_tokens, double *bytes, dsv4_err *err);
/* The largest E in [experts per token, e_cap] whose device bytes (above) are at most budget. CAPACITY when
 * not even the smallest fits. */
dsv4_status dsv4_bench_synth_fit_experts(const char *preset, int n_layers, int max_seqs, long max_tokens,
                                         double budget, int e_cap, int *experts, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

/* profile.h — a per-op profile of the CUDA forward: device events recorded after every op group of an eager
 * pass, aggregated per op name (time, calls, and where the caller knows them, bytes and FLOPs), printed as a
 * table with each op's bandwidth and its ratio to a measured copy bandwidth. `dsv4 bench --profile` runs one
 * prefill and one decode step through it (dsv4_bench_profile below).
 *
 * How an op is timed: the forward records one event before the pass and one after each op group, all on its
 * stream; an op's time is the interval between its event and the previous one. In an eager pass that interval
 * also holds any time the device waited for the host to enqueue the op (launch overhead when the host is the
 * bottleneck), so small ops read slow; the table's total equals the pass's device time between the first and
 * the last event. With the profiler off the forward records nothing and its decode graphs are unchanged; with
 * it on, passes run eagerly and each waits for the device at its end.
 *
 * Plain C; without DSV4_HAVE_CUDA the entry points fail with DSV4_ERR_UNSUPPORTED. Not thread-safe. */
#ifndef DSV4_ENGINE_PROFILE_H
#define DSV4_ENGINE_PROFILE_H

#include <stdio.h>

#include "backend/cuda/cuda_ctx.h"
#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_prof dsv4_prof;

/* max_marks: most op events one pass may record (more are counted as dropped, not timed). */
dsv4_status dsv4_prof_create(int max_marks, dsv4_prof **out, dsv4_err *err);
void dsv4_prof_destroy(dsv4_prof *p); /* NULL is fine */

/* Records the pass's reference event on ctx's stream. */
dsv4_status dsv4_prof_pass_begin(dsv4_prof *p, dsv4_cuda_ctx *ctx, dsv4_err *err);
/* After an op group: records its event. name must outlive p (string literals); bytes/flops 0 = unknown. */
dsv4_status dsv4_prof_mark(dsv4_prof *p, dsv4_cuda_ctx *ctx, const char *name, double bytes, double flops,
                           dsv4_err *err);
/* Waits for the pass's last event and adds its intervals to the per-name totals (pass count + 1). */
dsv4_status dsv4_prof_pass_end(dsv4_prof *p, dsv4_err *err);
/* Totals so far: passes, op calls timed, device ms, marks dropped, distinct op names. */
void dsv4_prof_summary(const dsv4_prof *p, int *passes, long *calls, double *ms, long *dropped, int *n_ops);
/* Forgets the totals (after a warm-up pass). */
void dsv4_prof_reset(dsv4_prof *p);

/* The table, ops in order of first appearance: name, calls, calls per layer, total ms, share of the total,
 * us per call, MB moved, GB/s and its ratio to copy_gbps, TFLOP/s and its ratio to peak_tflops (where the
 * bytes / FLOPs are known). n_layers > 0 adds "per layer" counts. Also a CSV line per op ("prof,...") when
 * csv != 0. */
void dsv4_prof_print(const dsv4_prof *p, FILE *out, const char *title, double copy_gbps, double peak_tflops,
                     int n_layers, int csv);

/* Hands p (borrowed; NULL = off) to the engine's CUDA forward (engine.c). Errors: UNSUPPORTED on the cpu
 * backend or with gpus > 1. */
dsv4_status dsv4_engine_set_profile(dsv4_engine *e, dsv4_prof *p, dsv4_err *err);

/* `dsv4 bench --profile` (the profiled prefill and decode passes): dsv4_bench_profile, include/dsv4_bench.h. */

#ifdef __cplusplus
}
#endif
#endif

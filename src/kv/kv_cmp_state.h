/* kv_cmp_state.h — the compressor tail state's update rule on the CPU (spec §4.5, §5.1; layout in kv_schema.h
 * dsv4_kv_cmp_schema), one token at a time: the token's raw value and score rows go to row t mod r of the
 * current window; when a window completes, its pooling inputs are gathered (overlap, ratio 4: the previous
 * window's first half, then this window's second half; otherwise the r rows) and, with overlap, this window's
 * first half becomes the previous window. forward_cpu.c run_compressor runs it (dsv4_kv_cmp_push_view), and it is the
 * reference the device twin (backend/cuda/kernels/compressor_state.cu) is tested against. Pure arithmetic
 * on the caller's state view and buffers; allocates nothing. */
#ifndef DSV4_KV_CMP_STATE_H
#define DSV4_KV_CMP_STATE_H

#include <stdint.h>

#include "kv/kv_manager.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Feeds token t of one sequence to compressor state c (c->ratio > 0): kv, sc [width] (width = (overlap ? 2 : 1)
 * · d; sc with ape already added) become row t mod r of the current window. When t completes window
 * w = t / r ((t+1) mod r == 0) writes the pooling inputs vals, scores [n_slots, d] (n_slots = 2r with overlap:
 * rows 0..r-1 the previous window's first half — value 0, score -inf for w = 0 — rows r..2r-1 this window's
 * second half; n_slots = r otherwise: the window's rows), then with overlap moves this window's first half
 * to prev, and returns 1. Otherwise returns 0 and leaves vals, scores untouched. Tokens must come in
 * position order, each exactly once. */
int dsv4_kv_cmp_push(const dsv4_kv_cmp_view *c, int64_t t, const float *kv, const float *sc, float *vals,
                     float *scores);
/* The same step without the copy where none is needed (the CPU forward's form: a ratio-128 window is
 * r·d = 64k floats): on a completed window *vals, *scores point at the pooling inputs — with overlap the
 * caller's buffers vals_buf, scores_buf [2r, d], filled as above; without overlap the state's current window
 * rows [r, d] themselves (valid until the next push to c). */
int dsv4_kv_cmp_push_view(const dsv4_kv_cmp_view *c, int64_t t, const float *kv, const float *sc, float *vals_buf,
                          float *scores_buf, const float **vals, const float **scores);

#ifdef __cplusplus
}
#endif
#endif

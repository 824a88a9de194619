/* cuda_compressor_state.h — the compressors' tail state on the device (spec §4.5, §5.1; layout in kv_schema.h
 * dsv4_kv_cmp_schema): per step, phase 1 gathers the pooling window of every compressor window that may
 * complete, phase 2 leaves the tail state as the CPU's token-by-token updates leave it. The device twin of
 * src/kv/kv_cmp_state.c (the CPU rule, which forward_cpu.c's compressor follows). Plain C header; the kernels
 * are in kernels/compressor_state.cu. Pooling, norm and RoPE of the gathered window are ops of the op library
 * (ops_cuda.h dsv4_cuda_compress); storing the entry is cuda_kv_codec.h.
 *
 * Agreement with the CPU twin (tests/unit/test_cuda_glue.c): EXACT — values are moved, and the one
 * arithmetic operation (score = projection + ape, one FP32 add) is the CPU's. */
#ifndef DSV4_BACKEND_CUDA_CUDA_COMPRESSOR_STATE_H
#define DSV4_BACKEND_CUDA_CUDA_COMPRESSOR_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/cuda_kv_codec.h"
#include "backend/cuda/cuda_step.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One compressor's tail state inside a slot (kv_schema.h dsv4_kv_cmp_schema) and its projections. */
typedef struct dsv4_glue_cmp {
    int ratio, d, overlap, width;            /* width = (overlap ? 2 : 1) * d */
    size_t kv_prev_off, sc_prev_off, kv_cur_off, sc_cur_off;
    const float *proj_kv;                    /* [rows, width] FP32 wkv·x of this step */
    const float *proj_sc;                    /* [rows, width] FP32 wgate·x (ape not yet added) */
    const float *ape;                        /* [ratio, width] */
} dsv4_glue_cmp;

/* Number of emission slots a compressor of ratio r needs for a step: Σ ceil(sn[s] / r) (host-known). */
int dsv4_glue_n_emit(const int32_t *sn_host, int n_seq, int ratio);

/* Compressor, phase 1: for each emission slot e < n_emit (sequence s, k-th window that may complete in
 * this step) gathers the pooling window (overlap: previous window's first half in slots 0..r-1, this
 * window's second half in r..2r-1; otherwise the r rows) from this step's projections or the tail state:
 * vals/scores [n_emit, n_slots, d] FP32 (scores with ape). e_slot[e] = KV slot or -1 when no window
 * completes there; e_w[e] window index; e_pos[e] = w·ratio (RoPE position). */
dsv4_status dsv4_glue_cmp_gather(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                 const dsv4_glue_cmp *c, int n_emit, float *vals, float *scores, int32_t *e_slot,
                                 int32_t *e_w, int32_t *e_pos, dsv4_err *err);
/* Compressor, phase 2 (after phase 1 read the old state): the tail state after the step, as the CPU's
 * token-by-token updates leave it. */
dsv4_status dsv4_glue_cmp_update(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                 const dsv4_glue_cmp *c, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

/* cuda_kv_codec.h — the device twin of src/kv/kv_codec.c: KV-cache traffic of the CUDA forward pass in the
 * compact bit-exact formats of kv_schema.h. Stores finished compressed entries and indexer keys into the
 * block arena, writes the window ring, and decodes ring records, visible entries and the indexer's picks to
 * BF16 rows. Plain C header; the kernels are in kernels/kv_codec.cu.
 *
 * Agreement with the CPU twin (tests/unit/test_cuda_glue.c): bytes written and values decoded are EXACT —
 * encode takes the fake-quantized BF16 values and recomputes each block's exponent with the rule of
 * dsv4_kv_entry_encode / dsv4_kv_ikey_encode (the same bytes as dsv4_kv_entry_quantize on such input), and
 * decode is dsv4_kv_entry_decode / dsv4_kv_ikey_decode rounded to BF16 (every decoded value is BF16-exact). */
#ifndef DSV4_BACKEND_CUDA_CUDA_KV_CODEC_H
#define DSV4_BACKEND_CUDA_CUDA_KV_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/cuda_step.h"

#ifdef __cplusplus
extern "C" {
#endif

/* KV arenas on the device and the entry formats (kv_schema.h), one layer's offsets. */
typedef struct dsv4_glue_kv {
    uint8_t *slots;            /* slot arena base */
    size_t slot_bytes;
    uint8_t *blocks;           /* block arena base (NULL without compressed layers) */
    size_t block_bytes;
    const int32_t *bt;         /* [max_requests, bt_ld] device mirror of the block tables */
    int bt_ld;
    /* entry format */
    int nope, rope, rope_off, scale_off, n_scales, entry_bytes;
    /* indexer key format */
    int ik_dim, ik_code_bytes, ik_n_scales;
    /* this layer */
    size_t ring_off;           /* window ring inside a slot */
    int window;
    int ratio, entries_per_block;
    size_t main_off, ikey_off, ikey_scale_off;
} dsv4_glue_kv;

/* Stores finished entries [n_emit, d] bf16 (fake-quantized values) into the block arena in the compact
 * format: main entries (is_indexer 0) or indexer keys (1); e_slot < 0 skipped. */
dsv4_status dsv4_glue_store_entries(dsv4_cuda_ctx *ctx, const dsv4_glue_kv *kv, const uint16_t *entries, int n_emit,
                                    const int32_t *e_slot, const int32_t *e_w, int is_indexer, dsv4_err *err);
/* Writes the last min(n, window) rows of each sequence's kv [rows, nope+rope] bf16 into its window ring. */
dsv4_status dsv4_glue_ring_write(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                 const uint16_t *fresh, dsv4_err *err);
/* Decodes every ring record of each sequence: out [n_seq * window, nope+rope] bf16. */
dsv4_status dsv4_glue_ring_decode(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                  uint16_t *out, dsv4_err *err);
/* Decodes entries w < (spos0+sn)/ratio of each sequence (the most any of its rows sees): out
 * [n_seq * max_e, dim] bf16, row s·max_e + w; main entries or indexer keys. */
dsv4_status dsv4_glue_decode_entries(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                     int is_indexer, int max_e, uint16_t *out, dsv4_err *err);
/* Decodes the main entries chosen by the indexer: sel [rows, topk] (−1 = none) -> out [rows·topk, dim]. */
dsv4_status dsv4_glue_decode_selected(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                      const int32_t *sel, int topk, uint16_t *out, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

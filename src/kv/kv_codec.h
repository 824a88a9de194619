/* kv_codec.h — bit-exact conversion between the float values the forward pass computes for a KV entry and
 * the compact storage formats of kv_schema.h (spec §3.3, §3.4, §4.3 step 2, §4.5, §5.2).
 *
 * Why lossless: the official numerics fake-quantize the nope dims of every window / main-compressed entry
 * (e4m3 with a power-of-two scale per 64) and every indexer key (e2m1 with a power-of-two scale per 32), and
 * keep the rope dims in BF16. So the float entry the CPU reference holds is exactly code x 2^e, and storing
 * (code, e) loses nothing. Two ways in:
 *   - *_quantize: from the values BEFORE fake-quant (the raw BF16 kv after RoPE), applying the act_quant
 *     rule itself (what a fused kernel does: quantize and store in one pass);
 *   - *_encode: from the values AFTER fake-quant (what dsv4_cpu_fake_quant_fp8/fp4 produce). It recomputes
 *     the scale with the same rule on the fake-quantized block. That exponent is either the original e or
 *     e-1 (when the block max rounded down to 224·2^e for FP8, 3·2^e for FP4), and with e-1 every code is
 *     exactly twice the original one, still representable; so the decoded values are identical (proof in
 *     docs/KV_CACHE.md, checked by tests/unit/test_kv_codec.c). Encode verifies every value and rejects
 *     input that is not a fake-quant output.
 *   - *_decode: back to floats (BF16-exact), equal bit for bit to the fake-quantized values (incl. -0).
 * Pure functions over caller buffers; they never allocate and keep no state. Host memory only. */
#ifndef DSV4_KV_CODEC_H
#define DSV4_KV_CODEC_H

#include <stdint.h>

#include "core/status.h"
#include "kv/kv_schema.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Main / window entry. x: [nope + rope] floats (layout [nope | rope], spec §3.7); dst: [f->bytes].
 * encode: x's nope part must be a dsv4_cpu_fake_quant_fp8(.., 64) output and its rope part BF16-exact,
 *   all finite; otherwise returns DSV4_ERR_INVALID_ARG naming the first offending dim (dst contents are then
 *   unspecified). Padding bytes are written as zero.
 * quantize: x is the raw BF16-exact entry (before fake-quant); always succeeds for finite input; decode of
 *   the result equals fake_quant_fp8(x nope, 64) ++ x rope bitwise. Rope values are BF16-rounded. */
dsv4_status dsv4_kv_entry_encode(const dsv4_kv_entry_fmt *f, const float *x, uint8_t *dst, dsv4_err *err);
void dsv4_kv_entry_quantize(const dsv4_kv_entry_fmt *f, const float *x, uint8_t *dst);
/* src: [f->bytes] -> x: [nope + rope]. */
void dsv4_kv_entry_decode(const dsv4_kv_entry_fmt *f, const uint8_t *src, float *x);

/* Indexer key. x: [f->dim] floats; codes: [f->code_bytes] packed e2m1 (low nibble = even element);
 * scales: [f->n_scales] e8m0. Same contracts as above with fake_quant_fp4 (block 32). */
dsv4_status dsv4_kv_ikey_encode(const dsv4_kv_ikey_fmt *f, const float *x, uint8_t *codes, uint8_t *scales,
                                dsv4_err *err);
void dsv4_kv_ikey_quantize(const dsv4_kv_ikey_fmt *f, const float *x, uint8_t *codes, uint8_t *scales);
void dsv4_kv_ikey_decode(const dsv4_kv_ikey_fmt *f, const uint8_t *codes, const uint8_t *scales, float *x);

#ifdef __cplusplus
}
#endif
#endif

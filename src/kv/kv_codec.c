/* kv_codec.c — compact KV entry codecs (see kv_codec.h). The quantization rule is the one of
 * backend/cpu/quant.c (spec §3.3/§3.4) re-expressed per block so that codes and exponents are kept. */
#include "kv/kv_codec.h"

#include <math.h>
#include <string.h>

#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "core/status.h"

static float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }

static int same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

/* ---- FP8 (e4m3, pow2 scale per 64) ------------------------------------------------------------- */

/* act_quant of one block: returns the scale exponent e and writes codes[n]. */
static int fp8_block_quantize(const float *x, int n, uint8_t *codes) {
    int e = dsv4_pow2_scale_exp(dsv4_block_amax(x, n), DSV4_FP8_AMAX_FLOOR, 1.0f / 448.0f);
    for (int i = 0; i < n; i++) codes[i] = dsv4_f32_to_e4m3(clampf(ldexpf(x[i], -e), -448.0f, 448.0f));
    return e;
}

/* The fake-quant value of code c under exponent e, computed exactly as dsv4_cpu_fake_quant_fp8 does. */
static float fp8_value(uint8_t c, int e) { return dsv4_bf16_round(ldexpf(dsv4_e4m3_table[c], e)); }

static int rope_is_bf16(float v) { return isfinite(v) && same_bits(v, dsv4_bf16_round(v)); }

static void put_rope(const dsv4_kv_entry_fmt *f, const float *x, uint8_t *dst) {
    for (int i = 0; i < f->rope; i++) {
        uint16_t h = dsv4_f32_to_bf16(x[f->nope + i]);
        memcpy(dst + f->rope_off + 2 * i, &h, 2); /* host order (little-endian on every supported target) */
    }
}

static void zero_padding(const dsv4_kv_entry_fmt *f, uint8_t *dst) {
    memset(dst + f->nope, 0, (size_t)(f->rope_off - f->nope));
    memset(dst + f->scale_off + f->n_scales, 0, (size_t)(f->bytes - f->scale_off - f->n_scales));
}

dsv4_status dsv4_kv_entry_encode(const dsv4_kv_entry_fmt *f, const float *x, uint8_t *dst, dsv4_err *err) {
    for (int b = 0; b < f->n_scales; b++) {
        const float *xb = x + b * DSV4_KV_FP8_BLOCK;
        uint8_t *cb = dst + b * DSV4_KV_FP8_BLOCK;
        for (int i = 0; i < DSV4_KV_FP8_BLOCK; i++)
            if (!isfinite(xb[i]))
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv entry encode: dim %d is not finite",
                                    b * DSV4_KV_FP8_BLOCK + i);
        int e = fp8_block_quantize(xb, DSV4_KV_FP8_BLOCK, cb);
        if (e < -127 || e > 127)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv entry encode: block %d scale 2^%d outside e8m0", b, e);
        for (int i = 0; i < DSV4_KV_FP8_BLOCK; i++)
            if (!same_bits(fp8_value(cb[i], e), xb[i]))
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                                    "kv entry encode: dim %d value %a is not an e4m3 x 2^%d fake-quant value",
                                    b * DSV4_KV_FP8_BLOCK + i, xb[i], e);
        dst[f->scale_off + b] = (uint8_t)(e + 127);
    }
    for (int i = 0; i < f->rope; i++)
        if (!rope_is_bf16(x[f->nope + i]))
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv entry encode: rope dim %d value %a is not a finite BF16",
                                f->nope + i, x[f->nope + i]);
    put_rope(f, x, dst);
    zero_padding(f, dst);
    return DSV4_OK;
}

void dsv4_kv_entry_quantize(const dsv4_kv_entry_fmt *f, const float *x, uint8_t *dst) {
    for (int b = 0; b < f->n_scales; b++) {
        int e = fp8_block_quantize(x + b * DSV4_KV_FP8_BLOCK, DSV4_KV_FP8_BLOCK, dst + b * DSV4_KV_FP8_BLOCK);
        DSV4_ASSERT(e >= -127 && e <= 127);
        dst[f->scale_off + b] = (uint8_t)(e + 127);
    }
    put_rope(f, x, dst);
    zero_padding(f, dst);
}

void dsv4_kv_entry_decode(const dsv4_kv_entry_fmt *f, const uint8_t *src, float *x) {
    for (int b = 0; b < f->n_scales; b++) {
        int e = (int)src[f->scale_off + b] - 127;
        for (int i = 0; i < DSV4_KV_FP8_BLOCK; i++)
            x[b * DSV4_KV_FP8_BLOCK + i] = fp8_value(src[b * DSV4_KV_FP8_BLOCK + i], e);
    }
    for (int i = 0; i < f->rope; i++) {
        uint16_t h;
        memcpy(&h, src + f->rope_off + 2 * i, 2);
        x[f->nope + i] = dsv4_bf16_to_f32(h);
    }
}

/* ---- FP4 (e2m1, pow2 scale per 32) ------------------------------------------------------------- */

static int fp4_block_quantize(const float *x, uint8_t *nib /* [32] unpacked codes */) {
    int e = dsv4_pow2_scale_exp(dsv4_block_amax(x, DSV4_KV_FP4_BLOCK), DSV4_FP4_AMAX_FLOOR, 1.0f / 6.0f);
    for (int i = 0; i < DSV4_KV_FP4_BLOCK; i++) nib[i] = dsv4_f32_to_e2m1(clampf(ldexpf(x[i], -e), -6.0f, 6.0f));
    return e;
}

static float fp4_value(uint8_t c, int e) { return dsv4_bf16_round(ldexpf(dsv4_e2m1_to_f32(c), e)); }

static void fp4_pack(const uint8_t *nib, uint8_t *codes) {
    for (int i = 0; i < DSV4_KV_FP4_BLOCK / 2; i++) codes[i] = (uint8_t)(nib[2 * i] | (nib[2 * i + 1] << 4));
}

dsv4_status dsv4_kv_ikey_encode(const dsv4_kv_ikey_fmt *f, const float *x, uint8_t *codes, uint8_t *scales,
                                dsv4_err *err) {
    uint8_t nib[DSV4_KV_FP4_BLOCK];
    for (int b = 0; b < f->n_scales; b++) {
        const float *xb = x + b * DSV4_KV_FP4_BLOCK;
        for (int i = 0; i < DSV4_KV_FP4_BLOCK; i++)
            if (!isfinite(xb[i]))
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv ikey encode: dim %d is not finite",
                                    b * DSV4_KV_FP4_BLOCK + i);
        int e = fp4_block_quantize(xb, nib);
        if (e < -127 || e > 127)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv ikey encode: block %d scale 2^%d outside e8m0", b, e);
        for (int i = 0; i < DSV4_KV_FP4_BLOCK; i++)
            if (!same_bits(fp4_value(nib[i], e), xb[i]))
                return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                                    "kv ikey encode: dim %d value %a is not an e2m1 x 2^%d fake-quant value",
                                    b * DSV4_KV_FP4_BLOCK + i, xb[i], e);
        fp4_pack(nib, codes + b * DSV4_KV_FP4_BLOCK / 2);
        scales[b] = (uint8_t)(e + 127);
    }
    return DSV4_OK;
}

void dsv4_kv_ikey_quantize(const dsv4_kv_ikey_fmt *f, const float *x, uint8_t *codes, uint8_t *scales) {
    uint8_t nib[DSV4_KV_FP4_BLOCK];
    for (int b = 0; b < f->n_scales; b++) {
        int e = fp4_block_quantize(x + b * DSV4_KV_FP4_BLOCK, nib);
        DSV4_ASSERT(e >= -127 && e <= 127);
        fp4_pack(nib, codes + b * DSV4_KV_FP4_BLOCK / 2);
        scales[b] = (uint8_t)(e + 127);
    }
}

void dsv4_kv_ikey_decode(const dsv4_kv_ikey_fmt *f, const uint8_t *codes, const uint8_t *scales, float *x) {
    for (int i = 0; i < f->dim; i++) {
        uint8_t b = codes[i >> 1];
        x[i] = fp4_value((i & 1) ? (uint8_t)(b >> 4) : (uint8_t)(b & 15), (int)scales[i / DSV4_KV_FP4_BLOCK] - 127);
    }
}

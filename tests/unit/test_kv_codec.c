/* test_kv_codec.c — bit-exactness of the compact KV formats (kv_codec.h): for many random and adversarial
 * entries, decode(encode(fake_quant(x))) == fake_quant(x) and decode(quantize(x)) == fake_quant(x) bit for
 * bit (incl. -0), for the main/window entry (FP8 nope + BF16 rope) and the indexer key (FP4). Edge cases:
 * blocks at the amax floor, block maxima exactly on / next to the power-of-two boundaries (448·2^k,
 * 224·2^k, the round-down-to-224 case where the re-derived scale is one lower), zeros of both signs,
 * BF16 subnormals, values near the BF16 maximum; and rejection of values that are not fake-quant outputs. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "kv/kv_codec.h"
#include "kv/kv_schema.h"
#include "test_kv_configs.h"
#include "test_util.h"

static dsv4_kv_schema S_flash, S_tiny;

static int bits_equal(const float *a, const float *b, int n, int *where) {
    for (int i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], 4) != 0) {
            *where = i;
            return 0;
        }
    return 1;
}

/* N(0, sigma) rounded to BF16; unlike test_fill_bf16 it may produce zeros (needed for sigma near the
 * BF16 subnormal range, where test_fill_bf16 would redraw for a long time). */
static void fill_any(test_rng *r, float *x, int n, double sigma) {
    for (int i = 0; i < n; i++) x[i] = dsv4_bf16_round((float)(sigma * test_rng_normal(r)));
}

/* Fills one block of n values in one of several adversarial shapes (all BF16-exact). */
static void fill_block(test_rng *r, float *x, int n, int mode, float maxval) {
    switch (mode) {
    case 0: /* plain normal, random magnitude */
        fill_any(r, x, n, ldexp(1.0, (int)(test_rng_u64(r) % 60) - 30));
        break;
    case 1: /* tiny: under the amax floor */
        fill_any(r, x, n, ldexp(1.0, -14 - (int)(test_rng_u64(r) % 110)));
        break;
    case 2: /* zeros of both signs mixed with a few values */
        for (int i = 0; i < n; i++) x[i] = (test_rng_u64(r) & 1) ? -0.0f : 0.0f;
        if (test_rng_u64(r) & 1) x[test_rng_u64(r) % n] = dsv4_bf16_round((float)test_rng_normal(r));
        break;
    default: /* normal values with a planted block maximum (sign random) */
        fill_any(r, x, n, fabsf(maxval) / 8.0);
        for (int i = 0; i < n; i++)
            if (fabsf(x[i]) > fabsf(maxval)) x[i] = dsv4_bf16_round(x[i] / 4.0f);
        x[test_rng_u64(r) % n] = (test_rng_u64(r) & 1) ? -maxval : maxval;
        break;
    }
}

/* Planted maxima around the FP8 scale boundaries: 448·2^k (exact top), 224·2^k and 225·2^k (rounds down to
 * 224, the case where re-deriving the scale gives e-1), 232·2^k (tie), next BF16 values around them,
 * the amax floor 1e-4 and its neighbours, BF16 max. */
static float fp8_planted(test_rng *r) {
    static const float base[] = {448.0f, 224.0f, 225.0f, 232.0f, 240.0f, 449.0f, 446.0f, 1.0f, 0.5f};
    int k = (int)(test_rng_u64(r) % 100) - 60;
    int pick = (int)(test_rng_u64(r) % 13);
    if (pick < 9) {
        float v = dsv4_bf16_round(ldexpf(base[pick], k));
        return v;
    }
    if (pick == 9) return dsv4_bf16_round(1e-4f);
    if (pick == 10) return dsv4_bf16_to_f32((uint16_t)(dsv4_f32_to_bf16(1e-4f) + 1));
    if (pick == 11) return dsv4_bf16_to_f32((uint16_t)(dsv4_f32_to_bf16(1e-4f) - 1));
    return dsv4_bf16_to_f32(0x7f70); /* 1.875 * 2^127: near the top of BF16, still finite after fake-quant */
}

static void check_entry_roundtrip(const dsv4_kv_entry_fmt *f, test_rng *r, int n_iter, int *n_lower_scale) {
    int dim = f->nope + f->rope;
    float *raw = malloc(sizeof(float) * dim), *fq = malloc(sizeof(float) * dim), *out = malloc(sizeof(float) * dim);
    uint8_t *enc = malloc((size_t)f->bytes), *qz = malloc((size_t)f->bytes);
    for (int it = 0; it < n_iter; it++) {
        for (int b = 0; b < f->n_scales; b++) {
            int mode = (int)(test_rng_u64(r) % 6);
            fill_block(r, raw + b * 64, 64, mode, fp8_planted(r));
        }
        test_fill_bf16(r, raw + f->nope, (size_t)f->rope, 1.0);
        if (it % 7 == 0) raw[f->nope] = -0.0f;
        memcpy(fq, raw, sizeof(float) * dim);
        dsv4_cpu_fake_quant_fp8(fq, (size_t)f->nope, 64);

        dsv4_err err = {{0}};
        memset(enc, 0xcd, (size_t)f->bytes);
        dsv4_status st = dsv4_kv_entry_encode(f, fq, enc, &err);
        CHECK(st == DSV4_OK, "iter %d: encode failed: %s", it, err.msg);
        if (st != DSV4_OK) break;
        int where = -1;
        dsv4_kv_entry_decode(f, enc, out);
        CHECK(bits_equal(out, fq, dim, &where), "iter %d: decode(encode(fq)) differs at dim %d: %a vs %a", it, where,
              where >= 0 ? out[where] : 0.0f, where >= 0 ? fq[where] : 0.0f);
        dsv4_kv_entry_quantize(f, raw, qz);
        dsv4_kv_entry_decode(f, qz, out);
        CHECK(bits_equal(out, fq, dim, &where), "iter %d: decode(quantize(raw)) differs at dim %d", it, where);
        for (int i = f->nope; i < f->rope_off; i++) CHECK(enc[i] == 0, "padding byte %d not zero", i);
        for (int i = f->scale_off + f->n_scales; i < f->bytes; i++) CHECK(enc[i] == 0, "padding byte %d not zero", i);
        for (int b = 0; b < f->n_scales; b++) {
            int d = (int)qz[f->scale_off + b] - (int)enc[f->scale_off + b];
            CHECK(d == 0 || d == 1, "iter %d block %d: encode scale differs from quantize scale by %d", it, b, d);
            if (d == 1) (*n_lower_scale)++;
        }
        if (test_case_failed > 20) break;
    }
    free(raw);
    free(fq);
    free(out);
    free(enc);
    free(qz);
}

static void test_entry_roundtrip_flash(void) {
    test_rng r;
    test_rng_seed(&r, 1);
    int lower = 0;
    check_entry_roundtrip(&S_flash.entry, &r, 20000, &lower);
    printf("  flash entry: %d blocks where the re-derived scale is one lower (codes doubled)\n", lower);
    CHECK(lower > 0, "the e-1 branch of the proof was never exercised");
}

static void test_entry_roundtrip_tiny(void) {
    test_rng r;
    test_rng_seed(&r, 2);
    int lower = 0;
    check_entry_roundtrip(&S_tiny.entry, &r, 20000, &lower);
    CHECK(lower > 0, "the e-1 branch of the proof was never exercised");
}

/* Every e4m3 code in every position under a sweep of scales: build fq values directly from codes. */
static void test_entry_all_codes(void) {
    const dsv4_kv_entry_fmt *f = &S_flash.entry;
    int dim = f->nope + f->rope;
    float *x = calloc((size_t)dim, sizeof(float)), *out = calloc((size_t)dim, sizeof(float));
    uint8_t *enc = malloc((size_t)f->bytes);
    for (int e = -22; e <= 119; e += 1) {
        for (int start = 0; start < 256; start += 64) {
            for (int b = 0; b < f->n_scales; b++)
                for (int i = 0; i < 64; i++) {
                    int c = (start + i + b) & 0xff;
                    if ((c & 0x7f) == 0x7f) c = 0x7e | (c & 0x80);
                    x[b * 64 + i] = dsv4_bf16_round(ldexpf(dsv4_e4m3_to_f32((uint8_t)c), e));
                }
            /* These blocks are fake-quant fixed points only if the rule maps them to themselves. */
            float fq[512];
            memcpy(fq, x, sizeof(float) * f->nope);
            dsv4_cpu_fake_quant_fp8(fq, (size_t)f->nope, 64);
            memcpy(x, fq, sizeof(float) * f->nope);
            dsv4_err err;
            dsv4_status st = dsv4_kv_entry_encode(f, x, enc, &err);
            CHECK(st == DSV4_OK, "e=%d start=%d: %s", e, start, err.msg);
            dsv4_kv_entry_decode(f, enc, out);
            int where = -1;
            CHECK(bits_equal(out, x, dim, &where), "e=%d start=%d dim %d", e, start, where);
        }
    }
    free(x);
    free(out);
    free(enc);
}

/* Documented corner: a block max >= 1.9375 * 2^127 rounds to code 256 at scale 2^120 and the reference
 * fake-quant overflows to inf. quantize() reproduces that (decode gives inf, like fake_quant); encode()
 * rejects the inf. Real KV values (post-RMSNorm) are nowhere near. */
static void test_entry_overflow_corner(void) {
    const dsv4_kv_entry_fmt *f = &S_flash.entry;
    float x[512] = {0}, fq[512], out[512];
    uint8_t q[1024];
    x[0] = dsv4_bf16_to_f32(0x7f7f);
    memcpy(fq, x, sizeof x);
    dsv4_cpu_fake_quant_fp8(fq, (size_t)f->nope, 64);
    CHECK(isinf(fq[0]), "reference fake-quant overflows: %g", fq[0]);
    dsv4_kv_entry_quantize(f, x, q);
    dsv4_kv_entry_decode(f, q, out);
    int where = -1;
    CHECK(bits_equal(out, fq, f->nope + f->rope, &where), "quantize path matches the reference at %d", where);
    dsv4_err err;
    CHECK(dsv4_kv_entry_encode(f, fq, q, &err) == DSV4_ERR_INVALID_ARG, "encode rejects inf");
}

static void test_entry_rejects_non_fq(void) {
    const dsv4_kv_entry_fmt *f = &S_flash.entry;
    int dim = f->nope + f->rope;
    float x[512];
    uint8_t enc[1024];
    test_rng r;
    test_rng_seed(&r, 3);
    test_fill_bf16(&r, x, (size_t)dim, 1.0);
    dsv4_err err;
    CHECK(dsv4_kv_entry_encode(f, x, enc, &err) == DSV4_ERR_INVALID_ARG, "raw values must be rejected");
    dsv4_cpu_fake_quant_fp8(x, (size_t)f->nope, 64);
    CHECK(dsv4_kv_entry_encode(f, x, enc, &err) == DSV4_OK, "fq values accepted: %s", err.msg);
    float keep = x[f->nope + 3];
    x[f->nope + 3] = 1.0f + 0x1p-20f; /* not BF16 */
    CHECK(dsv4_kv_entry_encode(f, x, enc, &err) == DSV4_ERR_INVALID_ARG, "non-bf16 rope rejected");
    x[f->nope + 3] = keep;
    x[5] = NAN;
    CHECK(dsv4_kv_entry_encode(f, x, enc, &err) == DSV4_ERR_INVALID_ARG, "NaN rejected");
}

/* ---- indexer keys ------------------------------------------------------------------------------- */

static float fp4_planted(test_rng *r) {
    static const float base[] = {6.0f, 3.0f, 3.25f, 3.5f, 5.0f, 5.5f, 4.0f, 6.5f, 1.0f};
    int k = (int)(test_rng_u64(r) % 200) - 120;
    int pick = (int)(test_rng_u64(r) % 11);
    if (pick < 9) return dsv4_bf16_round(ldexpf(base[pick], k));
    if (pick == 9) return dsv4_bf16_round(6.0f * 0x1p-126f);
    return dsv4_bf16_to_f32(0x0001); /* smallest bf16 subnormal */
}

static void check_ikey_roundtrip(const dsv4_kv_ikey_fmt *f, test_rng *r, int n_iter, int *n_lower) {
    float raw[256], fq[256], out[256];
    uint8_t codes[128], scales[8], qc[128], qs[8];
    for (int it = 0; it < n_iter; it++) {
        for (int b = 0; b < f->n_scales; b++) {
            int mode = (int)(test_rng_u64(r) % 6);
            fill_block(r, raw + b * 32, 32, mode, fp4_planted(r));
            if (mode == 1) /* push some blocks into the FP4 floor / BF16 subnormal range */
                for (int i = 0; i < 32; i++) raw[b * 32 + i] = dsv4_bf16_round(ldexpf(raw[b * 32 + i], -100));
        }
        memcpy(fq, raw, sizeof(float) * f->dim);
        dsv4_cpu_fake_quant_fp4(fq, (size_t)f->dim);
        dsv4_err err = {{0}};
        dsv4_status st = dsv4_kv_ikey_encode(f, fq, codes, scales, &err);
        CHECK(st == DSV4_OK, "iter %d: encode failed: %s", it, err.msg);
        if (st != DSV4_OK) break;
        int where = -1;
        dsv4_kv_ikey_decode(f, codes, scales, out);
        CHECK(bits_equal(out, fq, f->dim, &where), "iter %d: ikey decode(encode(fq)) differs at %d: %a vs %a", it,
              where, where >= 0 ? out[where] : 0.0f, where >= 0 ? fq[where] : 0.0f);
        dsv4_kv_ikey_quantize(f, raw, qc, qs);
        dsv4_kv_ikey_decode(f, qc, qs, out);
        CHECK(bits_equal(out, fq, f->dim, &where), "iter %d: ikey decode(quantize(raw)) differs at %d", it, where);
        for (int b = 0; b < f->n_scales; b++) {
            int d = (int)qs[b] - (int)scales[b];
            CHECK(d == 0 || d == 1, "iter %d block %d: scale differs by %d", it, b, d);
            if (d == 1) (*n_lower)++;
        }
        if (test_case_failed > 20) break;
    }
}

static void test_ikey_roundtrip(void) {
    test_rng r;
    test_rng_seed(&r, 4);
    int lower = 0;
    check_ikey_roundtrip(&S_flash.ikey, &r, 40000, &lower);
    check_ikey_roundtrip(&S_tiny.ikey, &r, 10000, &lower);
    printf("  ikey: %d blocks where the re-derived scale is one lower\n", lower);
    CHECK(lower > 0, "the e-1 branch was never exercised");
}

/* Hadamard-rotated keys, as the indexer compressor produces them (spec §4.5). */
static void test_ikey_after_hadamard(void) {
    test_rng r;
    test_rng_seed(&r, 5);
    const dsv4_kv_ikey_fmt *f = &S_flash.ikey;
    float x[128], out[128];
    uint8_t codes[64], scales[4];
    for (int it = 0; it < 5000; it++) {
        test_fill_bf16(&r, x, 128, ldexp(1.0, (int)(test_rng_u64(&r) % 40) - 20));
        dsv4_cpu_hadamard128(x);
        dsv4_cpu_fake_quant_fp4(x, 128);
        dsv4_err err;
        CHECK(dsv4_kv_ikey_encode(f, x, codes, scales, &err) == DSV4_OK, "%s", err.msg);
        dsv4_kv_ikey_decode(f, codes, scales, out);
        int where = -1;
        CHECK(bits_equal(out, x, 128, &where), "iter %d at %d", it, where);
        if (test_case_failed) break;
    }
}

static void test_ikey_rejects_non_fq(void) {
    const dsv4_kv_ikey_fmt *f = &S_flash.ikey;
    float x[128];
    uint8_t codes[64], scales[4];
    test_rng r;
    test_rng_seed(&r, 6);
    test_fill_bf16(&r, x, 128, 1.0);
    dsv4_err err;
    CHECK(dsv4_kv_ikey_encode(f, x, codes, scales, &err) == DSV4_ERR_INVALID_ARG, "raw values must be rejected");
    /* packing: element 2i in the low nibble */
    for (int i = 0; i < 128; i++) x[i] = (i % 2) ? -6.0f : 0.5f;
    CHECK(dsv4_kv_ikey_encode(f, x, codes, scales, &err) == DSV4_OK, "%s", err.msg);
    CHECK(codes[0] == 0xf1 && scales[0] == 127, "packing %02x scale %d", codes[0], scales[0]);
}

int main(void) {
    dsv4_config c;
    dsv4_err err;
    kvtest_config_flash(&c);
    if (dsv4_kv_schema_init(&S_flash, &c, 0, &err) != DSV4_OK) {
        fprintf(stderr, "schema: %s\n", err.msg);
        return 1;
    }
    kvtest_config_tiny(&c);
    if (dsv4_kv_schema_init(&S_tiny, &c, 0, &err) != DSV4_OK) {
        fprintf(stderr, "schema: %s\n", err.msg);
        return 1;
    }
    RUN(test_entry_roundtrip_flash);
    RUN(test_entry_roundtrip_tiny);
    RUN(test_entry_all_codes);
    RUN(test_entry_overflow_corner);
    RUN(test_entry_rejects_non_fq);
    RUN(test_ikey_roundtrip);
    RUN(test_ikey_after_hadamard);
    RUN(test_ikey_rejects_non_fq);
    return test_finish();
}

/* test_numfmt.c — exhaustive tests of the bf16 / e4m3 / e8m0 / e2m1 codecs (spec §2.2, §3.3, §3.4):
 * every code decodes to its definition computed in fp64, every code round-trips, every tie between two
 * neighbouring codes rounds to the even code, and values between neighbours round to the nearer one. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/numfmt.h"
#include "test_util.h"

static double e4m3_def(int c) {
    int s = c >> 7, e = (c >> 3) & 15, m = c & 7;
    double v = e == 0 ? m * ldexp(1, -9) : (1 + m / 8.0) * ldexp(1, e - 7);
    return s ? -v : v;
}

static void test_e4m3_decode_all_codes(void) {
    for (int c = 0; c < 256; c++) {
        float v = dsv4_e4m3_to_f32((uint8_t)c), t = dsv4_e4m3_table[c];
        if ((c & 0x7f) == 0x7f) {
            CHECK(isnan(v) && isnan(t), "code %02x must be NaN", c);
            continue;
        }
        CHECK((double)v == e4m3_def(c), "code %02x: %g vs %g", c, v, e4m3_def(c));
        CHECK(memcmp(&v, &t, 4) == 0, "table mismatch at %02x", c);
    }
    CHECK(dsv4_e4m3_to_f32(0x7e) == 448.0f, "max is 448");
    CHECK(dsv4_e4m3_to_f32(0x01) == 0x1p-9f, "min subnormal is 2^-9");
}

static void test_e4m3_roundtrip_and_ties(void) {
    /* Sorted positive codes 0..0x7e; check round trip, midpoints (ties -> even code), and points just
     * either side of every midpoint. */
    for (int c = 0; c <= 0x7e; c++) {
        float v = dsv4_e4m3_to_f32((uint8_t)c);
        CHECK(dsv4_f32_to_e4m3(v) == c, "roundtrip %02x", c);
        CHECK(dsv4_f32_to_e4m3(-v) == (c | 0x80), "roundtrip -%02x", c);
        if (c == 0x7e) break;
        double lo = e4m3_def(c), hi = e4m3_def(c + 1), mid = (lo + hi) / 2;
        int even = (c % 2 == 0) ? c : c + 1;
        CHECK(dsv4_f32_to_e4m3((float)mid) == even, "tie %g between %02x,%02x -> %02x got %02x", mid, c,
              c + 1, even, dsv4_f32_to_e4m3((float)mid));
        CHECK(dsv4_f32_to_e4m3(nextafterf((float)mid, 0)) == c, "below tie %02x", c);
        CHECK(dsv4_f32_to_e4m3(nextafterf((float)mid, 1e9f)) == c + 1, "above tie %02x", c);
    }
    CHECK(dsv4_f32_to_e4m3(460.0f) == 0x7e, "saturates at 448");
    CHECK(dsv4_f32_to_e4m3(1e30f) == 0x7e, "saturates at 448");
    CHECK(dsv4_f32_to_e4m3(-1e30f) == 0xfe, "saturates at -448");
    CHECK(dsv4_f32_to_e4m3(INFINITY) == 0x7e, "inf saturates");
    CHECK(dsv4_f32_to_e4m3(0x1p-11f) == 0, "2^-11 rounds to 0 (tie to even)");
    CHECK(dsv4_f32_to_e4m3(NAN) == 0x7f, "nan");
}

static void test_bf16_all_codes_and_ties(void) {
    for (uint32_t h = 0; h < 65536; h++) {
        float v = dsv4_bf16_to_f32((uint16_t)h);
        if (isnan(v)) {
            CHECK(isnan(dsv4_bf16_to_f32(dsv4_f32_to_bf16(v))), "nan stays nan %04x", h);
            continue;
        }
        CHECK(dsv4_f32_to_bf16(v) == h, "roundtrip %04x", h);
        if ((h & 0x7fff) >= 0x7f80) continue;  /* inf: no upper neighbour to tie with */
        /* The tie between h and h+1 in magnitude: bits h<<16 | 0x8000. */
        uint32_t tie = (h << 16) | 0x8000u, below = tie - 1, above = tie + 1;
        float ft, fb, fa;
        memcpy(&ft, &tie, 4); memcpy(&fb, &below, 4); memcpy(&fa, &above, 4);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        CHECK(dsv4_f32_to_bf16(ft) == even, "tie at %04x", h);
        CHECK(dsv4_f32_to_bf16(fb) == h, "below tie %04x", h);
        CHECK(dsv4_f32_to_bf16(fa) == (uint16_t)(h + 1), "above tie %04x", h);
    }
}

static void test_e8m0_all_codes(void) {
    for (int c = 0; c < 255; c++)
        CHECK((double)dsv4_e8m0_to_f32((uint8_t)c) == ldexp(1, c - 127), "e8m0 %d", c);
    CHECK(isnan(dsv4_e8m0_to_f32(255)), "255 is NaN");
}

static void test_e2m1_all_codes_and_ties(void) {
    static const double mag[8] = {0, 0.5, 1, 1.5, 2, 3, 4, 6};
    for (int c = 0; c < 16; c++) {
        double want = (c & 8) ? -mag[c & 7] : mag[c & 7];
        CHECK(dsv4_e2m1_to_f32((uint8_t)c) == want, "decode %d", c);
        CHECK(dsv4_f32_to_e2m1((float)want) == c, "roundtrip %d", c);
    }
    for (int c = 0; c < 7; c++) {
        float mid = (float)((mag[c] + mag[c + 1]) / 2);
        int even = (c % 2 == 0) ? c : c + 1;
        CHECK(dsv4_f32_to_e2m1(mid) == even, "tie %g -> %d got %d", mid, even, dsv4_f32_to_e2m1(mid));
        CHECK(dsv4_f32_to_e2m1(-mid) == (even | 8), "tie -%g", mid);
        CHECK(dsv4_f32_to_e2m1(nextafterf(mid, 0)) == c, "below %g", mid);
        CHECK(dsv4_f32_to_e2m1(nextafterf(mid, 100)) == c + 1, "above %g", mid);
    }
    /* Spec §3.4 examples. */
    CHECK(dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(0.25f)) == 0.0f, "0.25");
    CHECK(dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(0.75f)) == 1.0f, "0.75");
    CHECK(dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(1.25f)) == 1.0f, "1.25");
    CHECK(dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(1.75f)) == 2.0f, "1.75");
    CHECK(dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(2.5f)) == 2.0f, "2.5");
    CHECK(dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(3.5f)) == 4.0f, "3.5");
    CHECK(dsv4_e2m1_to_f32(dsv4_f32_to_e2m1(5.0f)) == 4.0f, "5.0");
    CHECK(dsv4_f32_to_e2m1(100.0f) == 7, "saturate");
    uint8_t packed[1] = {0x5A}; /* low nibble 0xA (-1.0) is element 0, high 0x5 (3.0) element 1 */
    CHECK(dsv4_fp4_unpack(packed, 0) == -1.0f && dsv4_fp4_unpack(packed, 1) == 3.0f, "nibble order");
}

static void test_pow2_scale(void) {
    /* amax exactly 448 * 2^k -> scale 2^k; one ulp more -> 2^(k+1). */
    for (int k = -20; k <= 20; k++) {
        float amax = ldexpf(448.0f, k);
        CHECK(dsv4_pow2_scale_exp(amax, 1e-4f, 1.0f / 448.0f) == k || amax < 1e-4f, "448*2^%d", k);
        float up = nextafterf(amax, INFINITY);
        if (amax >= 1e-4f)
            CHECK(dsv4_pow2_scale_exp(up, 1e-4f, 1.0f / 448.0f) == k + 1, "448*2^%d+ulp", k);
    }
    CHECK(dsv4_pow2_scale_exp(0.0f, 1e-4f, 1.0f / 448.0f) == dsv4_ceil_log2_f32(1e-4f / 448.0f), "floor");
    CHECK(dsv4_pow2_scale_exp(6.0f, 6 * 0x1p-126f, 1.0f / 6.0f) == 0, "fp4 amax 6 -> scale 1");
}

int main(void) {
    RUN(test_e4m3_decode_all_codes);
    RUN(test_e4m3_roundtrip_and_ties);
    RUN(test_bf16_all_codes_and_ties);
    RUN(test_e8m0_all_codes);
    RUN(test_e2m1_all_codes_and_ties);
    RUN(test_pow2_scale);
    return test_finish();
}

/* numfmt.h — the number formats of the released checkpoint and of the official numerics (spec §2.2, §3.3,
 * §3.4, §8.1): bfloat16, float8 e4m3fn, e8m0 (exponent-only scales) and e2m1 (FP4). All encoders round to
 * nearest, ties to even, and saturate (e4m3 to ±448, e2m1 to ±6) as the CUDA satfinite casts do.
 * Pure functions, no state; exhaustively tested in tests/unit/test_numfmt.c. */
#ifndef DSV4_CORE_NUMFMT_H
#define DSV4_CORE_NUMFMT_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- bfloat16 ---------------------------------------------------------------------------------- */
static inline float dsv4_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* RNE; NaN stays NaN (quiet), infinities stay infinite. */
static inline uint16_t dsv4_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Round a float to the nearest bf16 value, returned as float ("bf16 round" of the spec). */
static inline float dsv4_bf16_round(float f) { return dsv4_bf16_to_f32(dsv4_f32_to_bf16(f)); }

/* ---- float8 e4m3fn (bias 7, max 448, no inf, NaN = S.1111.111) ------------------------------------ */
float dsv4_e4m3_to_f32(uint8_t code);
uint8_t dsv4_f32_to_e4m3(float f);        /* RNE, saturating to ±448; NaN -> 0x7f */
extern const float dsv4_e4m3_table[256];  /* decode table, same values as dsv4_e4m3_to_f32 */

/* ---- e8m0: value 2^(code-127); 255 = NaN ----------------------------------------------------------- */
static inline float dsv4_e8m0_to_f32(uint8_t code) {
    if (code == 255) return NAN;
    return ldexpf(1.0f, (int)code - 127);
}

/* ---- e2m1 (FP4): codes 0..7 = {0,.5,1,1.5,2,3,4,6}, bit 3 = sign --------------------------------- */
extern const float dsv4_e2m1_table[16];
static inline float dsv4_e2m1_to_f32(uint8_t code) { return dsv4_e2m1_table[code & 15]; }
uint8_t dsv4_f32_to_e2m1(float f);        /* RNE (ties to even code), saturating to ±6 */

/* Packed FP4 byte: low nibble = even element, high nibble = odd element (spec §2.2). */
static inline float dsv4_fp4_unpack(const uint8_t *packed, size_t i) {
    uint8_t b = packed[i >> 1];
    return dsv4_e2m1_table[(i & 1) ? (b >> 4) : (b & 15)];
}

/* max_i |x_i| over n floats (0 for n = 0); the block statistic of every power-of-two scale rule. */
static inline float dsv4_block_amax(const float *x, int n) {
    float m = 0.0f;
    for (int i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > m) m = a;
    }
    return m;
}

/* ceil(log2(t)) exact on the FP32 bit pattern, for normal positive t (spec §3.3 step 2). */
static inline int dsv4_ceil_log2_f32(float t) {
    uint32_t u;
    memcpy(&u, &t, 4);
    int e = (int)((u >> 23) & 0xffu) - 127;
    return e + ((u & 0x7fffffu) != 0);
}

/* The power-of-two ("ue8m0") scale exponent for a block with absolute maximum amax, as the official
 * act_quant computes it: s = 2^ceil(log2(max(amax, floor_amax) * inv_max)). Returns log2(s).
 * FP8: floor_amax = 1e-4, inv_max = 1/448.  FP4: floor_amax = 6*2^-126, inv_max = 1/6. */
static inline int dsv4_pow2_scale_exp(float amax, float floor_amax, float inv_max) {
    if (!(amax >= floor_amax)) amax = floor_amax; /* also maps NaN to the floor */
    return dsv4_ceil_log2_f32(amax * inv_max);
}

#ifdef __cplusplus
}
#endif
#endif

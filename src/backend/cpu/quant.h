/* quant.h — activation quantization of the official numerics (spec §3.3–§3.5), CPU reference:
 * FP8 e4m3 with power-of-two (ue8m0) block scales, in GEMM mode (codes + scales) and in-place
 * "fake-quant" mode; FP4 e2m1 fake-quant with power-of-two per-32 scales; the 128-point Hadamard rotation.
 * Convention of the whole CPU backend: activations are float arrays whose values are BF16-exact wherever
 * the official code holds a BF16 tensor. */
#ifndef DSV4_BACKEND_CPU_QUANT_H
#define DSV4_BACKEND_CPU_QUANT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_FP8_AMAX_FLOOR 1e-4f
#define DSV4_FP4_AMAX_FLOOR (6.0f * 0x1p-126f)

/* act_quant, GEMM mode: for each block of `block` elements of x[n] (n % block == 0),
 * s = 2^ceil(log2(max(amax,1e-4)/448)), q = e4m3_RNE(clamp(x/s, ±448)), scale_e8m0 = log2(s)+127.
 * q[n], scale_e8m0[n/block]. */
void dsv4_cpu_act_quant_fp8(const float *x, size_t n, int block, uint8_t *q, uint8_t *scale_e8m0);

/* act_quant, in-place mode: x <- bf16(e4m3(x/s) * s) per block (exactly representable). */
void dsv4_cpu_fake_quant_fp8(float *x, size_t n, int block);

/* fp4_act_quant, in-place, blocks of 32: s = 2^ceil(log2(max(amax, 6*2^-126)/6)),
 * x <- bf16(e2m1_RNE(clamp(x/s, ±6)) * s). n % 32 == 0. */
void dsv4_cpu_fake_quant_fp4(float *x, size_t n);

/* Walsh–Hadamard (Sylvester order) of a 128-vector scaled by 128^-1/2, FP32 math, result BF16-rounded,
 * in place. */
void dsv4_cpu_hadamard128(float *x);

#ifdef __cplusplus
}
#endif
#endif

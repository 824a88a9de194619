/* blockscaled.cuh — device helpers of the block-scaled FP8 / FP4 tensor-core kernels (spec §3.3, §3.6),
 * shared by the decode GEMV (gemv.cu), the act_quant of the linears (linear.cu) and the grouped MoE kernels
 * (kernels/moe_grouped.cu): e8m0 decoding, streaming weight loads, the e4m3 m16n8k32 MMA, the exact
 * e2m1 -> e4m3 expansion in registers, a quad word transpose, and act_quant of one 128-block by a warp.
 * Device code only; must not hold state. Moving a helper here must not change the code of its users
 * (checked by comparing their PTX before and after, line info stripped). */
#ifndef DSV4_BACKEND_CUDA_KERNELS_BLOCKSCALED_CUH
#define DSV4_BACKEND_CUDA_KERNELS_BLOCKSCALED_CUH

#include <cuda_fp8.h>
#include <stdint.h>

/* e8m0 exponent byte -> 2^(c-127) (c = 0: the subnormal 2^-127; c = 255: NaN). */
__device__ __forceinline__ float g_e8m0(uint32_t c) {
    float v = __int_as_float((int)(c << 23));
    v = c == 0 ? 0x1p-127f : v;
    return c == 255 ? __int_as_float(0x7fc00000) : v;
}

/* streaming 16-byte weight load: read-only path, not kept in L1, 256-byte L2 fetch granule */
__device__ __forceinline__ uint4 ld_stream16(const uint8_t *p) {
    uint4 v;
    asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
__device__ __forceinline__ uint32_t ld_stream4(const uint8_t *p) {
    uint32_t v;
    asm("ld.global.nc.L1::no_allocate.u32 %0, [%1];\n" : "=r"(v) : "l"(p));
    return v;
}

__device__ __forceinline__ void mma16832(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
    asm(
        "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* 8 e2m1 codes (nibbles, low first) -> 8 e4m3 bytes (lo: codes 0-3, hi: codes 4-7), exactly.
 * Magnitudes 0,.5,1,1.5,2,3,4,6 from a byte table by prmt; the sign (nibble bit 3) from a {0x00,0x80} table. */
__device__ __forceinline__ void fp4x8_to_e4m3(uint32_t w, uint32_t &lo, uint32_t &hi) {
    uint32_t m = w & 0x77777777u;
    uint32_t s = (w >> 3) & 0x11111111u;
    lo = __byte_perm(0x3C383000u, 0x4C484440u, m) | __byte_perm(0x00008000u, 0u, s);
    hi = __byte_perm(0x3C383000u, 0x4C484440u, m >> 16) | __byte_perm(0x00008000u, 0u, s >> 16);
}

/* 4x4 transpose of 32-bit words across the lanes of a quad: lane t holds row t (r0..r3) on entry and
 * column t on exit (r_i = entry value of lane i's r_t). */
__device__ __forceinline__ void quad_transpose(uint32_t &r0, uint32_t &r1, uint32_t &r2, uint32_t &r3, int t) {
    const bool odd = t & 1, hi = t & 2;
    uint32_t s0 = odd ? r0 : r1, s1 = odd ? r2 : r3;
    s0 = __shfl_xor_sync(0xffffffffu, s0, 1);
    s1 = __shfl_xor_sync(0xffffffffu, s1, 1);
    if (odd) { r0 = s0; r2 = s1; } else { r1 = s0; r3 = s1; }
    s0 = hi ? r0 : r2;
    s1 = hi ? r1 : r3;
    s0 = __shfl_xor_sync(0xffffffffu, s0, 2);
    s1 = __shfl_xor_sync(0xffffffffu, s1, 2);
    if (hi) { r0 = s0; r1 = s1; } else { r2 = s0; r3 = s1; }
}

/* act_quant (GEMM mode, spec §3.3) of the 128 BF16 values at x by one warp, bit-identical to
 * dsv4_cpu_act_quant_fp8 with block 128: each lane loads 4 values (8 bytes), the warp reduces |x| with max
 * (NaN-ignoring, like the CPU's `a > m` loop), the scale exponent is computed on the FP32 bit pattern exactly
 * as dsv4_pow2_scale_exp does, and x·2^-e (exact: ldexpf) is converted with the hardware's RNE satfinite
 * e4m3 conversion, which equals dsv4_f32_to_e4m3 (saturate to ±448, RNE, subnormals with step 2^-9).
 * Writes q[0..128) and, from lane 0, *s = e + 127. x 8-byte aligned, q 4-byte aligned. */
__device__ __forceinline__ void act_quant_warp128(const uint16_t *__restrict__ x, uint8_t *__restrict__ q,
                                                  uint8_t *__restrict__ s, int lane) {
    uint2 v = *reinterpret_cast<const uint2 *>(x + lane * 4);
    float f0 = __uint_as_float((v.x & 0xffffu) << 16), f1 = __uint_as_float((v.x >> 16) << 16);
    float f2 = __uint_as_float((v.y & 0xffffu) << 16), f3 = __uint_as_float((v.y >> 16) << 16);
    float a = fmaxf(fmaxf(fabsf(f0), fabsf(f1)), fmaxf(fabsf(f2), fabsf(f3)));
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) a = fmaxf(a, __shfl_xor_sync(0xffffffffu, a, o));
    if (!(a >= 1e-4f)) a = 1e-4f;
    uint32_t u = __float_as_uint(__fmul_rn(a, 1.0f / 448.0f));
    int e = (int)((u >> 23) & 0xffu) - 127 + ((u & 0x7fffffu) != 0);
    __nv_fp8x2_storage_t lo = __nv_cvt_float2_to_fp8x2(make_float2(ldexpf(f0, -e), ldexpf(f1, -e)), __NV_SATFINITE,
                                                       __NV_E4M3);
    __nv_fp8x2_storage_t hi = __nv_cvt_float2_to_fp8x2(make_float2(ldexpf(f2, -e), ldexpf(f3, -e)), __NV_SATFINITE,
                                                       __NV_E4M3);
    *reinterpret_cast<uint32_t *>(q + lane * 4) = (uint32_t)lo | ((uint32_t)hi << 16);
    if (lane == 0) *s = (uint8_t)(e + 127);
}

#endif

/* rope.h — the RoPE frequency table with YaRN (spec §3.7), shared by both backends: the CPU reference
 * rotates with it (backend/cpu/ops.h, dsv4_cpu_rope) and the CUDA launchers carry it by value in their
 * params (backend/cuda/ops_cuda.h), so both use the very same FP32 frequencies. Plain C. */
#ifndef DSV4_CORE_ROPE_H
#define DSV4_CORE_ROPE_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_rope {
    float inv_freq[64];   /* ω'_p for p < rope_dim/2 */
    int rope_dim;         /* 64 */
} dsv4_rope;
/* yarn = 0: ω_p = θ^(-2p/rope_dim). yarn = 1: ramp between low/high as in §3.7 (no mscale). FP32 steps
 * as the official precompute. rope_dim even, ≤ 128. Unused inv_freq entries are 0. */
void dsv4_rope_init(dsv4_rope *r, int rope_dim, double theta, int yarn, double factor, double orig_max_pos,
                    double beta_fast, double beta_slow);

#ifdef __cplusplus
}
#endif
#endif

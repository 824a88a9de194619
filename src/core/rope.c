/* rope.c — the RoPE frequency table with YaRN (spec §3.7): dsv4_rope_init, shared by the CPU reference
 * (backend/cpu/norm_rope.c rotates with it) and the CUDA kernels (the table travels by value in their params),
 * so both backends rotate by the very same FP32 frequencies. Owns no state; never allocates. */
#include "core/rope.h"

#include <math.h>

#include "core/status.h"

/* Follows the official precompute's FP32 steps: ω_p = 1 / θ^(2p/dim) (FP32 pow and reciprocal); the
 * YaRN correction range in double (Python math), the ramp in FP32, and
 * ω'_p = ω_p / f · (1 − smooth) + ω_p · smooth with smooth = 1 − ramp, each op rounded to FP32. */
static double corr_dim(double n_rot, int dim, double base, double max_pos) {
    return dim * log(max_pos / (n_rot * 2.0 * M_PI)) / (2.0 * log(base));
}

void dsv4_rope_init(dsv4_rope *r, int rope_dim, double theta, int yarn, double factor, double orig_max_pos,
                    double beta_fast, double beta_slow) {
    DSV4_ASSERT(rope_dim > 0 && rope_dim % 2 == 0 && rope_dim / 2 <= 64);
    r->rope_dim = rope_dim;
    int half = rope_dim / 2;
    float base = (float)theta;
    for (int p = 0; p < 64; p++) r->inv_freq[p] = 0.0f;
    for (int p = 0; p < half; p++) r->inv_freq[p] = 1.0f / powf(base, (float)(2 * p) / (float)rope_dim);
    if (!yarn) return;
    double lo = floor(corr_dim(beta_fast, rope_dim, theta, orig_max_pos));
    double hi = ceil(corr_dim(beta_slow, rope_dim, theta, orig_max_pos));
    if (lo < 0) lo = 0;
    if (hi > rope_dim - 1) hi = rope_dim - 1;
    double span = hi - lo;
    if (lo == hi) span = (hi + 0.001) - lo;
    float flo = (float)lo, fspan = (float)span, f = (float)factor;
    for (int p = 0; p < half; p++) {
        float ramp = ((float)p - flo) / fspan;
        ramp = ramp < 0.0f ? 0.0f : (ramp > 1.0f ? 1.0f : ramp);
        float smooth = 1.0f - ramp;
        float w = r->inv_freq[p];
        r->inv_freq[p] = w / f * (1.0f - smooth) + w * smooth;
    }
}


/* moe.c — CPU reference of the MoE element-wise ops (spec §4.8): the
 * sqrt-softplus router with bias-for-selection-only, hash routing, weight normalisation and route scale;
 * the clamped SwiGLU with the routing weight applied before the BF16 rounding. No state, no allocation
 * (E ≤ DSV4_ROUTE_MAX_E). */
#include "backend/cpu/ops.h"

#include <math.h>

#include "core/numfmt.h"
#include "core/status.h"

#define DSV4_ROUTE_MAX_E 1024

/* ================================================================================================== */
/* Router                                                                                              */
/* ================================================================================================== */

/* torch.nn.functional.softplus (beta 1, threshold 20): z if z > 20, else log1p(exp(z)), FP32. Stable:
 * exp never overflows (z ≤ 20) and log1p keeps full accuracy for very negative z. */
static float softplusf(float z) { return z > 20.0f ? z : log1pf(expf(z)); }

void dsv4_cpu_route(const float *logits, int E, const float *bias, const int64_t *hash_ids, int k,
                    float route_scale, int32_t *experts, float *weights) {
    DSV4_ASSERT(E > 0 && E <= DSV4_ROUTE_MAX_E && k > 0 && k <= E);
    float sel[DSV4_ROUTE_MAX_E];
    if (hash_ids) {
        for (int i = 0; i < k; i++) {
            DSV4_ASSERT(hash_ids[i] >= 0 && hash_ids[i] < E);
            experts[i] = (int32_t)hash_ids[i];
        }
    } else {
        for (int e = 0; e < E; e++) sel[e] = sqrtf(softplusf(logits[e])) + (bias ? bias[e] : 0.0f);
        dsv4_cpu_topk(sel, E, k, experts);
    }
    float sum = 0.0f;
    for (int i = 0; i < k; i++) {
        weights[i] = sqrtf(softplusf(logits[experts[i]]));
        sum += weights[i];
    }
    for (int i = 0; i < k; i++) weights[i] = weights[i] / sum * route_scale;
}

/* ================================================================================================== */
/* SwiGLU                                                                                              */
/* ================================================================================================== */

/* Official Expert.forward: up = clamp(up, ±lim); gate = min(gate, lim) (only when lim > 0);
 * h = silu(gate)·up with silu(z) = z / (1 + exp(−z)) (torch's formula); h = weight·h; h.to(bf16). */
void dsv4_cpu_swiglu(const float *gate, const float *up, int n, float limit, float weight, float *h) {
    for (int i = 0; i < n; i++) {
        float g = gate[i], u = up[i];
        if (limit > 0.0f) {
            u = u < -limit ? -limit : (u > limit ? limit : u);
            g = g > limit ? limit : g;
        }
        float v = g / (1.0f + expf(-g)) * u;
        h[i] = dsv4_bf16_round(weight * v);
    }
}

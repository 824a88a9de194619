/* kv_cmp_state.c — the compressor tail state's token-by-token update rule (see kv_cmp_state.h). */
#include "kv/kv_cmp_state.h"

#include <math.h>
#include <string.h>

#include "core/status.h"

int dsv4_kv_cmp_push_view(const dsv4_kv_cmp_view *c, int64_t t, const float *kv, const float *sc, float *vals_buf,
                          float *scores_buf, const float **vals, const float **scores) {
    DSV4_ASSERT(c->ratio > 0 && t >= 0);
    const int r = c->ratio, d = c->d, width = (c->overlap ? 2 : 1) * d;
    const int row = (int)(t % r);
    memcpy(c->kv_cur + (size_t)row * width, kv, sizeof(float) * (size_t)width);
    memcpy(c->sc_cur + (size_t)row * width, sc, sizeof(float) * (size_t)width);
    if ((t + 1) % r != 0) return 0;
    const int64_t w = t / r;
    if (!c->overlap) {
        *vals = c->kv_cur;
        *scores = c->sc_cur;
        return 1;
    }
    for (int j = 0; j < r; j++) {
        for (int ch = 0; ch < d; ch++) {
            vals_buf[(size_t)j * d + ch] = w > 0 ? c->kv_prev[(size_t)j * d + ch] : 0.0f;
            scores_buf[(size_t)j * d + ch] = w > 0 ? c->sc_prev[(size_t)j * d + ch] : -INFINITY;
            vals_buf[(size_t)(r + j) * d + ch] = c->kv_cur[(size_t)j * width + d + ch];
            scores_buf[(size_t)(r + j) * d + ch] = c->sc_cur[(size_t)j * width + d + ch];
        }
    }
    for (int j = 0; j < r; j++) {
        memcpy(c->kv_prev + (size_t)j * d, c->kv_cur + (size_t)j * width, sizeof(float) * (size_t)d);
        memcpy(c->sc_prev + (size_t)j * d, c->sc_cur + (size_t)j * width, sizeof(float) * (size_t)d);
    }
    *vals = vals_buf;
    *scores = scores_buf;
    return 1;
}

int dsv4_kv_cmp_push(const dsv4_kv_cmp_view *c, int64_t t, const float *kv, const float *sc, float *vals,
                     float *scores) {
    const float *pv, *ps;
    if (!dsv4_kv_cmp_push_view(c, t, kv, sc, vals, scores, &pv, &ps)) return 0;
    if (pv != vals) {   /* no overlap: the window's rows [r, d] */
        memcpy(vals, pv, sizeof(float) * (size_t)c->ratio * c->d);
        memcpy(scores, ps, sizeof(float) * (size_t)c->ratio * c->d);
    }
    return 1;
}

/* spec_rule.c — the pure decisions of speculative decoding (see spec.h): the RNG streams of a sampled
 * round, the rejection-sampling acceptance rule at one position, and the per-sequence adaptive drafting
 * controller. No model, no KV state, no clock: tests drive these with synthetic distributions and
 * acceptance sequences (tests/unit/test_spec_rule.c). */
#include <stdint.h>

#include "dsv4_sampler.h"
#include "engine/spec.h"

/* ---- RNG streams -------------------------------------------------------------------------------------
 * Stream s of a request with seed S is the plain sampler's counter-based draw with the seed S + s·φ (φ the
 * 64-bit golden ratio): stream 0 is exactly plain sampling's draw n; the others are as independent of it
 * as two seeds are. */
double dsv4_spec_uniform(uint64_t seed, int stream, uint64_t n) {
    return dsv4_sampler_uniform(seed + (uint64_t)stream * 0x9E3779B97F4A7C15ull, n);
}

int32_t dsv4_spec_draw(const double *dist, int V, double u) {
    double mass = 0;
    int32_t last = -1;
    for (int v = 0; v < V; v++)
        if (dist[v] > 0) {
            mass += dist[v];
            last = v;
        }
    if (last < 0) return -1;
    const double r = u * mass;
    double acc = 0;
    for (int v = 0; v < last; v++) {
        if (!(dist[v] > 0)) continue;
        acc += dist[v];
        if (acc > r) return v;
    }
    return last;   /* rounding: the last positive entry takes what the sum left */
}

int dsv4_spec_accept(const double *p, const double *q, int V, int32_t x, double u, double u_res, int32_t *tok) {
    /* u < p/q without a division (q(x) > 0: x was drawn from q; a q(x) of 0 rejects). */
    if (x >= 0 && x < V && q[x] > 0 && u * q[x] < p[x]) {
        *tok = x;
        return 1;
    }
    /* Residual max(0, p - q): drawn in place of a dense copy, by the same inverse CDF. */
    double mass = 0;
    int32_t last = -1;
    for (int v = 0; v < V; v++) {
        double r = p[v] - q[v];
        if (r > 0) {
            mass += r;
            last = v;
        }
    }
    if (last < 0) {   /* p <= q everywhere: p == q up to rounding, and a rejection was a rounding event */
        *tok = dsv4_spec_draw(p, V, u_res);
        return 0;
    }
    const double target = u_res * mass;
    double acc = 0;
    *tok = last;
    for (int v = 0; v < last; v++) {
        double r = p[v] - q[v];
        if (!(r > 0)) continue;
        acc += r;
        if (acc > target) {
            *tok = v;
            break;
        }
    }
    return 0;
}

/* ---- adaptive controller ---------------------------------------------------------------------------- */

void dsv4_spec_ctl_init(dsv4_spec_ctl *c, int k, double cost) {
    c->k = k;
    c->cost = cost;
    c->ema = k + 1;
    c->on = 1;
    c->wait = 0;
    c->interval = DSV4_SPEC_CTL_PROBE_MIN;
}

int dsv4_spec_ctl_drafts(const dsv4_spec_ctl *c) { return c->on || c->wait <= 0 ? c->k : 0; }

void dsv4_spec_ctl_record(dsv4_spec_ctl *c, int drafted, int produced) {
    if (drafted == 0) {              /* a plain step: only the wait before the next probe moves */
        if (!c->on && c->wait > 0) c->wait--;
        return;
    }
    if (drafted != c->k) return;     /* a short round (end of a request): no evidence of the rate */
    c->ema += DSV4_SPEC_CTL_ALPHA * ((double)produced - c->ema);
    const int pays = c->ema >= c->cost;
    if (c->on && !pays) {
        c->on = 0;
        c->interval = DSV4_SPEC_CTL_PROBE_MIN;
        c->wait = c->interval;
    } else if (!c->on && pays) {
        c->on = 1;
        c->interval = DSV4_SPEC_CTL_PROBE_MIN;
    } else if (!c->on) {
        /* A probe that paid by itself (the average still lags): probe again soon. One that did not: wait
         * twice as long for the next. */
        if (produced > c->cost) c->interval = DSV4_SPEC_CTL_PROBE_MIN;
        else c->interval = c->interval * 2 > DSV4_SPEC_CTL_PROBE_MAX ? DSV4_SPEC_CTL_PROBE_MAX : c->interval * 2;
        c->wait = c->interval;
    }
}

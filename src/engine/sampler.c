/* sampler.c — token selection for one request (see dsv4_sampler.h for the contracts, docs/SAMPLING.md for the
 * conventions chosen and why). Everything here is O(vocab) expected per call: top-k and top-p are found by
 * selection (quickselect on a total order), never by sorting the vocabulary. */
#include "dsv4_sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"

/* The O(vocab) loops below are written branch-free so that they vectorize; GCC's -O2 cost model
 * ("very cheap") refuses loops that need an epilogue, so this file asks for the dynamic model, and
 * -fno-trapping-math lets it if-convert float selects (no effect on results: FP traps are never enabled). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("tree-vectorize", "vect-cost-model=dynamic", "no-trapping-math")
#endif

/* ================================================================================================
 * Parameters
 * ================================================================================================ */

void dsv4_sampling_params_default(dsv4_sampling_params *p) {
    memset(p, 0, sizeof *p);
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->repetition_penalty = 1.0f;
}

dsv4_status dsv4_sampling_params_check(const dsv4_sampling_params *p, dsv4_err *err) {
    if (!(isfinite(p->temperature) && p->temperature >= 0))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "temperature must be finite and >= 0 (got %g)",
                            (double)p->temperature);
    if (p->top_k < 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "top_k must be >= 0 (got %d)", p->top_k);
    if (!(p->top_p > 0 && p->top_p <= 1))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "top_p must be in (0, 1] (got %g)", (double)p->top_p);
    if (!(p->min_p >= 0 && p->min_p <= 1))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "min_p must be in [0, 1] (got %g)", (double)p->min_p);
    if (!(isfinite(p->repetition_penalty) && p->repetition_penalty > 0))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "repetition_penalty must be > 0 (got %g)",
                            (double)p->repetition_penalty);
    if (!isfinite(p->presence_penalty) || !isfinite(p->frequency_penalty))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "presence/frequency penalties must be finite");
    if (p->n_stop_ids < 0 || p->n_stop_ids > DSV4_SAMPLER_MAX_STOP_IDS)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "at most %d stop token ids (got %d)",
                            DSV4_SAMPLER_MAX_STOP_IDS, p->n_stop_ids);
    if (p->logprobs < 0 || p->logprobs > DSV4_SAMPLER_MAX_LOGPROBS)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "logprobs must be in [0, %d] (got %d)",
                            DSV4_SAMPLER_MAX_LOGPROBS, p->logprobs);
    return DSV4_OK;
}

/* ================================================================================================
 * Workspace and state
 * ================================================================================================ */

dsv4_status dsv4_sampler_ws_init(dsv4_sampler_ws *ws, int vocab, dsv4_err *err) {
    memset(ws, 0, sizeof *ws);
    if (vocab <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "vocab must be > 0 (got %d)", vocab);
    ws->idx = malloc((size_t)vocab * sizeof *ws->idx);
    ws->p = malloc((size_t)vocab * sizeof *ws->p);
    ws->l = malloc((size_t)vocab * sizeof *ws->l);
    ws->bin = malloc((size_t)vocab * sizeof *ws->bin);
    if (!ws->idx || !ws->p || !ws->l || !ws->bin) {
        dsv4_sampler_ws_free(ws);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "sampler workspace for vocab %d", vocab);
    }
    ws->vocab = vocab;
    return DSV4_OK;
}

void dsv4_sampler_ws_free(dsv4_sampler_ws *ws) {
    free(ws->idx);
    free(ws->p);
    free(ws->l);
    free(ws->bin);
    memset(ws, 0, sizeof *ws);
}

dsv4_status dsv4_sampler_init(dsv4_sampler *s, const dsv4_sampling_params *params, int vocab, dsv4_err *err) {
    memset(s, 0, sizeof *s);
    if (vocab <= 0) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "vocab must be > 0 (got %d)", vocab);
    DSV4_TRY(dsv4_sampling_params_check(params, err));
    for (int i = 0; i < params->n_stop_ids; i++)
        if (params->stop_ids[i] < 0 || params->stop_ids[i] >= vocab)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "stop token id %d outside [0, %d)",
                                params->stop_ids[i], vocab);
    s->params = *params;
    s->vocab = vocab;
    if (params->repetition_penalty != 1.0f) {
        s->seen = calloc(((size_t)vocab + 63) / 64, sizeof *s->seen);
        if (!s->seen) goto nomem;
    }
    if (params->presence_penalty != 0.0f || params->frequency_penalty != 0.0f) {
        s->cnt_cap = 64;
        s->cnt_ids = malloc((size_t)s->cnt_cap * sizeof *s->cnt_ids);
        s->cnt_vals = malloc((size_t)s->cnt_cap * sizeof *s->cnt_vals);
        if (!s->cnt_ids || !s->cnt_vals) goto nomem;
        memset(s->cnt_ids, 0xff, (size_t)s->cnt_cap * sizeof *s->cnt_ids);
    }
    return DSV4_OK;
nomem:
    dsv4_sampler_free(s);
    return dsv4_err_set(err, DSV4_ERR_NOMEM, "sampler state for vocab %d", vocab);
}

void dsv4_sampler_free(dsv4_sampler *s) {
    free(s->seen);
    free(s->cnt_ids);
    free(s->cnt_vals);
    memset(s, 0, sizeof *s);
}

dsv4_status dsv4_sampler_copy(dsv4_sampler *dst, const dsv4_sampler *src, dsv4_err *err) {
    dsv4_sampler t = *src;
    t.seen = NULL;
    t.cnt_ids = NULL;
    t.cnt_vals = NULL;
    const size_t words = ((size_t)src->vocab + 63) / 64;
    if (src->seen && (t.seen = malloc(words * sizeof *t.seen))) memcpy(t.seen, src->seen, words * sizeof *t.seen);
    if (src->cnt_ids) {
        t.cnt_ids = malloc((size_t)src->cnt_cap * sizeof *t.cnt_ids);
        t.cnt_vals = malloc((size_t)src->cnt_cap * sizeof *t.cnt_vals);
        if (t.cnt_ids && t.cnt_vals) {
            memcpy(t.cnt_ids, src->cnt_ids, (size_t)src->cnt_cap * sizeof *t.cnt_ids);
            memcpy(t.cnt_vals, src->cnt_vals, (size_t)src->cnt_cap * sizeof *t.cnt_vals);
        }
    }
    if ((src->seen && !t.seen) || (src->cnt_ids && (!t.cnt_ids || !t.cnt_vals))) {
        free(t.seen);
        free(t.cnt_ids);
        free(t.cnt_vals);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "sampler copy for vocab %d", src->vocab);
    }
    dsv4_sampler_free(dst);
    *dst = t;
    return DSV4_OK;
}

dsv4_status dsv4_sampler_add_prompt(dsv4_sampler *s, const int32_t *ids, size_t n, dsv4_err *err) {
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->vocab)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "prompt token %zu: id %d outside [0, %d)", i, ids[i],
                                s->vocab);
    if (s->seen)
        for (size_t i = 0; i < n; i++) s->seen[ids[i] >> 6] |= 1ull << (ids[i] & 63);
    return DSV4_OK;
}

/* Fibonacci hashing into a power-of-two table. */
static uint32_t cnt_slot(int32_t tok, int cap) {
    return ((uint32_t)tok * 2654435761u) & (uint32_t)(cap - 1);
}

static dsv4_status cnt_grow(dsv4_sampler *s) {
    int ncap = s->cnt_cap * 2;
    int32_t *nids = malloc((size_t)ncap * sizeof *nids);
    uint32_t *nvals = malloc((size_t)ncap * sizeof *nvals);
    if (!nids || !nvals) {
        free(nids);
        free(nvals);
        return DSV4_ERR_NOMEM;
    }
    memset(nids, 0xff, (size_t)ncap * sizeof *nids);
    for (int i = 0; i < s->cnt_cap; i++) {
        if (s->cnt_ids[i] < 0) continue;
        uint32_t h = cnt_slot(s->cnt_ids[i], ncap);
        while (nids[h] >= 0) h = (h + 1) & (uint32_t)(ncap - 1);
        nids[h] = s->cnt_ids[i];
        nvals[h] = s->cnt_vals[i];
    }
    free(s->cnt_ids);
    free(s->cnt_vals);
    s->cnt_ids = nids;
    s->cnt_vals = nvals;
    s->cnt_cap = ncap;
    return DSV4_OK;
}

dsv4_status dsv4_sampler_accept(dsv4_sampler *s, int32_t tok, dsv4_err *err) {
    if (tok < 0 || tok >= s->vocab)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "accepted token %d outside [0, %d)", tok, s->vocab);
    if (s->cnt_ids) {
        /* grow before inserting so that a failed allocation changes nothing */
        if ((s->cnt_n + 1) * 2 > s->cnt_cap && cnt_grow(s) != DSV4_OK)
            return dsv4_err_set(err, DSV4_ERR_NOMEM, "sampler token counts (%d distinct)", s->cnt_n);
        uint32_t h = cnt_slot(tok, s->cnt_cap);
        while (s->cnt_ids[h] >= 0 && s->cnt_ids[h] != tok) h = (h + 1) & (uint32_t)(s->cnt_cap - 1);
        if (s->cnt_ids[h] < 0) {
            s->cnt_ids[h] = tok;
            s->cnt_vals[h] = 0;
            s->cnt_n++;
        }
        s->cnt_vals[h]++;
    }
    if (s->seen) s->seen[tok >> 6] |= 1ull << (tok & 63);
    s->step++;
    return DSV4_OK;
}

int dsv4_sampler_is_stop_id(const dsv4_sampler *s, int32_t tok) {
    for (int i = 0; i < s->params.n_stop_ids; i++)
        if (s->params.stop_ids[i] == tok) return 1;
    return 0;
}

/* ================================================================================================
 * Penalties
 * ================================================================================================ */

void dsv4_sampler_apply_penalties(const dsv4_sampler *s, float *logits) {
    if (s->seen) {
        /* HF RepetitionPenaltyLogitsProcessor: negative logits are multiplied, others divided. */
        const float rp = s->params.repetition_penalty;
        const int words = (s->vocab + 63) / 64;
        for (int w = 0; w < words; w++) {
            uint64_t bits = s->seen[w];
            while (bits) {
                int t = w * 64 + __builtin_ctzll(bits);
                bits &= bits - 1;
                float l = logits[t];
                logits[t] = l < 0 ? l * rp : l / rp;
            }
        }
    }
    if (s->cnt_ids) {
        /* OpenAI / vLLM: logit -= frequency * count + presence * (count > 0), on output tokens only. */
        const float pp = s->params.presence_penalty, fp = s->params.frequency_penalty;
        for (int i = 0; i < s->cnt_cap; i++) {
            int32_t t = s->cnt_ids[i];
            if (t < 0) continue;
            logits[t] -= fp * (float)s->cnt_vals[i];
            logits[t] -= pp;
        }
    }
}

/* ================================================================================================
 * Ordering, greedy, RNG
 * ================================================================================================ */

/* The total order every selection uses: larger logit first, then lower id. NaN sorts as -inf. */
static inline float keyv(float x) { return x == x ? x : -INFINITY; }
static inline int before(const float *l, int32_t a, int32_t b) {
    float la = keyv(l[a]), lb = keyv(l[b]);
    return la > lb || (la == lb && a < b);
}

int32_t dsv4_sample_greedy(const float *logits, int vocab) {
    /* max over 8 lanes (vectorizes; NaN never wins a '>'), then the first id holding it */
    float m8[8];
    for (int j = 0; j < 8; j++) m8[j] = -INFINITY;
    int i = 0;
    for (; i + 8 <= vocab; i += 8)
        for (int j = 0; j < 8; j++) m8[j] = logits[i + j] > m8[j] ? logits[i + j] : m8[j];
    float bv = -INFINITY;
    for (; i < vocab; i++) bv = logits[i] > bv ? logits[i] : bv;
    for (int j = 0; j < 8; j++) bv = m8[j] > bv ? m8[j] : bv;
    if (bv == -INFINITY) return 0;     /* all -inf or NaN */
    for (int32_t t = 0; t < vocab; t++)
        if (logits[t] == bv) return t;
    return 0;
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

double dsv4_sampler_uniform(uint64_t seed, uint64_t step) {
    /* Counter-based: hash the seed, add the step, hash again. Consecutive steps and nearby seeds give
     * unrelated outputs (splitmix64 is a bijective mixer with full avalanche). */
    uint64_t x = splitmix64(splitmix64(seed) + step * 0xD1B54A32D192ED03ull);
    return (double)(x >> 11) * 0x1.0p-53;
}

/* ================================================================================================
 * Selection (quickselect on the total order)
 * ================================================================================================ */

static inline void swp(int32_t *a, int i, int j) { int32_t t = a[i]; a[i] = a[j]; a[j] = t; }

/* Median-of-three pivot of idx[lo], idx[mid], idx[hi-1], moved to idx[hi-1]. */
static void pick_pivot(const float *l, int32_t *idx, int lo, int hi) {
    int mid = lo + (hi - lo) / 2, a = lo, b = mid, c = hi - 1;
    if (before(l, idx[b], idx[a])) { int t = a; a = b; b = t; }
    if (before(l, idx[c], idx[b])) { int t = b; b = c; c = t; if (before(l, idx[b], idx[a])) { t = a; a = b; b = t; } }
    swp(idx, b, hi - 1);
}

/* Lomuto partition of idx[lo, hi) around the pivot at hi-1; returns the pivot's final position j:
 * idx[lo, j) come before it, idx(j, hi) after. If p != NULL, *mass = sum of p over idx[lo, j). */
static int partition(const float *l, const float *p, int32_t *idx, int lo, int hi, double *mass) {
    int32_t pv = idx[hi - 1];
    int j = lo;
    double m = 0;
    for (int i = lo; i < hi - 1; i++) {
        if (before(l, idx[i], pv)) {
            if (p) m += p[idx[i]];
            swp(idx, i, j);
            j++;
        }
    }
    swp(idx, j, hi - 1);
    if (mass) *mass = m;
    return j;
}

static void insertion_sort(const float *l, int32_t *idx, int lo, int hi) {
    for (int i = lo + 1; i < hi; i++) {
        int32_t v = idx[i];
        int j = i;
        while (j > lo && before(l, v, idx[j - 1])) { idx[j] = idx[j - 1]; j--; }
        idx[j] = v;
    }
}

/* Rearranges idx[0, n) so that idx[0, k) are the k first in the order and idx[k-1] is the k-th. */
static void select_top_k(const float *l, int32_t *idx, int n, int k) {
    int lo = 0, hi = n;
    while (hi - lo > 16) {
        pick_pivot(l, idx, lo, hi);
        int j = partition(l, NULL, idx, lo, hi, NULL);
        if (j == k - 1) return;
        if (j > k - 1) hi = j; else lo = j + 1;
    }
    insertion_sort(l, idx, lo, hi);
}

/* Rearranges idx[0, n) and returns c such that idx[0, c) is the shortest prefix of the order whose mass
 * (sum of p) is >= target, with idx[c-1] the last of them in the order. Mass-aware quickselect:
 * expected O(n). If rounding leaves target unreached, returns n (keeps everything). */
static int select_top_p(const float *l, const float *p, int32_t *idx, int n, double target) {
    int lo = 0, hi = n;
    double acc = 0;  /* mass of idx[0, lo), always < target */
    while (hi - lo > 16) {
        pick_pivot(l, idx, lo, hi);
        double mb;
        int j = partition(l, p, idx, lo, hi, &mb);
        if (acc + mb >= target) { hi = j; continue; }
        acc += mb + p[idx[j]];
        if (acc >= target) return j + 1;
        lo = j + 1;
    }
    insertion_sort(l, idx, lo, hi);
    for (int i = lo; i < hi; i++) {
        acc += p[idx[i]];
        if (acc >= target) return i + 1;
    }
    if (hi < n) return hi;      /* reached only through rounding when hi shrank: the prefix is [0, hi) */
    /* whole set needed: make idx[n-1] the last in the order so that callers can read the boundary */
    int last = 0;
    for (int i = 1; i < n; i++) if (before(l, idx[last], idx[i])) last = i;
    swp(idx, last, n - 1);
    return n;
}


/* ---- histogram pre-selection ------------------------------------------------------------------------
 * Top-k and top-p only need an exact selection among the tokens near their cut. One pass bins every token
 * by z = (l - l_max) / T (width 1/64 over [-32, 0], one overflow bin below) with counts and masses; the bin
 * where the cumulative count (top-k) or mass (top-p) crosses its target is the only one that needs the
 * quickselect. Bins are monotone in the order (a lower bin means a strictly larger z, hence logit), so
 * the result is the same as a quickselect over the whole vocabulary. */
#define NBIN 2049
#define BIN_SCALE 64.0f
#define BIN_ZMIN (-32.0f)

static inline float zval(float l, float lmax, float invT) { return (keyv(l) - lmax) * invT; }

/* exp(x) for x <= 0 (0 below -87), relative error < 2e-7: Cody-Waite reduction by ln 2, degree-6 Taylor
 * on |r| <= ln2/2, exponent by bit assembly. Branch-free so that the compiler can vectorize callers. */
static inline float exp_neg(float x) {
    float xc = x >= -87.0f ? x : -87.0f;                            /* also maps NaN to -87 */
    float n = (xc * 1.44269504089f + 12582912.0f) - 12582912.0f;   /* round to nearest */
    float r = xc - n * 0.693145751953125f;
    r = r - n * 1.428606765330187e-06f;
    float q = 1.0f + r * (1.0f + r * (0.5f + r * (0.16666667f + r * (0.041666668f + r * (0.008333334f +
                                                                      r * 0.0013888889f)))));
    union { int32_t i; float f; } sc;
    sc.i = ((int32_t)n + 127) << 23;
    float v = q * sc.f;
    return x >= -87.0f ? v : 0.0f;                                  /* NaN -> 0 */
}

/* p[t] = exp((l[t] - lmax) * invT) for t < V; NaN logits give 0. */
static void exp_pass(const float *restrict l, float *restrict p, int V, float lmax, float invT) {
    for (int t = 0; t < V; t++) p[t] = exp_neg((l[t] - lmax) * invT);
}

/* bin[t] = bin_of(z_t) for t < V. */
static void bin_pass(const float *restrict l, uint16_t *restrict bin, int V, float lmax, float invT) {
    for (int t = 0; t < V; t++) {
        float z = (l[t] - lmax) * invT;                 /* NaN -> fails '>' -> overflow bin */
        bin[t] = (uint16_t)(z > BIN_ZMIN ? (int)(-z * BIN_SCALE) : NBIN - 1);
    }
}

/* Writes the ids t of bin b (in id order) to idx; returns how many. */
static int collect_bin(const uint16_t *bin, int V, int b, int32_t *idx) {
    int m = 0;
    for (int32_t t = 0; t < V; t++)
        idx[m] = t, m += bin[t] == b;   /* branch-free: idx has room for V entries */
    return m;
}

/* Computes the kept set of a non-greedy draw: writes the kept ids in ascending order to ws->idx[0, *nk),
 * their unnormalized probabilities exp((l - l_max) / T) in ws->p[id]. Returns the greedy token instead
 * (>= 0) when the distribution degenerates (temperature ~ 0, top_k == 1, infinite max logit), else -1. */
static int32_t kept_set(const dsv4_sampler *s, dsv4_sampler_ws *ws, const float *l, int *nk) {
    const dsv4_sampling_params *pr = &s->params;
    const int V = s->vocab;
    DSV4_ASSERT(ws->vocab == V);
    if (pr->temperature <= 1e-5f || pr->top_k == 1) return dsv4_sample_greedy(l, V);
    const int32_t top = dsv4_sample_greedy(l, V);
    const float lmax = keyv(l[top]);
    if (!isfinite(lmax)) return top;  /* +inf: that token; all -inf/NaN: token 0 */
    const float invT = 1.0f / pr->temperature;
    int32_t *idx = ws->idx;
    float *p = ws->p;
    const int need_k = pr->top_k > 1 && pr->top_k < V, need_p = pr->top_p < 1.0f;
    int32_t bnd = -1;                  /* last kept token in the order (-1: no rank cut) */

    if (need_k || need_p) {
        uint32_t cnt[NBIN];
        double mass[NBIN];
        memset(cnt, 0, sizeof cnt);
        memset(mass, 0, sizeof mass);
        uint16_t *bin = ws->bin;
        bin_pass(l, bin, V, lmax, invT);
        for (int32_t t = 0; t < V; t++) cnt[bin[t]]++;
        int cb = NBIN;                 /* bins < cb are entirely inside the top-k set */
        int n = 0;                     /* top-k members of bin cb, in idx[0, n) */
        if (need_k) {
            uint32_t c = 0;
            int b = 0;
            while (c + cnt[b] < (uint32_t)pr->top_k) c += cnt[b++];
            int m = collect_bin(bin, V, b, idx);
            n = pr->top_k - (int)c;
            select_top_k(l, idx, m, n);
            bnd = idx[n - 1];
            cb = b;
        }
        if (need_p) {
            /* masses: only of the top-k set when there is one (exp of a few tokens instead of all) */
            if (need_k) {
                for (int32_t t = 0; t < V; t++)
                    if (bin[t] < cb) {
                        p[t] = exp_neg(zval(l[t], lmax, invT));
                        mass[bin[t]] += p[t];
                    }
                for (int i = 0; i < n; i++) p[idx[i]] = exp_neg(zval(l[idx[i]], lmax, invT));
            } else {
                exp_pass(l, p, V, lmax, invT);
                for (int32_t t = 0; t < V; t++) mass[bin[t]] += p[t];
            }
            double tot = 0, acc = 0;
            for (int b = 0; b < cb; b++) tot += mass[b];
            for (int i = 0; i < n; i++) tot += p[idx[i]];
            const double target = (double)pr->top_p * tot;
            int b = 0;
            while (b < cb && acc + mass[b] < target) acc += mass[b++];
            if (b < cb) {              /* crossing inside a whole bin */
                int m = collect_bin(bin, V, b, idx);
                int c = select_top_p(l, p, idx, m, target - acc);
                bnd = idx[c - 1];
            } else if (need_k) {       /* crossing inside the top-k part of bin cb */
                int c = select_top_p(l, p, idx, n, target - acc);
                bnd = idx[c - 1];
            }                          /* else: rounding kept everything */
        }
    }
    /* min-p: the max token has p = 1 before normalization, so p_i / Z >= min_p * (1 / Z) <=> p_i >= min_p. */
    const float minp = pr->min_p;
    int k = 0;
    if (bnd < 0) {
        exp_pass(l, p, V, lmax, invT);
        for (int32_t t = 0; t < V; t++)
            if (p[t] >= minp && p[t] > 0) idx[k++] = t;
    } else if (need_p && !need_k) {
        /* p[] holds every token (exp_pass); branch-free compaction, since the kept tokens are scattered */
        const float lb = keyv(l[bnd]);
        for (int32_t t = 0; t < V; t++) {
            float lt = keyv(l[t]);
            int keep = ((lt > lb) | ((lt == lb) & (t <= bnd))) & (p[t] >= minp) & (p[t] > 0);
            idx[k] = t;
            k += keep;
        }
    } else {
        /* top-k cut: few tokens pass the rank test, so the branch is predictable */
        const float lb = keyv(l[bnd]);
        for (int32_t t = 0; t < V; t++) {
            float lt = keyv(l[t]);
            if (lt < lb || (lt == lb && t > bnd)) continue;
            float pt = exp_neg(zval(l[t], lmax, invT));
            if (pt >= minp && pt > 0) { p[t] = pt; idx[k++] = t; }
        }
    }
    if (k == 0) return top;            /* cannot happen (the max token has p = 1), kept for safety */
    *nk = k;
    return -1;
}

int32_t dsv4_sampler_pick(const dsv4_sampler *s, dsv4_sampler_ws *ws, const float *logits) {
    int nk = 0;
    int32_t g = kept_set(s, ws, logits, &nk);
    if (g >= 0) return g;
    const int32_t *idx = ws->idx;
    const float *p = ws->p;
    double mass = 0;
    for (int i = 0; i < nk; i++) mass += p[idx[i]];
    double r = dsv4_sampler_uniform(s->params.seed, s->step) * mass, acc = 0;
    for (int i = 0; i < nk; i++) {
        acc += p[idx[i]];
        if (acc > r) return idx[i];
    }
    return idx[nk - 1];
}

void dsv4_sampler_probs(const dsv4_sampler *s, dsv4_sampler_ws *ws, const float *logits, double *out) {
    memset(out, 0, (size_t)s->vocab * sizeof *out);
    int nk = 0;
    int32_t g = kept_set(s, ws, logits, &nk);
    if (g >= 0) { out[g] = 1; return; }
    double mass = 0;
    for (int i = 0; i < nk; i++) mass += ws->p[ws->idx[i]];
    for (int i = 0; i < nk; i++) out[ws->idx[i]] = ws->p[ws->idx[i]] / mass;
}

/* ================================================================================================
 * Logprobs
 * ================================================================================================ */

void dsv4_logprobs_compute(const float *logits, int vocab, int32_t tok, int n, dsv4_logprobs *out) {
    memset(out, 0, sizeof *out);
    if (n > DSV4_SAMPLER_MAX_LOGPROBS) n = DSV4_SAMPLER_MAX_LOGPROBS;
    if (n > vocab) n = vocab;
    const float m = keyv(logits[dsv4_sample_greedy(logits, vocab)]);
    double sum = 0;
    float buf[1024];
    for (int i0 = 0; i0 < vocab; i0 += 1024) {   /* 8 float lanes per chunk of 1024, fp64 across chunks */
        int nb = vocab - i0 < 1024 ? vocab - i0 : 1024;
        exp_pass(logits + i0, buf, nb, m, 1.0f);
        float part[8] = {0};
        int i = 0;
        for (; i + 8 <= nb; i += 8)
            for (int j = 0; j < 8; j++) part[j] += buf[i + j];
        for (; i < nb; i++) part[0] += buf[i];
        for (int j = 0; j < 8; j++) sum += part[j];
    }
    const double lse = (double)m + log(sum);
    /* top n: a sorted list, insertion only when a token beats the current n-th (rare after warm-up) */
    int k = 0;
    for (int32_t t = 0; t < vocab && n > 0; t++) {
        if (k == n && !before(logits, t, out->ids[n - 1])) continue;
        int j = k < n ? k++ : n - 1;
        while (j > 0 && before(logits, t, out->ids[j - 1])) { out->ids[j] = out->ids[j - 1]; j--; }
        out->ids[j] = t;
    }
    out->n = k;
    for (int i = 0; i < k; i++) out->logprobs[i] = (float)((double)keyv(logits[out->ids[i]]) - lse);
    if (tok >= 0 && tok < vocab) out->token_logprob = (float)((double)keyv(logits[tok]) - lse);
}

/* ================================================================================================
 * One step
 * ================================================================================================ */

dsv4_status dsv4_sampler_next(dsv4_sampler *s, dsv4_sampler_ws *ws, const float *logits,
                              dsv4_sample_out *out, dsv4_err *err) {
    memset(out, 0, sizeof *out);
    if (ws->vocab != s->vocab)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "sampler workspace vocab %d != request vocab %d",
                            ws->vocab, s->vocab);
    const float *l = logits;
    if (s->seen || s->cnt_ids) {
        /* penalties go on a copy so that the raw logits stay available for logprobs */
        memcpy(ws->l, logits, (size_t)s->vocab * sizeof *ws->l);
        dsv4_sampler_apply_penalties(s, ws->l);
        l = ws->l;
    }
    int32_t tok = dsv4_sampler_pick(s, ws, l);
    if (s->params.logprobs > 0) dsv4_logprobs_compute(logits, s->vocab, tok, s->params.logprobs, &out->lp);
    DSV4_TRY(dsv4_sampler_accept(s, tok, err));
    out->token = tok;
    out->is_stop = dsv4_sampler_is_stop_id(s, tok);
    return DSV4_OK;
}

/* ================================================================================================
 * Stop strings
 * ================================================================================================ */

void dsv4_stop_strings_check(const char *text, size_t len, const char *const *stops, int n_stops,
                             size_t scan_from, dsv4_stop_match *out) {
    memset(out, 0, sizeof *out);
    out->which = -1;
    size_t best = (size_t)-1;
    size_t hold = 0;
    if (scan_from > len) scan_from = len;
    for (int i = 0; i < n_stops; i++) {
        size_t k = stops[i] ? strlen(stops[i]) : 0;
        if (k == 0) continue;
        size_t start = scan_from >= k - 1 ? scan_from - (k - 1) : 0;
        if (len - start >= k) {
            const char *hit = memmem(text + start, len - start, stops[i], k);
            if (hit && (size_t)(hit - text) < best) {
                best = (size_t)(hit - text);
                out->which = i;
            }
        }
        /* longest proper prefix of stops[i] that ends text */
        size_t jmax = k - 1 < len ? k - 1 : len;
        for (size_t j = jmax; j > hold; j--)
            if (!memcmp(text + len - j, stops[i], j)) { hold = j; break; }
    }
    if (out->which >= 0) {
        out->matched = 1;
        out->pos = best;
        out->emit_len = best;
    } else {
        out->emit_len = len - hold;
    }
}

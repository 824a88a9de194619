/* test_kv_cmp_state.c — the compressor tail state's token-by-token rule (kv/kv_cmp_state.h) against a
 * straightforward reference that keeps every token's rows and reads each window straight from that history
 * (spec §4.5: window w pools tokens w·r .. w·r+r-1; with overlap also the first half of window w-1, empty for
 * w = 0). Checked EXACT (bitwise: the rule only moves values): every emitted window, that nothing is emitted
 * before a window completes, and the whole state after every chunk (cur row j = the latest token ≡ j mod r,
 * prev = the first half of the last completed window, empty rows 0 / -inf). Shapes: overlap r = 4 (CSA),
 * r = 8 and r = 128 (HCA-like, so a chunk of fewer tokens than r emits nothing), chunks of 1 token (decode)
 * up to several windows (prefill), starting at window boundaries and in the middle of a window. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kv/kv_cmp_state.h"
#include "test_util.h"

static test_rng rng;

static int same(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

typedef struct {
    int r, d, overlap, width;
    float *kv_prev, *sc_prev, *kv_cur, *sc_cur;  /* the state under test */
    float *hist_kv, *hist_sc;                    /* [T, width] every token fed so far */
} fixture;

static void fixture_init(fixture *f, int r, int d, int overlap, int T) {
    f->r = r; f->d = d; f->overlap = overlap; f->width = (overlap ? 2 : 1) * d;
    size_t cur = (size_t)r * f->width, prev = (size_t)r * d;
    f->kv_cur = malloc(cur * 4); f->sc_cur = malloc(cur * 4);
    f->kv_prev = malloc(prev * 4); f->sc_prev = malloc(prev * 4);
    for (size_t i = 0; i < cur; i++) { f->kv_cur[i] = 0.0f; f->sc_cur[i] = -INFINITY; } /* kv_pool's reset */
    for (size_t i = 0; i < prev; i++) { f->kv_prev[i] = 0.0f; f->sc_prev[i] = -INFINITY; }
    f->hist_kv = malloc((size_t)T * f->width * 4);
    f->hist_sc = malloc((size_t)T * f->width * 4);
}

static void fixture_free(fixture *f) {
    free(f->kv_cur); free(f->sc_cur); free(f->kv_prev); free(f->sc_prev); free(f->hist_kv); free(f->hist_sc);
}

/* Reference window w from the history: vals/scores [n_slots, d]. */
static void ref_window(const fixture *f, long w, float *v, float *s) {
    const int r = f->r, d = f->d, W = f->width;
    for (int j = 0; j < r; j++)
        for (int ch = 0; ch < d; ch++) {
            if (f->overlap) {
                long tp = (w - 1) * r + j, tc = w * r + j;
                v[j * d + ch] = w > 0 ? f->hist_kv[tp * W + ch] : 0.0f;
                s[j * d + ch] = w > 0 ? f->hist_sc[tp * W + ch] : -INFINITY;
                v[(r + j) * d + ch] = f->hist_kv[tc * W + d + ch];
                s[(r + j) * d + ch] = f->hist_sc[tc * W + d + ch];
            } else {
                long tc = w * r + j;
                v[j * d + ch] = f->hist_kv[tc * W + ch];
                s[j * d + ch] = f->hist_sc[tc * W + ch];
            }
        }
}

/* The state after T tokens, from the history, compared bitwise with the state under test. */
static void check_state(const fixture *f, long T) {
    const int r = f->r, d = f->d, W = f->width;
    int bad = 0;
    for (int j = 0; j < r && !bad; j++) {
        long t = T - 1 - ((T - 1 - j) % r + r) % r; /* latest token < T with t mod r == j */
        for (int c = 0; c < W && !bad; c++) {
            float ev = t >= 0 && t < T ? f->hist_kv[t * W + c] : 0.0f;
            float es = t >= 0 && t < T ? f->hist_sc[t * W + c] : -INFINITY;
            if (!same(ev, f->kv_cur[j * W + c]) || !same(es, f->sc_cur[j * W + c])) {
                CHECK(0, "T=%ld cur row %d col %d: got (%g, %g), want (%g, %g)", T, j, c, f->kv_cur[j * W + c],
                      f->sc_cur[j * W + c], ev, es);
                bad = 1;
            }
        }
        if (!f->overlap) continue;
        long tp = T / r >= 1 ? (T / r - 1) * r + j : -1; /* the last completed window's token j */
        for (int c = 0; c < d && !bad; c++) {
            float ev = tp >= 0 ? f->hist_kv[tp * W + c] : 0.0f, es = tp >= 0 ? f->hist_sc[tp * W + c] : -INFINITY;
            if (!same(ev, f->kv_prev[j * d + c]) || !same(es, f->sc_prev[j * d + c])) {
                CHECK(0, "T=%ld prev row %d col %d: got (%g, %g), want (%g, %g)", T, j, c, f->kv_prev[j * d + c],
                      f->sc_prev[j * d + c], ev, es);
                bad = 1;
            }
        }
    }
}

/* Feeds T tokens in chunks of 1..max_chunk (so chunks start at window boundaries and in the middle of one). */
static void run_case(int r, int d, int overlap, int T, int max_chunk) {
    fixture f;
    fixture_init(&f, r, d, overlap, T);
    dsv4_kv_cmp_view c = {r, d, overlap, overlap ? f.kv_prev : NULL, overlap ? f.sc_prev : NULL, f.kv_cur, f.sc_cur};
    const int n_slots = overlap ? 2 * r : r;
    float *v = malloc((size_t)n_slots * d * 4), *s = malloc((size_t)n_slots * d * 4);
    float *rv = malloc((size_t)n_slots * d * 4), *rs = malloc((size_t)n_slots * d * 4);
    long t = 0, emitted = 0;
    while (t < T) {
        int n = 1 + (int)(test_rng_u64(&rng) % (uint64_t)max_chunk);
        if (t + n > T) n = (int)(T - t);
        for (int i = 0; i < n; i++, t++) {
            float *hk = f.hist_kv + t * f.width, *hs = f.hist_sc + t * f.width;
            for (int k = 0; k < f.width; k++) {
                hk[k] = (float)test_rng_normal(&rng);
                hs[k] = (float)test_rng_normal(&rng);
            }
            for (int k = 0; k < n_slots * d; k++) v[k] = s[k] = NAN; /* untouched unless a window completes */
            int e = dsv4_kv_cmp_push(&c, t, hk, hs, v, s);
            CHECK(e == ((t + 1) % r == 0), "t=%ld r=%d: push returned %d", t, r, e);
            if (!e) {
                int untouched = 1;
                for (int k = 0; k < n_slots * d; k++) untouched &= isnan(v[k]) && isnan(s[k]);
                CHECK(untouched, "t=%ld: vals/scores written without an emission", t);
                continue;
            }
            emitted++;
            ref_window(&f, t / r, rv, rs);
            int ok = 1;
            for (int k = 0; k < n_slots * d && ok; k++) ok = same(v[k], rv[k]) && same(s[k], rs[k]);
            CHECK(ok, "window %ld (r=%d overlap=%d) differs from the history", t / r, r, overlap);
        }
        check_state(&f, t);
    }
    CHECK(emitted == T / r, "emitted %ld windows for %d tokens, ratio %d", emitted, T, r);
    free(v); free(s); free(rv); free(rs);
    fixture_free(&f);
}

static void test_overlap_decode(void) { run_case(4, 8, 1, 37, 1); }
static void test_overlap_prefill(void) { run_case(4, 16, 1, 203, 19); }
static void test_plain_r8(void) { run_case(8, 16, 0, 150, 13); }
static void test_plain_r128_short_chunks(void) { run_case(128, 4, 0, 300, 40); }

int main(void) {
    test_rng_seed(&rng, 20261205);
    RUN(test_overlap_decode);
    RUN(test_overlap_prefill);
    RUN(test_plain_r8);
    RUN(test_plain_r128_short_chunks);
    return test_finish();
}

/* test_sampler.c — tests of src/engine/sampler: exact ones (greedy and its ties, reproducibility by seed
 * and step, temperature 0 and top_k 1 equal greedy, penalties on hand-computed cases, the kept set of the
 * selection-based top-k / top-p against a full-sort fp64 reference over the real 129280 vocabulary,
 * logprobs against an fp64 log-softmax, stop strings) and statistical ones (200 000 draws from a small
 * known distribution compared by chi-square with the exact processed distribution).
 *
 * Chi-square threshold: the critical value at significance 0.001 for the test's degrees of freedom. The
 * draws use a fixed seed, so the outcome is deterministic; the threshold only documents how surprising a
 * failing statistic would be for a correct sampler (1 in 1000). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "dsv4_sampler.h"
#include "test_util.h"

#define BIGV 129280

/* ---- fp64 reference of the processed distribution (HF warper order, full sort) ------------------ */
static const float *g_l;
static int cmp_order(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (g_l[x] != g_l[y]) return g_l[x] > g_l[y] ? -1 : 1;
    return (x > y) - (x < y);
}

static void ref_probs(const float *l, int V, double T, int k, double top_p, double min_p, double *out) {
    int32_t *ord = malloc((size_t)V * sizeof *ord);
    for (int i = 0; i < V; i++) ord[i] = i;
    g_l = l;
    qsort(ord, (size_t)V, sizeof *ord, cmp_order);
    int n = (k > 0 && k < V) ? k : V;
    double m = l[ord[0]], z = 0;
    double *p = calloc((size_t)V, sizeof *p);
    for (int i = 0; i < n; i++) z += p[ord[i]] = exp(((double)l[ord[i]] - m) / T);
    if (top_p < 1) {
        double cum = 0;
        int c = 0;
        while (c < n && cum < top_p) cum += p[ord[c++]] / z;
        n = c;
    }
    double pmax = p[ord[0]];
    double z2 = 0;
    for (int i = 0; i < n; i++)
        if (p[ord[i]] >= min_p * pmax) z2 += p[ord[i]];
    memset(out, 0, (size_t)V * sizeof *out);
    for (int i = 0; i < n; i++)
        if (p[ord[i]] >= min_p * pmax) out[ord[i]] = p[ord[i]] / z2;
    free(p);
    free(ord);
}

static void random_logits(float *l, int V, uint64_t seed, double sigma) {
    test_rng r;
    test_rng_seed(&r, seed);
    for (int i = 0; i < V; i++) l[i] = (float)(test_rng_normal(&r) * sigma);
}

static dsv4_sampling_params params(float T, int k, float top_p, float min_p, uint64_t seed) {
    dsv4_sampling_params p;
    dsv4_sampling_params_default(&p);
    p.temperature = T;
    p.top_k = k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    return p;
}

/* ---- greedy ----------------------------------------------------------------------------------------- */
static void test_greedy_ties_and_nan(void) {
    float l[6] = {1, 3, NAN, 3, -INFINITY, 2};
    CHECK(dsv4_sample_greedy(l, 6) == 1, "tie 3 at ids 1,3 -> 1, got %d", dsv4_sample_greedy(l, 6));
    float n[3] = {NAN, NAN, -5};
    CHECK(dsv4_sample_greedy(n, 3) == 2, "NaN never chosen");
    float a[3] = {NAN, NAN, NAN};
    CHECK(dsv4_sample_greedy(a, 3) == 0, "all NaN -> 0");
    float e[4] = {0, 0, 0, 0};
    CHECK(dsv4_sample_greedy(e, 4) == 0, "all equal -> 0");
}

/* temperature 0 and top_k 1 give the argmax at every step, for any seed */
static void test_degenerate_equals_greedy(void) {
    float *l = malloc(BIGV * sizeof *l);
    dsv4_sampler_ws ws;
    CHECK(dsv4_sampler_ws_init(&ws, BIGV, NULL) == DSV4_OK, "ws");
    for (int trial = 0; trial < 8; trial++) {
        random_logits(l, BIGV, 100 + trial, 2.0);
        if (trial == 7) { l[500] = 50; l[17] = 50; }  /* exact tie: lowest id wins */
        int32_t g = dsv4_sample_greedy(l, BIGV);
        dsv4_sampling_params p0 = params(0.0f, 0, 0.9f, 0.1f, 1234 + trial);
        dsv4_sampling_params p1 = params(1.3f, 1, 1.0f, 0.0f, 99 + trial);
        dsv4_sampler s0, s1;
        CHECK(dsv4_sampler_init(&s0, &p0, BIGV, NULL) == DSV4_OK, "init");
        CHECK(dsv4_sampler_init(&s1, &p1, BIGV, NULL) == DSV4_OK, "init");
        for (int step = 0; step < 5; step++) {
            CHECK(dsv4_sampler_pick(&s0, &ws, l) == g, "T=0 step %d", step);
            CHECK(dsv4_sampler_pick(&s1, &ws, l) == g, "top_k=1 step %d", step);
            dsv4_sampler_accept(&s0, g, NULL);
            dsv4_sampler_accept(&s1, g, NULL);
        }
        if (trial == 7) CHECK(g == 17, "tie -> 17, got %d", g);
        dsv4_sampler_free(&s0);
        dsv4_sampler_free(&s1);
    }
    dsv4_sampler_ws_free(&ws);
    free(l);
}

/* Same seed -> same tokens; different seed -> different tokens; interleaving another request changes
 * nothing (the draw depends on (seed, step) only). */
static void generate(uint64_t seed, const float *l, int n, int32_t *out, dsv4_sampler_ws *ws, int interleave) {
    dsv4_sampling_params p = params(1.0f, 0, 0.95f, 0.0f, seed);
    dsv4_sampling_params q = params(0.8f, 40, 1.0f, 0.0f, 777);
    dsv4_sampler s, o;
    dsv4_sampler_init(&s, &p, BIGV, NULL);
    dsv4_sampler_init(&o, &q, BIGV, NULL);
    for (int i = 0; i < n; i++) {
        if (interleave) dsv4_sampler_accept(&o, dsv4_sampler_pick(&o, ws, l), NULL);
        out[i] = dsv4_sampler_pick(&s, ws, l);
        dsv4_sampler_accept(&s, out[i], NULL);
    }
    dsv4_sampler_free(&s);
    dsv4_sampler_free(&o);
}

static void test_seed_reproducibility(void) {
    float *l = malloc(BIGV * sizeof *l);
    random_logits(l, BIGV, 7, 1.5);
    dsv4_sampler_ws ws;
    dsv4_sampler_ws_init(&ws, BIGV, NULL);
    enum { N = 64 };
    int32_t a[N], b[N], c[N], d[N];
    generate(42, l, N, a, &ws, 0);
    generate(42, l, N, b, &ws, 1);
    generate(43, l, N, c, &ws, 0);
    generate(42, l, N, d, &ws, 0);
    CHECK(!memcmp(a, b, sizeof a), "same seed, other request interleaved -> same tokens");
    CHECK(!memcmp(a, d, sizeof a), "same seed twice -> same tokens");
    int diff = 0;
    for (int i = 0; i < N; i++) diff += a[i] != c[i];
    CHECK(diff > N / 2, "different seeds should differ at most steps (%d of %d differ)", diff, N);
    int distinct = 0;
    for (int i = 0; i < N; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= a[j] == a[i];
        distinct += !dup;
    }
    CHECK(distinct > N / 2, "a flat distribution gives varied tokens (%d distinct)", distinct);
    dsv4_sampler_ws_free(&ws);
    free(l);
}

/* ---- kept set over the real vocabulary vs a full sort --------------------------------------------- */
static void test_kept_set_matches_full_sort(void) {
    float *l = malloc(BIGV * sizeof *l);
    double *got = malloc(BIGV * sizeof *got), *want = malloc(BIGV * sizeof *want);
    dsv4_sampler_ws ws;
    dsv4_sampler_ws_init(&ws, BIGV, NULL);
    struct { float T; int k; float p, minp; double sigma; } cases[] = {
        {1.0f, 0, 0.9f, 0.0f, 1.0},  {0.7f, 0, 0.5f, 0.0f, 3.0},   {1.0f, 50, 1.0f, 0.0f, 2.0},
        {1.2f, 1000, 0.95f, 0.0f, 1.0}, {0.6f, 0, 1.0f, 0.05f, 2.0}, {1.0f, 20000, 0.8f, 0.01f, 1.0},
        {2.0f, 0, 0.99f, 0.001f, 4.0}, {1.0f, 2, 1.0f, 0.0f, 0.5},  {1.0f, 0, 1.0f, 0.0f, 1.0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        random_logits(l, BIGV, 1000 + c, cases[c].sigma);
        dsv4_sampling_params p = params(cases[c].T, cases[c].k, cases[c].p, cases[c].minp, 5);
        dsv4_sampler s;
        dsv4_sampler_init(&s, &p, BIGV, NULL);
        dsv4_sampler_probs(&s, &ws, l, got);
        ref_probs(l, BIGV, cases[c].T, cases[c].k, cases[c].p, cases[c].minp, want);
        int set_diff = 0, nkept = 0;
        double maxrel = 0;
        for (int i = 0; i < BIGV; i++) {
            set_diff += (got[i] > 0) != (want[i] > 0);
            nkept += want[i] > 0;
            if (want[i] > 0) {
                double r = fabs(got[i] - want[i]) / want[i];
                if (r > maxrel) maxrel = r;
            }
        }
        CHECK(set_diff == 0, "case %zu: kept sets differ in %d tokens (ref keeps %d)", c, set_diff, nkept);
        CHECK(maxrel < 1e-5, "case %zu: max relative probability error %.3g", c, maxrel);
        dsv4_sampler_free(&s);
    }
    dsv4_sampler_ws_free(&ws);
    free(l);
    free(got);
    free(want);
}

/* ---- chi-square on a small distribution ------------------------------------------------------------ */
/* critical values of chi-square at significance 0.001, df = 1..15 */
static const double chi2_crit_001[16] = {0,     10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32,
                                         26.12, 27.88, 29.59, 31.26, 32.91, 34.53, 36.12, 37.70};

static void chi_square_case(const char *name, float T, int k, float top_p, float min_p) {
    enum { V = 16, DRAWS = 200000 };
    const float l[V] = {2.0f, 1.5f, 1.2f, 1.0f, 0.9f, 0.5f, 0.3f, 0.0f,
                        -0.2f, -0.5f, -0.7f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f};
    /* shuffle the ids so that order by id != order by logit */
    float lp[V];
    const int perm[V] = {5, 12, 0, 9, 3, 14, 7, 1, 10, 15, 2, 8, 13, 4, 11, 6};
    for (int i = 0; i < V; i++) lp[perm[i]] = l[i];
    double want[V], got[V];
    ref_probs(lp, V, T, k, top_p, min_p, want);
    dsv4_sampling_params p = params(T, k, top_p, min_p, 0x5eed);
    dsv4_sampler s;
    dsv4_sampler_ws ws;
    dsv4_sampler_init(&s, &p, V, NULL);
    dsv4_sampler_ws_init(&ws, V, NULL);
    dsv4_sampler_probs(&s, &ws, lp, got);
    long cnt[V] = {0};
    for (int i = 0; i < DRAWS; i++) {
        int32_t t = dsv4_sampler_pick(&s, &ws, lp);
        cnt[t]++;
        dsv4_sampler_accept(&s, t, NULL);
    }
    double chi2 = 0;
    int df = -1, leaked = 0;
    for (int i = 0; i < V; i++) {
        CHECK(fabs(got[i] - want[i]) < 1e-6, "%s: probs[%d] %.9f vs %.9f", name, i, got[i], want[i]);
        if (want[i] == 0) { leaked += cnt[i] != 0; continue; }
        double e = want[i] * DRAWS;
        chi2 += (cnt[i] - e) * (cnt[i] - e) / e;
        df++;
    }
    CHECK(leaked == 0, "%s: dropped tokens were drawn", name);
    if (df >= 1) {
        CHECK(chi2 < chi2_crit_001[df], "%s: chi2 %.2f >= %.2f (df %d)", name, chi2, chi2_crit_001[df], df);
        printf("  %-28s kept %2d  chi2 %6.2f  (df %2d, crit@0.001 %.2f)\n", name, df + 1, chi2, df,
               chi2_crit_001[df]);
    }
    dsv4_sampler_free(&s);
    dsv4_sampler_ws_free(&ws);
}

static void test_chi_square(void) {
    chi_square_case("plain T=1", 1.0f, 0, 1.0f, 0.0f);
    chi_square_case("T=0.7", 0.7f, 0, 1.0f, 0.0f);
    chi_square_case("T=1.5 top_k=5", 1.5f, 5, 1.0f, 0.0f);
    chi_square_case("top_p=0.8", 1.0f, 0, 0.8f, 0.0f);
    chi_square_case("min_p=0.1", 1.0f, 0, 1.0f, 0.1f);
    chi_square_case("T=0.8 k=10 p=0.9 minp=0.05", 0.8f, 10, 0.9f, 0.05f);
    chi_square_case("T=2 k=12 p=0.7 minp=0.2", 2.0f, 12, 0.7f, 0.2f);
}

/* ---- penalties --------------------------------------------------------------------------------------- */
static void test_penalties_exact(void) {
    enum { V = 8 };
    float l[V] = {2.0f, -1.0f, 0.0f, 3.0f, -2.0f, 1.0f, 0.5f, -0.5f};
    dsv4_sampling_params p;
    dsv4_sampling_params_default(&p);
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    dsv4_sampler s;
    CHECK(dsv4_sampler_init(&s, &p, V, NULL) == DSV4_OK, "init");
    const int32_t prompt[] = {0, 1, 1, 2};
    CHECK(dsv4_sampler_add_prompt(&s, prompt, 4, NULL) == DSV4_OK, "prompt");
    const int32_t outs[] = {3, 3, 4, 3};
    for (int i = 0; i < 4; i++) dsv4_sampler_accept(&s, outs[i], NULL);
    dsv4_sampler_apply_penalties(&s, l);
    /* hand computed: rep on {0,1,2,3,4}: 2/2=1, -1*2=-2, 0, 3/2=1.5, -2*2=-4;
     * then output counts 3:3, 4:1: 1.5 - 0.25*3 - 0.5 = 0.25; -4 - 0.25 - 0.5 = -4.75 */
    const float want[V] = {1.0f, -2.0f, 0.0f, 0.25f, -4.75f, 1.0f, 0.5f, -0.5f};
    for (int i = 0; i < V; i++) CHECK(l[i] == want[i], "logit %d: %g vs %g", i, l[i], want[i]);
    CHECK(s.step == 4, "step counts accepted tokens");
    int32_t bad = 9;
    CHECK(dsv4_sampler_add_prompt(&s, &bad, 1, NULL) == DSV4_ERR_INVALID_ARG, "out of range prompt id");
    CHECK(dsv4_sampler_accept(&s, -1, NULL) == DSV4_ERR_INVALID_ARG, "out of range token");
    CHECK(s.step == 4, "failed accept changes nothing");
    dsv4_sampler_free(&s);

    /* many distinct output tokens: the count table grows; frequency only */
    enum { W = 5000 };
    float *big = calloc(W, sizeof *big);
    dsv4_sampling_params_default(&p);
    p.frequency_penalty = 1.0f;
    dsv4_sampler_init(&s, &p, W, NULL);
    for (int r = 0; r < 3; r++)
        for (int t = 0; t < W; t += 3) dsv4_sampler_accept(&s, t, NULL);
    dsv4_sampler_apply_penalties(&s, big);
    int ok = 1;
    for (int t = 0; t < W; t++) ok &= big[t] == (t % 3 == 0 ? -3.0f : 0.0f);
    CHECK(ok, "frequency penalty with %d distinct tokens", s.cnt_n);
    dsv4_sampler_free(&s);
    free(big);

    /* penalties off: no state, no change */
    dsv4_sampling_params_default(&p);
    dsv4_sampler_init(&s, &p, V, NULL);
    CHECK(s.seen == NULL && s.cnt_ids == NULL, "no penalty memory when off");
    dsv4_sampler_free(&s);
}

static void test_params_check(void) {
    dsv4_sampling_params p;
    dsv4_err err;
    dsv4_sampling_params_default(&p);
    CHECK(dsv4_sampling_params_check(&p, &err) == DSV4_OK, "defaults are valid");
    p.top_p = 0;
    CHECK(dsv4_sampling_params_check(&p, &err) == DSV4_ERR_INVALID_ARG, "top_p 0");
    dsv4_sampling_params_default(&p);
    p.temperature = NAN;
    CHECK(dsv4_sampling_params_check(&p, &err) == DSV4_ERR_INVALID_ARG, "T NaN");
    dsv4_sampling_params_default(&p);
    p.logprobs = 21;
    CHECK(dsv4_sampling_params_check(&p, &err) == DSV4_ERR_INVALID_ARG, "logprobs 21");
    dsv4_sampling_params_default(&p);
    p.n_stop_ids = 1;
    p.stop_ids[0] = 100;
    dsv4_sampler s;
    CHECK(dsv4_sampler_init(&s, &p, 50, &err) == DSV4_ERR_INVALID_ARG, "stop id out of vocab");
    dsv4_sampler_free(&s);
}

/* ---- logprobs ---------------------------------------------------------------------------------------- */
static void test_logprobs_vs_fp64(void) {
    float *l = malloc(BIGV * sizeof *l);
    random_logits(l, BIGV, 31, 3.0);
    l[1234] = l[999] = 20.0f;  /* tie at the top: lower id first */
    double m = -INFINITY, s = 0;
    for (int i = 0; i < BIGV; i++) if (l[i] > m) m = l[i];
    for (int i = 0; i < BIGV; i++) s += exp((double)l[i] - m);
    double lse = m + log(s);
    dsv4_logprobs lp;
    dsv4_logprobs_compute(l, BIGV, 4321, 20, &lp);
    CHECK(lp.n == 20, "n");
    CHECK(lp.ids[0] == 999 && lp.ids[1] == 1234, "tie order %d %d", lp.ids[0], lp.ids[1]);
    /* error in units of "1e-6 + half an FP32 ulp of the exact value" (the output is FP32, and logprobs
     * reach -40 here, where an ulp is 3.8e-6) */
    double maxerr = 0, maxratio = 0;
    for (int i = -1; i < lp.n; i++) {
        int32_t t = i < 0 ? 4321 : lp.ids[i];
        double want = (double)l[t] - lse, got = i < 0 ? lp.token_logprob : lp.logprobs[i];
        double halfulp = 0.5 * fabs((double)nextafterf((float)want, 0.0f) - (double)(float)want);
        double e = fabs(got - want), r = e / (1e-6 + halfulp);
        if (e > maxerr) maxerr = e;
        if (r > maxratio) maxratio = r;
        if (i > 0) CHECK(lp.logprobs[i] <= lp.logprobs[i - 1], "descending");
    }
    /* also every token, through the token argument */
    for (int32_t t = 0; t < BIGV; t += 997) {
        dsv4_logprobs one;
        dsv4_logprobs_compute(l, BIGV, t, 0, &one);
        double want = (double)l[t] - lse;
        double halfulp = 0.5 * fabs((double)nextafterf((float)want, 0.0f) - (double)(float)want);
        double e = fabs(one.token_logprob - want), r = e / (1e-6 + halfulp);
        if (e > maxerr) maxerr = e;
        if (r > maxratio) maxratio = r;
    }
    /* the top 20 really are the 20 largest */
    float thr = l[lp.ids[19]];
    int above = 0;
    for (int i = 0; i < BIGV; i++) above += l[i] > thr;
    CHECK(above <= 19, "top-20 selection (%d above the 20th)", above);
    CHECK(maxratio <= 1.0, "logprob error %.3g is %.2f x (1e-6 + half ulp)", maxerr, maxratio);
    printf("  logprobs vs fp64 log-softmax: max abs error %.3g, max %.2f x (1e-6 + half FP32 ulp)\n", maxerr,
           maxratio);

    /* sampler_next: logprobs are of the raw logits even with penalties, logits untouched */
    dsv4_sampling_params p = params(0.0f, 0, 1.0f, 0.0f, 1);
    p.repetition_penalty = 100.0f;
    p.logprobs = 3;
    p.n_stop_ids = 1;
    p.stop_ids[0] = 1234;
    dsv4_sampler smp;
    dsv4_sampler_ws ws;
    dsv4_sampler_init(&smp, &p, BIGV, NULL);
    dsv4_sampler_ws_init(&ws, BIGV, NULL);
    int32_t pr = 999;
    dsv4_sampler_add_prompt(&smp, &pr, 1, NULL);
    dsv4_sample_out out;
    CHECK(dsv4_sampler_next(&smp, &ws, l, &out, NULL) == DSV4_OK, "next");
    CHECK(out.token == 1234 && out.is_stop, "999 penalized -> 1234 (stop), got %d", out.token);
    CHECK(l[999] == 20.0f, "logits not modified");
    CHECK(out.lp.n == 3 && out.lp.ids[0] == 999, "raw top logprob is 999");
    CHECK(fabs(out.lp.token_logprob - (20.0 - lse)) < 2e-6, "token logprob raw");
    dsv4_sampler_free(&smp);
    dsv4_sampler_ws_free(&ws);
    free(l);
}

/* ---- stop strings ------------------------------------------------------------------------------------ */
static void test_stop_strings(void) {
    const char *stops[] = {"</end>", "STOP", ""};
    dsv4_stop_match m;
    const char *t1 = "hello wor";
    dsv4_stop_strings_check(t1, strlen(t1), stops, 3, 0, &m);
    CHECK(!m.matched && m.emit_len == strlen(t1), "no partial -> emit all");
    const char *t2 = "hello </e";
    dsv4_stop_strings_check(t2, strlen(t2), stops, 3, 0, &m);
    CHECK(!m.matched && m.emit_len == 6, "hold back '</e' (emit %zu)", m.emit_len);
    const char *t3 = "hello </end> more";
    dsv4_stop_strings_check(t3, strlen(t3), stops, 3, 6, &m);
    CHECK(m.matched && m.which == 0 && m.pos == 6 && m.emit_len == 6, "match at 6");
    const char *t4 = "a STOP b </end>";
    dsv4_stop_strings_check(t4, strlen(t4), stops, 3, 0, &m);
    CHECK(m.matched && m.which == 1 && m.pos == 2, "earliest match wins");
    const char *t5 = "xx ST";
    dsv4_stop_strings_check(t5, strlen(t5), stops, 3, 0, &m);
    CHECK(!m.matched && m.emit_len == 3, "hold 'ST'");
    const char *t6 = "<<";
    const char *s6[] = {"<<<"};
    dsv4_stop_strings_check(t6, 2, s6, 1, 0, &m);
    CHECK(!m.matched && m.emit_len == 0, "hold everything that could start the stop");
    /* streaming: feed one byte at a time; emitted text is monotone and ends before the stop */
    const char *full = "The answer is 42.</end>trailing";
    size_t emitted = 0;
    int stopped = 0;
    for (size_t n = 1; n <= strlen(full) && !stopped; n++) {
        dsv4_stop_strings_check(full, n, stops, 2, emitted, &m);
        CHECK(m.emit_len >= emitted, "monotone at %zu", n);
        emitted = m.emit_len;
        stopped = m.matched;
    }
    CHECK(stopped && emitted == strlen("The answer is 42."), "stream stops at the stop string (%zu)", emitted);
}

int main(void) {
    RUN(test_greedy_ties_and_nan);
    RUN(test_degenerate_equals_greedy);
    RUN(test_seed_reproducibility);
    RUN(test_kept_set_matches_full_sort);
    RUN(test_chi_square);
    RUN(test_penalties_exact);
    RUN(test_params_check);
    RUN(test_logprobs_vs_fp64);
    RUN(test_stop_strings);
    return test_finish();
}

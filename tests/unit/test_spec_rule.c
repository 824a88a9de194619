/* test_spec_rule.c — the pure parts of speculative decoding (engine/spec_rule.c):
 *  - the rejection rule at one position: drafts drawn from q, accepted by dsv4_spec_accept, give tokens
 *    distributed as p (chi-square over 400 000 draws for four (p, q) pairs: q close to p, q far, q with
 *    support outside p's, p = q) and the wrong rules (accept always, resample from p) are detected;
 *  - a two-position chain (the token after a draft, drafted from a q conditioned on the first draft) gives
 *    the joint distribution p1(a) p2(b | a);
 *  - dsv4_spec_draw's inverse CDF and the RNG streams (stream 0 is the plain sampler's draw);
 *  - the adaptive controller's decisions on synthetic acceptance sequences. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4_sampler.h"
#include "engine/spec.h"
#include "test_util.h"

#define CHECK_OR_RETURN(cond, ...) \
    do {                           \
        if (!(cond)) {             \
            CHECK(cond, __VA_ARGS__); \
            return;                \
        }                          \
    } while (0)

/* Chi-square critical values at significance 0.001 (df 1..15). */
static const double chi2_999[16] = {0, 10.83, 13.82, 16.27, 18.47, 20.52, 22.46, 24.32, 26.12, 27.88,
                                    29.59, 31.26, 32.91, 34.53, 36.12, 37.70};

/* Pearson statistic of counts against probabilities; cells with probability 0 must be empty (else +inf). */
static double chi2(const long *count, const double *prob, int n, long N, int *df) {
    double x = 0;
    *df = -1;
    for (int i = 0; i < n; i++) {
        if (prob[i] <= 0) {
            if (count[i]) return INFINITY;
            continue;
        }
        double e = prob[i] * (double)N;
        x += ((double)count[i] - e) * ((double)count[i] - e) / e;
        (*df)++;
    }
    return x;
}

/* One position of the rule under `rule`, uniforms from the three streams of output index n. */
static int32_t one_position(const double *p, const double *q, int V, uint64_t seed, uint64_t n, dsv4_spec_rule rule,
                            int *accepted) {
    int32_t x = dsv4_spec_draw(q, V, dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_DRAFT, n)), tok = -1;
    double u = dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_ACCEPT, n), ur = dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_MAIN, n);
    if (rule == DSV4_SPEC_RULE_ACCEPT_ALWAYS) {
        *accepted = 1;
        return x;
    }
    *accepted = dsv4_spec_accept(p, q, V, x, u, ur, &tok);
    if (!*accepted && rule == DSV4_SPEC_RULE_RESAMPLE_P) tok = dsv4_spec_draw(p, V, ur);
    return tok;
}

#define V6 6
static void test_rule_one_position(void) {
    static const double p[V6] = {0.30, 0.25, 0.20, 0.15, 0.10, 0.00};
    static const double qs[4][V6] = {
        {0.28, 0.27, 0.18, 0.17, 0.10, 0.00},   /* close */
        {0.05, 0.05, 0.10, 0.20, 0.60, 0.00},   /* far */
        {0.30, 0.00, 0.20, 0.00, 0.10, 0.40},   /* support outside p's, and p's tokens q never drafts */
        {0.30, 0.25, 0.20, 0.15, 0.10, 0.00},   /* equal: always accepted */
    };
    const long N = 400000;
    for (int c = 0; c < 4; c++) {
        for (int rule = 0; rule < 3; rule++) {
            long cnt[V6] = {0}, acc = 0;
            for (long n = 0; n < N; n++) {
                int a;
                int32_t t = one_position(p, qs[c], V6, 0x5eedull + (uint64_t)c, (uint64_t)n, (dsv4_spec_rule)rule, &a);
                CHECK_OR_RETURN(t >= 0 && t < V6, "token %d", t);
                cnt[t]++;
                acc += a;
            }
            int df;
            double x = chi2(cnt, p, V6, N, &df);
            printf("  q %d rule %d: chi2 %.1f (df %d, critical %.2f), acceptance %.3f\n", c, rule, x, df, chi2_999[df],
                   (double)acc / N);
            if (rule == DSV4_SPEC_RULE_EXACT) {
                CHECK(x < chi2_999[df], "q %d: the exact rule's tokens are not distributed as p (chi2 %.1f)", c, x);
                double beta = 0;
                for (int v = 0; v < V6; v++) beta += fmin(p[v], qs[c][v]);
                CHECK(fabs((double)acc / N - beta) < 5 * sqrt(beta * (1 - beta) / N) + 1e-12,
                      "q %d: acceptance %.4f, expected sum min(p, q) = %.4f", c, (double)acc / N, beta);
            } else if (c != 3) {
                CHECK(x > chi2_999[df], "q %d: wrong rule %d not detected (chi2 %.1f)", c, rule, x);
            }
        }
    }
}

/* Two positions: p1, and p2 conditioned on the first token; the draft for position 2 is drawn from a q2
 * conditioned on the first DRAFT (the chain), and only looked at if the first draft was accepted. The
 * joint of the two tokens must be p1(a) p2(b | a). */
#define V4 4
static void chain_probs(int a, double *p2, double *q2) {
    for (int v = 0; v < V4; v++) {
        p2[v] = 1.0 + ((a + v) % V4) + 0.5 * (v == a);
        q2[v] = 1.0 + ((a * 3 + v * 2) % V4);
    }
    double sp = 0, sq = 0;
    for (int v = 0; v < V4; v++) sp += p2[v], sq += q2[v];
    for (int v = 0; v < V4; v++) p2[v] /= sp, q2[v] /= sq;
}

static void test_rule_chain(void) {
    static const double p1[V4] = {0.1, 0.4, 0.3, 0.2}, q1[V4] = {0.4, 0.1, 0.2, 0.3};
    const long N = 300000;
    for (int rule = 0; rule < 3; rule++) {
        long cnt[V4 * V4] = {0};
        double want[V4 * V4];
        for (int a = 0; a < V4; a++) {
            double p2[V4], q2[V4];
            chain_probs(a, p2, q2);
            for (int b = 0; b < V4; b++) want[a * V4 + b] = p1[a] * p2[b];
        }
        for (long s = 0; s < N; s++) {
            const uint64_t seed = 1000 + (uint64_t)s;
            /* draft both positions first (as the MTP does), then verify in order */
            int32_t d1 = dsv4_spec_draw(q1, V4, dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_DRAFT, 0));
            double p2[V4], q2[V4];
            chain_probs(d1, p2, q2);
            int32_t d2 = dsv4_spec_draw(q2, V4, dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_DRAFT, 1));
            int32_t t1 = -1, t2 = -1;
            int ok1;
            if (rule == DSV4_SPEC_RULE_ACCEPT_ALWAYS) ok1 = 1, t1 = d1;
            else {
                ok1 = dsv4_spec_accept(p1, q1, V4, d1, dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_ACCEPT, 0),
                                       dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_MAIN, 0), &t1);
                if (!ok1 && rule == DSV4_SPEC_RULE_RESAMPLE_P)
                    t1 = dsv4_spec_draw(p1, V4, dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_MAIN, 0));
            }
            if (ok1) { /* position 2 decides draft d2 against p2(. | d1) */
                if (rule == DSV4_SPEC_RULE_ACCEPT_ALWAYS) t2 = d2;
                else if (!dsv4_spec_accept(p2, q2, V4, d2, dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_ACCEPT, 1),
                                           dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_MAIN, 1), &t2) &&
                         rule == DSV4_SPEC_RULE_RESAMPLE_P)
                    t2 = dsv4_spec_draw(p2, V4, dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_MAIN, 1));
            } else { /* the next round: a plain draw from p2(. | t1) with the MAIN stream */
                chain_probs(t1, p2, q2);
                t2 = dsv4_spec_draw(p2, V4, dsv4_spec_uniform(seed, DSV4_SPEC_STREAM_MAIN, 1));
            }
            cnt[t1 * V4 + t2]++;
        }
        int df;
        double x = chi2(cnt, want, V4 * V4, N, &df);
        printf("  chain rule %d: chi2 %.1f (df %d, critical %.2f)\n", rule, x, df, chi2_999[df]);
        if (rule == DSV4_SPEC_RULE_EXACT) CHECK(x < chi2_999[df], "chain: joint not p1 p2 (chi2 %.1f)", x);
        else CHECK(x > chi2_999[df], "chain: wrong rule %d not detected (chi2 %.1f)", rule, x);
    }
}

static void test_draw_and_streams(void) {
    const double d[5] = {0, 0.25, 0, 0.5, 0.25};
    CHECK(dsv4_spec_draw(d, 5, 0.0) == 1, "u = 0 -> first positive");
    CHECK(dsv4_spec_draw(d, 5, 0.2499) == 1, "below 0.25");
    CHECK(dsv4_spec_draw(d, 5, 0.25) == 3, "at 0.25 -> next");
    CHECK(dsv4_spec_draw(d, 5, 0.75) == 4, "at 0.75 -> last");
    CHECK(dsv4_spec_draw(d, 5, 0.9999999) == 4, "u near 1 -> last positive");
    const double z[3] = {0, 0, 0};
    CHECK(dsv4_spec_draw(z, 3, 0.5) == -1, "all zero -> -1");
    for (uint64_t n = 0; n < 100; n++)
        CHECK_OR_RETURN(dsv4_spec_uniform(77, DSV4_SPEC_STREAM_MAIN, n) == dsv4_sampler_uniform(77, n),
                        "stream 0 is not the plain sampler's draw %llu", (unsigned long long)n);
    /* the streams are not the same sequence shifted: no equal values in the first 10 000 of two streams */
    int same = 0;
    for (uint64_t n = 0; n < 10000; n++)
        same += dsv4_spec_uniform(77, 1, n) == dsv4_spec_uniform(77, 2, n) ||
                dsv4_spec_uniform(77, 0, n) == dsv4_spec_uniform(77, 1, n);
    CHECK(same == 0, "streams share %d draws", same);
}

/* Feeds `rounds` rounds whose produced count comes from pattern (cycled); returns how many were drafting
 * rounds, and the state in c. */
static int drive(dsv4_spec_ctl *c, int rounds, const int *pattern, int n_pat, int *pi) {
    int drafting = 0;
    for (int r = 0; r < rounds; r++) {
        int k = dsv4_spec_ctl_drafts(c);
        int produced = k ? pattern[(*pi)++ % n_pat] : 1;
        dsv4_spec_ctl_record(c, k, produced);
        drafting += k > 0;
    }
    return drafting;
}

static void test_controller(void) {
    dsv4_spec_ctl c;
    int pi = 0;
    /* Always all accepted (4 tokens per round at k = 3), cost 2.5: never off. */
    dsv4_spec_ctl_init(&c, 3, 2.5);
    const int all[] = {4};
    CHECK(drive(&c, 500, all, 1, &pi) == 500 && c.on, "full acceptance turned drafting off");
    /* Nothing accepted (1 token per round), cost 2: the average 1 + 3 (7/8)^n falls below 2 after 9 rounds. */
    dsv4_spec_ctl_init(&c, 3, 2.0);
    const int none[] = {1};
    int r = 0;
    while (c.on && r < 100) {
        dsv4_spec_ctl_record(&c, dsv4_spec_ctl_drafts(&c), 1);
        r++;
    }
    CHECK(r == 9, "turned off after %d rounds of no acceptance (expected 9)", r);
    /* While off and still accepting nothing: probes after 16, 32, 64, ... 1024 plain steps, then every 1024. */
    pi = 0;
    int probes = 0, plain = 0, gaps[16], ng = 0;
    for (int i = 0; i < 6000; i++) {
        int k = dsv4_spec_ctl_drafts(&c);
        if (k) {
            if (ng < 16) gaps[ng++] = plain;
            plain = 0;
            probes++;
        } else {
            plain++;
        }
        dsv4_spec_ctl_record(&c, k, k ? 1 : 1);
    }
    CHECK(ng >= 7 && gaps[0] == 16 && gaps[1] == 32 && gaps[2] == 64 && gaps[6] == 1024,
          "probe gaps %d %d %d .. %d", gaps[0], gaps[1], gaps[2], ng > 6 ? gaps[6] : -1);
    CHECK(!c.on && probes < 12, "%d probes in 6000 rounds of no acceptance", probes);
    /* Cost of probing a hopeless sequence over those rounds: (probes * (cost - 1)) / rounds < 1%. */
    CHECK(probes * (2.0 - 1) / 6000 < 0.01, "probing costs %.3f", probes * 1.0 / 6000);
    /* Acceptance comes back (every probe produces 4): back on within 3 probes, the probes 16 apart. */
    int back = 0, steps = 0;
    while (!c.on && steps < 5000) {
        int k = dsv4_spec_ctl_drafts(&c);
        if (k) back++;
        dsv4_spec_ctl_record(&c, k, k ? 4 : 1);
        steps++;
    }
    CHECK(c.on && back <= 3, "on again after %d good probes (%d rounds)", back, steps);
    /* A middling rate on both sides of the cost: mean 2.25 tokens (pattern 1,2,3,3) with cost 2 stays on;
     * mean 1.75 (1,1,2,3) with cost 2 goes off. */
    const int mid_hi[] = {1, 2, 3, 3}, mid_lo[] = {1, 1, 2, 3};
    dsv4_spec_ctl_init(&c, 3, 2.0);
    pi = 0;
    drive(&c, 400, mid_hi, 4, &pi);
    CHECK(c.on, "mean 2.25 > cost 2 turned drafting off (ema %.2f)", c.ema);
    dsv4_spec_ctl_init(&c, 3, 2.0);
    pi = 0;
    int d = drive(&c, 400, mid_lo, 4, &pi);
    CHECK(!c.on || d < 200, "mean 1.75 < cost 2 kept drafting (%d of 400 rounds, ema %.2f)", d, c.ema);
    /* Short rounds (fewer drafts than k, at the end of a request) do not move the average. */
    dsv4_spec_ctl_init(&c, 3, 2.0);
    double e0 = c.ema;
    dsv4_spec_ctl_record(&c, 1, 1);
    CHECK(c.ema == e0 && c.on, "a short round moved the average");
    (void)none;
}

int main(void) {
    RUN(test_rule_one_position);
    RUN(test_rule_chain);
    RUN(test_draw_and_streams);
    RUN(test_controller);
    return test_finish();
}

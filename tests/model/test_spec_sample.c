/* test_spec_sample.c — sampled speculative decoding on the tiny-flash checkpoint (issue 15 item 3): the
 * distribution of the first two tokens it generates after a fixed prefix equals plain sampling's, by a
 * chi-square test against the exact probabilities computed from the main model's logits; the same test
 * rejects a wrong rule (negative control); the same seed gives the same tokens, alone or in a batch; a greedy
 * sampler (T = 0) gives plain greedy tokens; the public engine calls and the adaptive controller.
 *
 * Setting: temperature 0.9, top_k 4 (each position has 4 possible tokens: 16 cells for the pair) and a
 * repetition penalty of 1.3 on the prompt and the output (so p of the second token depends on the first
 * through the penalty too, and the draft sampler's penalties must count the first draft). The MTP logits of
 * a random checkpoint have nothing in common with the main model's, so the draft-logits hook sets q: for
 * the first position most of its mass on p's least likely token and on one token p never produces, a little
 * on two others; for the second (after a first draft a) the same shape over p(.|a)'s tokens. The first round
 * drafts k = 2 (both positions decided by the rule, the second draft drawn from q conditioned on the first);
 * a sequence that rejected its first draft gets its second token from a plain step.
 *
 * Statistics: N = 384 samples (seeds 1..N, 12 batches of 32 sequences; a sample costs ~7.5 model rows, and
 * a row of the tiny model costs 10-40 ms under ASan, so this is what fits in a minute), Pearson chi-square
 * over the 16 cells with non-zero probability (df 15) against the critical value at significance 0.001
 * (37.70); a pair of probability 0 fails at once. The seeds are fixed, so the result is deterministic (the
 * statistic is printed: 15.6 when written, with 169 of 768 drafts accepted). Power: a wrong wiring is detected with probability 0.9 when its
 * distribution D = sum (p' - p)^2 / p >= 45 / N = 0.12 (the non-centrality for power 0.9 at df 15, alpha
 * 0.001): a wrong logits row, a missing penalty or drafts taken as tokens are; small biases of the rule
 * itself are the business of tests/unit/test_spec_rule.c (300 000 samples, D >= 1.5e-4). The smallest
 * expected cell count is checked >= 5. Negative control: the same test with the "accept always" rule (the
 * output is then q) on 32 samples must fail. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/threadpool.h"
#include "dsv4.h"
#include "engine/forward.h"
#include "engine/kv_access.h"
#include "engine/model.h"
#include "dsv4_sampler.h"
#include "engine/spec.h"
#include "test_util.h"

#define B 32          /* sequences per batch */
#ifndef ROUNDS
#define ROUNDS 12     /* batches of the exact rule (the negative control: 1) */
#endif
#define TP 1          /* prefix tokens fed before the round (the pending token follows) */
#define TOPK 4

static const double chi2_999_df15 = 37.70;

typedef struct rig {
    dsv4_model *m;
    dsv4_threadpool *pool;
    dsv4_forward *f;
    dsv4_kv_manager *kv;
    dsv4_spec_ws *ws;
    int V;
    size_t HD;
} rig;

static int rig_open(rig *r, const char *dir) {
    dsv4_err err = {{0}};
    memset(r, 0, sizeof *r);
    dsv4_spec_backend be;
    if (dsv4_model_load(dir, &r->m, &err) != DSV4_OK || dsv4_threadpool_create(2, &r->pool, &err) != DSV4_OK ||
        dsv4_kv_access_create(r->m->cfg, B + 8, (B + 8) * 64, &r->kv, &err) != DSV4_OK ||
        dsv4_forward_create(r->m, r->pool, &r->f, &err) != DSV4_OK ||
        (dsv4_spec_backend_cpu(r->f, &be), dsv4_spec_ws_create(&be, r->kv, B, &r->ws, &err)) != DSV4_OK) {
        CHECK(0, "%s: %s", dir, err.msg);
        return 0;
    }
    r->V = r->m->cfg->vocab_size;
    r->HD = (size_t)r->m->cfg->hc_mult * r->m->cfg->dim;
    return 1;
}

static void rig_close(rig *r) {
    dsv4_spec_ws_destroy(r->ws);
    dsv4_forward_destroy(r->f);
    if (r->kv) dsv4_kv_access_destroy(r->kv);
    dsv4_threadpool_destroy(r->pool);
    dsv4_model_free(r->m);
}

/* Main-model logits [V] after feeding tok[0..n) to a fresh slot (plain forward, then released). */
static int logits_after(rig *r, const int32_t *tok, int n, float *out) {
    dsv4_err err = {{0}};
    int slot;
    if (dsv4_kv_access_admit(r->kv, &slot, &err) != DSV4_OK) { CHECK(0, "%s", err.msg); return 0; }
    dsv4_seq_step s = {slot, tok, n, 1};
    dsv4_status st = dsv4_forward_step(r->f, r->kv, &s, 1, out, &err);
    CHECK(st == DSV4_OK, "%s", err.msg);
    dsv4_kv_access_release(r->kv, slot);
    return st == DSV4_OK;
}

/* The test's knowledge: the exact distributions and the supports the draft hook builds q from. */
typedef struct truth {
    int V;
    int32_t prefix[TP + 1];
    double *p1;                 /* [V] */
    double *p2;                 /* [V, V] row a: p(. | a), for a in supp(p1) */
    int32_t sup1[TOPK];         /* supp(p1) ascending */
    int32_t sup2[TOPK][TOPK];   /* supp(p2(. | sup1[i])) */
    int32_t outsider;           /* a token outside every support above */
    long hook_calls;
} truth;

/* supp(p) ordered by probability, least likely first. */
static void support(const double *p, int V, int32_t *sup) {
    int n = 0;
    for (int v = 0; v < V && n < TOPK; v++)
        if (p[v] > 0) sup[n++] = v;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && p[sup[j]] < p[sup[j - 1]]; j--) {
            int32_t x = sup[j];
            sup[j] = sup[j - 1];
            sup[j - 1] = x;
        }
}

/* q for the draft of position TP+1 (first) or TP+2 (second, after prev): 3 of p's tokens + the outsider. */
static void set_q(void *user, int slot, long pos, int32_t prev, float *logits) {
    truth *t = user;
    (void)slot;
    t->hook_calls++;
    for (int v = 0; v < t->V; v++) logits[v] = -1e4f;
    const int32_t *sup = NULL;
    if (pos == TP + 1) sup = t->sup1;
    else
        for (int i = 0; i < TOPK; i++)
            if (t->sup1[i] == prev) sup = t->sup2[i];
    if (!sup) { /* after a first draft p never produces: any q */
        logits[t->outsider] = 0;
        return;
    }
    /* most of q on p's least likely token and on the outsider, little on p's most likely one */
    logits[sup[0]] = 1.5f;
    logits[sup[1]] = 0.0f;
    logits[sup[3]] = -1.0f;
    logits[t->outsider] = 0.8f;
}

static void sampler_params(dsv4_sampling_params *sp, uint64_t seed) {
    dsv4_sampling_params_default(sp);
    sp->temperature = 0.9f;
    sp->top_k = TOPK;
    sp->repetition_penalty = 1.3f;
    sp->seed = seed;
}

/* Samples N pairs (first two generated tokens) with rule; counts [V*V] (only supported pairs land in
 * range: others are counted in *stray). */
static void sample_pairs(rig *r, truth *t, dsv4_spec_rule rule, int rounds, long *counts, long *stray, long *accepted) {
    const int V = r->V;
    float *last_h = calloc((size_t)B * r->HD, sizeof(float));
    dsv4_sampler smp[B];
    memset(smp, 0, sizeof smp);
    dsv4_spec_hooks hooks = {NULL, set_q, NULL, t, rule};
    *stray = 0;
    *accepted = 0;
    for (int round = 0; round < rounds; round++) {
        dsv4_err err = {{0}};
        int slots[B];
        dsv4_spec_seq q[B];
        int32_t got[B * (DSV4_SPEC_MAX_DRAFT + 1)], first[B][2];
        int n_out[B], have[B];
        for (int i = 0; i < B; i++) {
            CHECK(dsv4_kv_access_admit(r->kv, &slots[i], &err) == DSV4_OK, "%s", err.msg);
            float *lh[1] = {last_h + r->HD * (size_t)i};
            dsv4_seq_step s = {slots[i], t->prefix, TP, 0};
            CHECK(dsv4_spec_step(r->f, r->kv, &s, 1, lh, NULL, NULL, NULL, &err) == DSV4_OK, "%s", err.msg);
            dsv4_sampling_params sp;
            sampler_params(&sp, 1 + (uint64_t)(round * B + i));
            CHECK(dsv4_sampler_init(&smp[i], &sp, V, &err) == DSV4_OK, "%s", err.msg);
            CHECK(dsv4_sampler_add_prompt(&smp[i], t->prefix, TP + 1, &err) == DSV4_OK, "%s", err.msg);
            q[i] = (dsv4_spec_seq){slots[i], lh[0], t->prefix[TP], 2, &smp[i]};
            have[i] = 0;
        }
        /* Round 1: two drafts each; a sequence that rejected the first draft gets its second token from a
         * plain step (a round without drafts). */
        int left = B;
        while (left > 0) {
            int n = 0, idx[B];
            for (int i = 0; i < B; i++)
                if (have[i] < 2) idx[n++] = i;
            dsv4_spec_seq qq[B];
            for (int j = 0; j < n; j++) qq[j] = q[idx[j]];
            dsv4_status st = dsv4_spec_round(r->ws, r->kv, n, qq, got, n_out, &hooks, &err);
            CHECK(st == DSV4_OK, "round: %s", err.msg);
            if (st != DSV4_OK) break;
            for (int j = 0; j < n; j++) {
                const int i = idx[j];
                *accepted += n_out[j] - 1;
                for (int o = 0; o < n_out[j] && have[i] < 2; o++) first[i][have[i]++] = got[j * (DSV4_SPEC_MAX_DRAFT + 1) + o];
                q[i].cur = got[j * (DSV4_SPEC_MAX_DRAFT + 1) + n_out[j] - 1];
                q[i].k = 0;   /* the second token after a rejection: a plain step */
                if (have[i] >= 2) left--;
            }
        }
        for (int i = 0; i < B; i++) {
            int32_t a = first[i][0], b = first[i][1];
            if (t->p1[a] > 0 && t->p2[(size_t)a * V + b] > 0) counts[(size_t)a * V + b]++;
            else (*stray)++;
            dsv4_sampler_free(&smp[i]);
            dsv4_kv_access_release(r->kv, slots[i]);
        }
    }
    free(last_h);
}

static double pearson(const truth *t, const long *counts, long N, int *df, double *min_expected) {
    const int V = t->V;
    double x = 0;
    *df = -1;
    *min_expected = 1e300;
    for (int i = 0; i < TOPK; i++)
        for (int j = 0; j < TOPK; j++) {
            int32_t a = t->sup1[i], b = t->sup2[i][j];
            double e = t->p1[a] * t->p2[(size_t)a * V + b] * (double)N;
            double c = (double)counts[(size_t)a * V + b];
            x += (c - e) * (c - e) / e;
            (*df)++;
            if (e < *min_expected) *min_expected = e;
        }
    return x;
}

static void test_chi_square(void) {
    rig r;
    if (!rig_open(&r, "tests/data/tiny-flash")) return;
    const int V = r.V;
    truth t = {.V = V};
    test_rng g;
    test_rng_seed(&g, 2024);
    for (int i = 0; i <= TP; i++) t.prefix[i] = 2 + (int32_t)(test_rng_u64(&g) % (uint64_t)(V - 2));
    t.p1 = calloc((size_t)V, sizeof(double));
    t.p2 = calloc((size_t)V * V, sizeof(double));
    float *lg = malloc(sizeof(float) * (size_t)V);
    dsv4_sampler_ws sws;
    dsv4_sampler s0;
    dsv4_sampling_params sp;
    dsv4_err err = {{0}};
    sampler_params(&sp, 0);
    CHECK(dsv4_sampler_ws_init(&sws, V, &err) == DSV4_OK && dsv4_sampler_init(&s0, &sp, V, &err) == DSV4_OK &&
          dsv4_sampler_add_prompt(&s0, t.prefix, TP + 1, &err) == DSV4_OK, "%s", err.msg);
    /* Exact: p1 after prefix + pending token; p2(. | a) with a accepted (penalty) after prefix, pending, a. */
    if (!logits_after(&r, t.prefix, TP + 1, lg)) return;
    dsv4_sampler_apply_penalties(&s0, lg);
    dsv4_sampler_probs(&s0, &sws, lg, t.p1);
    support(t.p1, V, t.sup1);
    int32_t seq[TP + 2];
    memcpy(seq, t.prefix, sizeof t.prefix);
    for (int i = 0; i < TOPK; i++) {
        seq[TP + 1] = t.sup1[i];
        if (!logits_after(&r, seq, TP + 2, lg)) return;
        dsv4_sampler s1 = {0};
        CHECK(dsv4_sampler_copy(&s1, &s0, &err) == DSV4_OK && dsv4_sampler_accept(&s1, t.sup1[i], &err) == DSV4_OK,
              "%s", err.msg);
        dsv4_sampler_apply_penalties(&s1, lg);
        dsv4_sampler_probs(&s1, &sws, lg, t.p2 + (size_t)t.sup1[i] * V);
        support(t.p2 + (size_t)t.sup1[i] * V, V, t.sup2[i]);
        dsv4_sampler_free(&s1);
    }
    /* the outsider: in no support */
    for (int32_t v = V - 1; v >= 0; v--) {
        int in = t.p1[v] > 0;
        for (int i = 0; i < TOPK; i++) in |= t.p2[(size_t)t.sup1[i] * V + v] > 0;
        if (!in) { t.outsider = v; break; }
    }
    long *counts = calloc((size_t)V * V, sizeof(long));
    const char *names[2] = {"exact", "accept always"};
    const int rule_rounds[2] = {ROUNDS, 1};
    for (int rule = 0; rule < 2; rule++) {
        memset(counts, 0, sizeof(long) * (size_t)V * V);
        long stray, accepted;
        t.hook_calls = 0;
        const int rounds = rule_rounds[rule];
        const long N = (long)B * rounds;
        sample_pairs(&r, &t, (dsv4_spec_rule)rule, rounds, counts, &stray, &accepted);
        int df;
        double mine, x = pearson(&t, counts, N - stray, &df, &mine);
        printf("  %s: chi2 %.1f (df %d, critical %.2f at 0.001), %ld of %ld pairs of probability 0, %ld drafts "
               "accepted, smallest expected cell %.1f\n", names[rule], x, df, chi2_999_df15, stray, N, accepted, mine);
        if (rule == DSV4_SPEC_RULE_EXACT) {
            CHECK(df == 15 && stray == 0 && x < chi2_999_df15, "speculative sampling's pairs are not plain sampling's");
            CHECK(accepted > N / 4 && accepted < 2 * N - N / 4, "drafts accepted %ld of %ld: the rule is not exercised "
                  "both ways", accepted, 2 * N);
            CHECK(mine >= 5, "expected cell count %.1f < 5", mine);
            CHECK(t.hook_calls > N, "the draft hook ran %ld times", t.hook_calls);
        } else {
            CHECK(stray > 0 || x > chi2_999_df15, "wrong rule '%s' not detected", names[rule]);
        }
    }
    free(counts);
    free(t.p1);
    free(t.p2);
    free(lg);
    dsv4_sampler_free(&s0);
    dsv4_sampler_ws_free(&sws);
    rig_close(&r);
}

/* The same seeds give the same tokens; a greedy sampler gives the greedy tokens (equal to no sampler). */
static void test_determinism_and_greedy(void) {
    rig r;
    if (!rig_open(&r, "tests/data/tiny-flash")) return;
    const int V = r.V, n = 12;
    int32_t prefix[TP + 1] = {7, 99};
    int32_t toks[3][12];
    for (int run = 0; run < 3; run++) {
        dsv4_err err = {{0}};
        int slot;
        float *lh = calloc(r.HD, sizeof(float));
        CHECK(dsv4_kv_access_admit(r.kv, &slot, &err) == DSV4_OK, "%s", err.msg);
        dsv4_seq_step s = {slot, prefix, TP, 0};
        CHECK(dsv4_spec_step(r.f, r.kv, &s, 1, &lh, NULL, NULL, NULL, &err) == DSV4_OK, "%s", err.msg);
        dsv4_sampler smp = {0};
        dsv4_sampling_params sp;
        sampler_params(&sp, 4242);
        sp.top_k = 0;
        sp.repetition_penalty = 1.0f;
        sp.temperature = run == 2 ? 0.0f : 1.5f;   /* a high temperature: drafts sometimes right */
        CHECK(dsv4_sampler_init(&smp, &sp, V, &err) == DSV4_OK, "%s", err.msg);
        dsv4_spec_seq q = {slot, lh, prefix[TP], 3, &smp};
        int have = 0, n_out;
        int32_t got[DSV4_SPEC_MAX_DRAFT + 1];
        while (have < n) {
            int left = n - have - 1;
            q.k = left < 3 ? left : 3;
            if (dsv4_spec_round(r.ws, r.kv, 1, &q, got, &n_out, NULL, &err) != DSV4_OK) {
                CHECK(0, "%s", err.msg);
                break;
            }
            for (int o = 0; o < n_out; o++) toks[run][have++] = got[o];
            q.cur = got[n_out - 1];
        }
        CHECK(smp.step == (uint64_t)n, "sampler step %llu after %d tokens", (unsigned long long)smp.step, n);
        dsv4_sampler_free(&smp);
        dsv4_kv_access_release(r.kv, slot);
        free(lh);
    }
    CHECK(memcmp(toks[0], toks[1], sizeof toks[0]) == 0, "same seed, different tokens");
    /* greedy: plain argmax decoding */
    float *lg = malloc(sizeof(float) * (size_t)V);
    int32_t seq[TP + 1 + 12];
    memcpy(seq, prefix, sizeof prefix);
    for (int i = 0; i < n; i++) {
        if (!logits_after(&r, seq, TP + 1 + i, lg)) break;
        seq[TP + 1 + i] = dsv4_sample_greedy(lg, V);
    }
    CHECK(memcmp(seq + TP + 1, toks[2], sizeof toks[2]) == 0, "temperature 0 differs from plain greedy");
    free(lg);
    rig_close(&r);
}

/* The public calls: a sampled sequence gets the same tokens alone and in a batch with another (same seed,
 * same prompt); greedy through dsv4_engine_decode_spec = dsv4_engine_decode_greedy; the adaptive controller
 * at the cpu's default cost turns drafting off on a random model (few drafts), and on at cost 1 (all rounds
 * draft); k out of range is refused. */
static void test_engine_api_sampled(void) {
    dsv4_engine_options o = {0};
    o.model_dir = "tests/data/tiny-flash";
    o.max_seqs = 4;
    o.max_tokens = 1024;
    o.n_threads = 2;
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    if (dsv4_engine_create(&o, &e, &err) != DSV4_OK) { CHECK(0, "%s", err.msg); return; }
    const int V = dsv4_engine_vocab_size(e), n = 10;
    int32_t prompt[2][6] = {{11, 22, 33, 44, 55, 66}, {300, 7, 90, 1, 2, 3}};
    int seq[4];
    float *lg = malloc(sizeof(float) * (size_t)V * 4);
    for (int i = 0; i < 4; i++) {
        CHECK(dsv4_engine_seq_open(e, &seq[i], &err) == DSV4_OK, "%s", err.msg);
        dsv4_batch_item it = {seq[i], prompt[i == 2], 6, 1};
        CHECK(dsv4_engine_step_mtp(e, &it, 1, lg, NULL, NULL, &err) == DSV4_OK, "%s", err.msg);
    }
    dsv4_sampler sm[3];
    memset(sm, 0, sizeof sm);
    for (int i = 0; i < 3; i++) {
        dsv4_sampling_params sp;
        dsv4_sampling_params_default(&sp);
        sp.temperature = 1.3f;
        sp.seed = i == 2 ? 9 : 5;
        CHECK(dsv4_sampler_init(&sm[i], &sp, V, &err) == DSV4_OK, "%s", err.msg);
    }
    dsv4_spec_options so = {2, 0, 1.0};
    int32_t alone[10], pair[20], first[2] = {5, 5};
    dsv4_sampler *one[1] = {&sm[0]}, *two[2] = {&sm[1], &sm[2]};
    dsv4_spec_info info;
    CHECK(dsv4_engine_decode_spec(e, &seq[0], 1, first, n, &so, one, alone, &info, &err) == DSV4_OK, "%s", err.msg);
    CHECK(info.drafted > 0, "no drafts");
    CHECK(dsv4_engine_decode_spec(e, &seq[1], 2, first, n, &so, two, pair, NULL, &err) == DSV4_OK, "%s", err.msg);
    int same = 1;
    for (int i = 0; i < n; i++) same &= pair[i * 2] == alone[i];
    CHECK(same, "a sampled sequence's tokens depend on its batch");
    CHECK(sm[0].step == (uint64_t)n && sm[1].step == (uint64_t)n, "sampler steps %llu %llu",
          (unsigned long long)sm[0].step, (unsigned long long)sm[1].step);
    /* greedy and adaptive on the fourth sequence vs plain greedy on a fifth */
    int plain_seq;
    CHECK(dsv4_engine_seq_open(e, &plain_seq, &err) == DSV4_ERR_CAPACITY, "a fifth sequence opened");
    dsv4_engine_seq_close(e, seq[0]);
    CHECK(dsv4_engine_seq_open(e, &plain_seq, &err) == DSV4_OK, "%s", err.msg);
    dsv4_batch_item it = {plain_seq, prompt[0], 6, 1};
    CHECK(dsv4_engine_step(e, &it, 1, lg, &err) == DSV4_OK, "%s", err.msg);
    int32_t want[10], got[10];
    CHECK(dsv4_engine_decode_greedy(e, &plain_seq, 1, first, n, want, NULL, &err) == DSV4_OK, "%s", err.msg);
    dsv4_spec_options ad = {3, 1, 0};   /* adaptive at the cpu default cost */
    CHECK(dsv4_engine_decode_spec(e, &seq[3], 1, first, n, &ad, NULL, got, &info, &err) == DSV4_OK, "%s", err.msg);
    CHECK(memcmp(want, got, sizeof want) == 0, "greedy decode_spec differs from decode_greedy");
    CHECK(info.drafted < 3 * (long)info.rounds / 2, "adaptive at cost %.1f kept drafting: %ld drafted in %ld rounds",
          dsv4_engine_spec_cost(e, 3), info.drafted, info.rounds);
    dsv4_spec_options bad = {4, 0, 0};
    CHECK(dsv4_engine_decode_spec(e, &seq[3], 1, first, 2, &bad, NULL, got, NULL, &err) == DSV4_ERR_INVALID_ARG,
          "k = 4 accepted");
    for (int i = 0; i < 3; i++) dsv4_sampler_free(&sm[i]);
    free(lg);
    dsv4_engine_destroy(e);
}

int main(void) {
    RUN(test_chi_square);
    RUN(test_determinism_and_greedy);
    RUN(test_engine_api_sampled);
    return test_finish();
}

/* test_synth_hash.c — the counter-based weight generator (model/synth_hash.h) on the host:
 *   - byte ranges over many elements: no e4m3 NaN code and every other code used, FP4 bytes spread over all
 *     256 values, e8m0 scales inside their range, BF16 / F32 finite and inside mean ± a with the right spread,
 *     tid2eid rows of k distinct experts with every expert about equally often;
 *   - the same ranges as the checkpoint writer (model/synth.c): a small checkpoint written by dsv4_synth_write
 *     has every e8m0 scale inside the generator's range for that tensor, norms 1 and F32 tensors inside
 *     mean ± a (shared rules);
 *   - launch-shape independence: filling in chunks of any sizes gives the same bytes as one fill;
 *   - a tensor's values depend on its name and the seed only (another seed changes them). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/numfmt.h"
#include "model/checkpoint.h"
#include "dsv4_synth.h"
#include "model/synth_hash.h"
#include "test_util.h"

static dsv4_config tiny_cfg(void) {
    dsv4_config c;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_synth_config_preset("tiny", 0, 0, &c, &err);
    CHECK(st == DSV4_OK, "preset: %s", err.msg);
    c.vocab_size = 1024;   /* small embed/head/tid2eid: the rules do not depend on it */
    return c;
}

static dsv4_synth_fill fill_of(const dsv4_config *c, const char *name, dsv4_dtype dt, int64_t d0, int64_t d1) {
    dsv4_synth_fill f;
    dsv4_err err = {{0}};
    int64_t shape[2] = {d0, d1};
    dsv4_status st = dsv4_synth_fill_for_tensor(c, 7, name, dt, d1 ? 2 : 1, shape, &f, &err);
    CHECK(st == DSV4_OK, "fill %s: %s", name, err.msg);
    return f;
}

#define N_BIG (1u << 20)

static void test_e4m3_codes(void) {
    dsv4_config c = tiny_cfg();
    dsv4_synth_fill f = fill_of(&c, "layers.0.attn.wq_a.weight", DSV4_DTYPE_F8_E4M3, 128, 256);
    uint8_t *b = malloc(N_BIG);
    dsv4_synth_hash_fill(&f, 123, N_BIG, b);
    long count[256] = {0};
    for (size_t i = 0; i < N_BIG; i++) count[b[i]]++;
    CHECK(count[0x7f] == 0 && count[0xff] == 0, "e4m3 NaN codes generated: %ld / %ld", count[0x7f], count[0xff]);
    int used = 0;
    long lo = N_BIG, hi = 0;
    for (int v = 0; v < 256; v++)
        if (v != 0x7f && v != 0xff) {
            used += count[v] > 0;
            if (count[v] < lo) lo = count[v];
            if (count[v] > hi) hi = count[v];
        }
    CHECK(used == 254, "only %d of the 254 non-NaN codes used", used);
    /* 2^20 / 254 = 4128 per code, sd ~64: 20% is > 12 sd */
    CHECK(lo > 4128 * 0.8 && hi < 4128 * 1.2, "codes not uniform: %ld .. %ld", lo, hi);
    free(b);
}

static void test_fp4_bytes(void) {
    dsv4_config c = tiny_cfg();
    dsv4_synth_fill f = fill_of(&c, "layers.1.ffn.experts.3.w1.weight", DSV4_DTYPE_I8, 128, 128);
    uint8_t *b = malloc(N_BIG);
    dsv4_synth_hash_fill(&f, 0, N_BIG, b);
    long count[256] = {0}, nib[16] = {0};
    for (size_t i = 0; i < N_BIG; i++) {
        count[b[i]]++;
        nib[b[i] & 15]++;
        nib[b[i] >> 4]++;
    }
    long lo = N_BIG, hi = 0;
    for (int v = 0; v < 256; v++) {
        if (count[v] < lo) lo = count[v];
        if (count[v] > hi) hi = count[v];
    }
    CHECK(lo > 4096 * 0.8 && hi < 4096 * 1.2, "FP4 bytes not spread: %ld .. %ld per value", lo, hi);
    for (int v = 0; v < 16; v++)
        CHECK(nib[v] > 2 * N_BIG / 16 * 0.9 && nib[v] < 2 * N_BIG / 16 * 1.1, "e2m1 code %d: %ld", v, nib[v]);
    free(b);
}

static void test_scales(void) {
    dsv4_config c = tiny_cfg();
    struct { const char *name; int64_t d0, d1; int span; } cases[] = {
        {"layers.1.ffn.experts.0.w1.scale", 128, 256 / 32, 2},    /* FP4 expert [out, in/32] */
        {"layers.1.ffn.experts.0.w2.scale", 256, 128 / 32, 2},    /* residual output: 20x smaller */
        {"layers.0.attn.wq_a.scale", 1, 2, 3},                    /* FP8 [out/128, in/128] */
        {"layers.0.attn.wo_b.scale", 2, 2, 3},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        dsv4_synth_fill f = fill_of(&c, cases[k].name, DSV4_DTYPE_F8_E8M0, cases[k].d0, cases[k].d1);
        CHECK(f.kind == DSV4_SYNTH_E8M0_RANGE && f.span == cases[k].span, "%s: kind %d span %d", cases[k].name, f.kind,
              f.span);
        CHECK(f.lo > 100 && f.lo + f.span <= 127, "%s: scale codes [%d, %d) not in the small-weight range",
              cases[k].name, f.lo, f.lo + f.span);
        uint8_t *b = malloc(65536);
        dsv4_synth_hash_fill(&f, 0, 65536, b);
        int seen[256] = {0};
        for (int i = 0; i < 65536; i++) seen[b[i]] = 1;
        for (int v = 0; v < 256; v++)
            CHECK(seen[v] == (v >= f.lo && v < f.lo + f.span), "%s: code %d seen %d (range [%d, %d))", cases[k].name,
                  v, seen[v], f.lo, f.lo + f.span);
        free(b);
    }
    dsv4_synth_fill w1 = fill_of(&c, "layers.1.ffn.experts.0.w1.scale", DSV4_DTYPE_F8_E8M0, 128, 8);
    dsv4_synth_fill w2 = fill_of(&c, "layers.1.ffn.experts.0.w2.scale", DSV4_DTYPE_F8_E8M0, 256, 4);
    CHECK(w2.lo < w1.lo - 2, "w2 scales (%d) should be ~20x (4 binades) below w1's (%d)", w2.lo, w1.lo);
}

static void test_bf16_f32(void) {
    dsv4_config c = tiny_cfg();
    dsv4_synth_fill n = fill_of(&c, "layers.0.attn_norm.weight", DSV4_DTYPE_BF16, 256, 0);
    uint16_t h[512];
    dsv4_synth_hash_fill(&n, 0, 512, h);
    int ones = 1;
    for (int i = 0; i < 512; i++) ones &= h[i] == dsv4_f32_to_bf16(1.0f);
    CHECK(ones, "norm weights are not all 1");

    dsv4_synth_fill g = fill_of(&c, "layers.0.ffn.gate.weight", DSV4_DTYPE_BF16, 8, 256);
    CHECK(g.kind == DSV4_SYNTH_BF16_UNIFORM && fabsf(g.a - sqrtf(3.0f) / 16.0f) < 1e-6f, "gate a %g", g.a);
    uint16_t *b = malloc(2 * N_BIG);
    dsv4_synth_hash_fill(&g, 99, N_BIG, b);
    double s = 0, s2 = 0, amax = 0;
    int finite = 1;
    for (size_t i = 0; i < N_BIG; i++) {
        float v = dsv4_bf16_to_f32(b[i]);
        finite &= isfinite(v) != 0;
        s += v;
        s2 += (double)v * v;
        if (fabs(v) > amax) amax = fabs(v);
    }
    double mean = s / N_BIG, sd = sqrt(s2 / N_BIG - mean * mean);
    CHECK(finite, "non-finite BF16 value");
    CHECK(amax <= g.a * (1 + 1.0 / 256), "BF16 |v| %g > a %g (plus the BF16 rounding)", amax, g.a);
    CHECK(fabs(mean) < 0.01 * g.a && fabs(sd - 1.0 / 16.0) < 0.01 / 16.0, "BF16 mean %g sd %g (want 0, %g)", mean, sd,
          1.0 / 16.0);
    free(b);

    dsv4_synth_fill e = fill_of(&c, "embed.weight", DSV4_DTYPE_BF16, 1024, 256);
    CHECK(fabsf(e.a - sqrtf(3.0f)) < 1e-6f, "embed a %g (std 1)", e.a);

    const char *f32s[] = {"layers.0.hc_attn_fn", "layers.0.hc_attn_base", "layers.0.hc_attn_scale",
                          "layers.0.attn.attn_sink", "layers.1.attn.compressor.ape", "layers.1.ffn.gate.bias"};
    const double want_mean[] = {0, 0, 1, 0, 0, 0}, want_std[] = {0.01, 0.1, 0.05, 0.1, 0.01, 0.01};
    for (int k = 0; k < 6; k++) {
        dsv4_synth_fill f = fill_of(&c, f32s[k], DSV4_DTYPE_F32, 1024, 0);
        float v[4096];
        dsv4_synth_hash_fill(&f, 5, 4096, v);
        double m = 0, q = 0;
        int in = 1;
        for (int i = 0; i < 4096; i++) {
            in &= isfinite(v[i]) && fabs(v[i] - want_mean[k]) <= want_std[k] * sqrt(3.0) * (1 + 1e-6);
            m += v[i];
            q += (v[i] - want_mean[k]) * (v[i] - want_mean[k]);
        }
        m /= 4096;
        q = sqrt(q / 4096);
        CHECK(in, "%s: a value outside mean ± sqrt(3)·std", f32s[k]);
        CHECK(fabs(m - want_mean[k]) < 0.1 * want_std[k] && fabs(q - want_std[k]) < 0.05 * want_std[k],
              "%s: mean %g std %g (want %g, %g)", f32s[k], m, q, want_mean[k], want_std[k]);
    }
}

static void test_tid2eid(void) {
    dsv4_config c = tiny_cfg();
    const int Es[] = {8, 12, 256};
    for (int t = 0; t < 3; t++) {
        c.n_routed_experts = Es[t];
        const int E = Es[t], k = t == 2 ? 6 : 2, rows = 40000;
        dsv4_synth_fill f = fill_of(&c, "layers.0.ffn.gate.tid2eid", DSV4_DTYPE_I64, rows, k);
        int64_t *v = malloc(sizeof(int64_t) * (size_t)rows * k);
        dsv4_synth_hash_fill(&f, 0, (uint64_t)rows * k, v);
        long *count = calloc((size_t)E, sizeof *count);
        int ok_range = 1, ok_distinct = 1;
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < k; j++) {
                int64_t e = v[(size_t)r * k + j];
                if (e < 0 || e >= E) { ok_range = 0; continue; }
                count[e]++;
                for (int i = 0; i < j; i++) ok_distinct &= v[(size_t)r * k + i] != e;
            }
        CHECK(ok_range, "E %d: expert id out of range", E);
        CHECK(ok_distinct, "E %d: a row repeats an expert", E);
        double want = (double)rows * k / E;
        long lo = count[0], hi = count[0];
        for (int e = 1; e < E; e++) {
            if (count[e] < lo) lo = count[e];
            if (count[e] > hi) hi = count[e];
        }
        CHECK(lo > want * 0.8 && hi < want * 1.2, "E %d: expert counts %ld .. %ld (want ~%.0f)", E, lo, hi, want);
        free(count);
        free(v);
    }
}

/* Filling [0, n) in chunks of any sizes gives the bytes of one fill (the kernel's grid-stride loop is the
 * same function of the element index). */
static void test_chunk_independence(void) {
    dsv4_config c = tiny_cfg();
    struct { const char *name; dsv4_dtype dt; int64_t d0, d1; } t[] = {
        {"layers.0.attn.wq_a.weight", DSV4_DTYPE_F8_E4M3, 128, 256},
        {"layers.1.ffn.experts.2.w3.weight", DSV4_DTYPE_I8, 128, 128},
        {"layers.1.ffn.experts.2.w3.scale", DSV4_DTYPE_F8_E8M0, 128, 8},
        {"layers.0.attn.wq_b.weight.bf16", DSV4_DTYPE_BF16, 2048, 128},
        {"layers.0.hc_ffn_fn", DSV4_DTYPE_F32, 24, 1024},
        {"layers.0.ffn.gate.tid2eid", DSV4_DTYPE_I64, 1024, 2},
    };
    test_rng r;
    test_rng_seed(&r, 42);
    const uint64_t n = 10007;
    for (size_t k = 0; k < sizeof t / sizeof t[0]; k++) {
        dsv4_synth_fill f = fill_of(&c, t[k].name, t[k].dt, t[k].d0, t[k].d1);
        size_t z = (size_t)f.elem_bytes;
        uint8_t *one = malloc(n * z), *chunked = malloc(n * z);
        dsv4_synth_hash_fill(&f, 1000, n, one);
        const uint64_t sizes[] = {1, 7, 256, 4096, 0};
        for (int s = 0; s < 5; s++) {
            memset(chunked, 0xa5, n * z);
            for (uint64_t at = 0; at < n;) {
                uint64_t m = sizes[s] ? sizes[s] : 1 + test_rng_u64(&r) % 999;
                if (m > n - at) m = n - at;
                dsv4_synth_hash_fill(&f, 1000 + at, m, chunked + at * z);
                at += m;
            }
            CHECK(!memcmp(one, chunked, n * z), "%s: chunks of %llu differ from one fill", t[k].name,
                  (unsigned long long)sizes[s]);
        }
        /* in reverse order too */
        memset(chunked, 0xa5, n * z);
        for (uint64_t at = n; at > 0; at--) dsv4_synth_hash_fill(&f, 1000 + at - 1, 1, chunked + (at - 1) * z);
        CHECK(!memcmp(one, chunked, n * z), "%s: element by element backwards differs", t[k].name);
        free(one);
        free(chunked);
    }
}

static void test_seed_and_name(void) {
    dsv4_config c = tiny_cfg();
    int64_t sh[2] = {128, 256};
    dsv4_synth_fill a, b, d;
    dsv4_err err = {{0}};
    dsv4_synth_fill_for_tensor(&c, 1, "layers.0.attn.wq_a.weight", DSV4_DTYPE_F8_E4M3, 2, sh, &a, &err);
    dsv4_synth_fill_for_tensor(&c, 2, "layers.0.attn.wq_a.weight", DSV4_DTYPE_F8_E4M3, 2, sh, &b, &err);
    dsv4_synth_fill_for_tensor(&c, 1, "layers.1.attn.wq_a.weight", DSV4_DTYPE_F8_E4M3, 2, sh, &d, &err);
    uint8_t x[256], y[256], z[256];
    dsv4_synth_hash_fill(&a, 0, 256, x);
    dsv4_synth_hash_fill(&b, 0, 256, y);
    dsv4_synth_hash_fill(&d, 0, 256, z);
    int same_xy = 0, same_xz = 0;
    for (int i = 0; i < 256; i++) {
        same_xy += x[i] == y[i];
        same_xz += x[i] == z[i];
    }
    CHECK(same_xy < 16 && same_xz < 16, "seed / name do not change the values: %d, %d equal bytes of 256", same_xy,
          same_xz);
    CHECK(dsv4_synth_fill_for_tensor(&c, 1, "x", DSV4_DTYPE_I64, 1, sh, &a, &err) != DSV4_OK, "I64 1-d accepted");
}

typedef struct ckpt_walk {
    const dsv4_checkpoint *ck;
    int n_scales, n_f32, n_norm;
} ckpt_walk;

/* The checkpoint writer's values are inside the generator's ranges for the same tensor. */
static dsv4_status check_written(void *ctx, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape,
                                 int is_mtp, int is_routed) {
    ckpt_walk *w = ctx;
    const dsv4_st_tensor *t = dsv4_checkpoint_tensor_find(w->ck, name);
    if (!t) {
        CHECK(0, "%s missing from the written checkpoint", name);
        return DSV4_OK;
    }
    dsv4_synth_fill f;
    dsv4_err err = {{0}};
    if (dsv4_synth_fill_for_tensor(&w->ck->cfg, 0, name, dt, ndim, shape, &f, &err) != DSV4_OK) {
        CHECK(0, "%s: %s", name, err.msg);
        return DSV4_OK;
    }
    if (dt == DSV4_DTYPE_F8_E8M0) {
        w->n_scales++;
        for (uint64_t i = 0; i < t->nbytes; i++)
            if (t->data[i] < f.lo || t->data[i] >= f.lo + f.span) {
                CHECK(0, "%s: the writer's scale %d at %llu is outside the generator's [%d, %d)", name, t->data[i],
                      (unsigned long long)i, f.lo, f.lo + f.span);
                break;
            }
    } else if (dt == DSV4_DTYPE_F32) {
        w->n_f32++;
        for (uint64_t i = 0; i < t->nbytes / 4; i++) {
            float v;
            memcpy(&v, t->data + 4 * i, 4);
            if (fabsf(v - f.mean) > f.a * (1 + 1e-6f)) {
                CHECK(0, "%s: the writer's %g outside the generator's %g ± %g", name, v, f.mean, f.a);
                break;
            }
        }
    } else if (dt == DSV4_DTYPE_BF16 && f.kind == DSV4_SYNTH_BF16_ONE) {
        w->n_norm++;
        uint16_t v;
        memcpy(&v, t->data, 2);
        CHECK(v == 0x3f80, "%s: the writer's norm is not 1", name);
    }
    (void)is_mtp;
    (void)is_routed;
    return DSV4_OK;
}

static void test_same_ranges_as_writer(void) {
    dsv4_config c = tiny_cfg();
    char dir[] = "/tmp/dsv4_synth_hash_XXXXXX";
    if (!mkdtemp(dir)) {
        CHECK(0, "mkdtemp");
        return;
    }
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_synth_write(&c, dir, 0, NULL, &err);
    CHECK(st == DSV4_OK, "synth write: %s", err.msg);
    dsv4_checkpoint ck;
    if (st == DSV4_OK && (st = dsv4_checkpoint_open(dir, &ck, &err)) == DSV4_OK) {
        ckpt_walk w = {&ck, 0, 0, 0};
        dsv4_checkpoint_expected_visit(&ck.cfg, check_written, &w);
        CHECK(w.n_scales > 50 && w.n_f32 > 20 && w.n_norm > 10, "walked %d scales, %d F32, %d norms", w.n_scales,
              w.n_f32, w.n_norm);
        dsv4_checkpoint_close(&ck);
    } else {
        CHECK(0, "open: %s", err.msg);
    }
    char p[256];
    const char *files[] = {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
                           "model-00002-of-00002.safetensors", "model-00001-of-00001.safetensors"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        unlink(p);
    }
    CHECK(rmdir(dir) == 0, "left files in %s", dir);
}

int main(void) {
    RUN(test_e4m3_codes);
    RUN(test_fp4_bytes);
    RUN(test_scales);
    RUN(test_bf16_f32);
    RUN(test_tid2eid);
    RUN(test_chunk_independence);
    RUN(test_seed_and_name);
    RUN(test_same_ranges_as_writer);
    return test_finish();
}

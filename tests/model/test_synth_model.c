/* test_synth_model.c — random-weight models built in memory (model/synth_ckpt.h, engine/model.h
 * dsv4_model_create_synth), on the CPU:
 *   - a host-generated tiny model runs the CPU forward (public engine, synthetic option) to finite logits,
 *     prefill and decode; the same seed gives the same logits, another seed different ones;
 *   - every tensor of a host-generated model holds exactly dsv4_synth_hash_fill's bytes, and a tensor's
 *     bytes depend on its name and the seed only (a model with more experts shares them);
 *   - a device-only model has the same table (minus MTP), distinct inaccessible addresses, and
 *     dsv4_model_synth_locate turns a view or a row slice of one back into (tensor, first element); ranges
 *     across two tensors are refused;
 *   - the cpu backend refuses a device-only model with a clear error (engine and forward);
 *   - with CUDA compiled in (no device needed): the device-memory plan grows with the experts and
 *     dsv4_bench_synth_fit_experts finds the largest count under a budget. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"
#include "dsv4_bench.h"
#include "engine/forward.h"
#include "engine/forward_cuda.h"
#include "engine/model.h"
#include "dsv4_synth.h"
#include "model/synth_hash.h"
#include "test_util.h"

static dsv4_config small_tiny(int experts) {
    dsv4_config c;
    dsv4_err err = {{0}};
    CHECK(dsv4_synth_config_preset("tiny", 0, experts, &c, &err) == DSV4_OK, "preset: %s", err.msg);
    c.vocab_size = 2048;
    return c;
}

/* ---- CPU forward on a host-generated model --------------------------------------------------------- */

static int run_engine(uint64_t seed, float *logits, int n_pos) {
    dsv4_engine_options o = {0};
    o.synthetic.preset = "tiny";
    o.synthetic.seed = seed;
    o.backend = "cpu";
    o.n_threads = 2;
    o.max_seqs = 1;
    o.max_tokens = 256;
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    if (dsv4_engine_create(&o, &e, &err) != DSV4_OK) {
        CHECK(0, "engine: %s", err.msg);
        return 0;
    }
    const int V = dsv4_engine_vocab_size(e);
    int seq;
    CHECK(dsv4_engine_seq_open(e, &seq, &err) == DSV4_OK, "open: %s", err.msg);
    int32_t prompt[12];
    for (int i = 0; i < 12; i++) prompt[i] = (int32_t)(1 + (i * 7919) % (V - 1));
    dsv4_batch_item it = {seq, prompt, 12, 1};
    int ok = dsv4_engine_step(e, &it, 1, logits, &err) == DSV4_OK;
    CHECK(ok, "prefill: %s", err.msg);
    for (int p = 1; ok && p < n_pos; p++) {   /* decode: feed the argmax */
        int32_t t = 0;
        for (int v = 1; v < V; v++)
            if (logits[(size_t)(p - 1) * V + v] > logits[(size_t)(p - 1) * V + t]) t = v;
        dsv4_batch_item d = {seq, &t, 1, 1};
        ok = dsv4_engine_step(e, &d, 1, logits + (size_t)p * V, &err) == DSV4_OK;
        CHECK(ok, "decode %d: %s", p, err.msg);
    }
    dsv4_engine_destroy(e);
    return ok ? V : 0;
}

static void test_cpu_forward_finite(void) {
    const int n_pos = 4, V = 129280;
    float *a = malloc(sizeof(float) * (size_t)V * n_pos), *b = malloc(sizeof(float) * (size_t)V * n_pos);
    int va = run_engine(5, a, n_pos);
    CHECK(va == V, "vocab %d", va);
    if (va == V) {
        int finite = 1;
        double ss = 0;
        for (size_t i = 0; i < (size_t)V * n_pos; i++) {
            finite &= isfinite(a[i]) != 0;
            ss += (double)a[i] * a[i];
        }
        double rms = sqrt(ss / ((double)V * n_pos));
        CHECK(finite, "non-finite logits");
        CHECK(rms > 1e-3 && rms < 1e3, "logits rms %g (a well-scaled forward)", rms);
        printf("  tiny synthetic (seed 5), CPU forward: logits rms %.3g over %d positions\n", rms, n_pos);
        CHECK(run_engine(5, b, n_pos) == V && !memcmp(a, b, sizeof(float) * (size_t)V * n_pos),
              "same seed, different logits");
        CHECK(run_engine(6, b, 1) == V && memcmp(a, b, sizeof(float) * (size_t)V), "another seed, same logits");
    }
    free(a);
    free(b);
}

/* ---- tensor tables ---------------------------------------------------------------------------------- */

static void test_host_bytes_are_the_generator(void) {
    dsv4_config c8 = small_tiny(8), c16 = small_tiny(16);
    dsv4_model *m8 = NULL, *m16 = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_model_create_synth(&c8, 11, 0, &m8, &err) == DSV4_OK, "host model: %s", err.msg);
    CHECK(dsv4_model_create_synth(&c16, 11, 0, &m16, &err) == DSV4_OK, "host model 16: %s", err.msg);
    if (!m8 || !m16) goto out;
    const dsv4_st_file *sf = &m8->ckpt.files[0];
    CHECK(m8->w.mtp != NULL && !m8->weights_on_device_only, "host model: MTP block kept, host bytes");
    size_t bad = 0, shared = 0, comparable = 0;
    for (size_t i = 0; i < sf->n_tensors; i++) {
        const dsv4_st_tensor *t = &sf->tensors[i];
        dsv4_synth_fill f;
        CHECK(dsv4_synth_fill_for_tensor(&m8->ckpt.cfg, 11, t->name, t->dtype, t->ndim, t->shape, &f, &err) == DSV4_OK,
              "%s: %s", t->name, err.msg);
        uint8_t *want = malloc(t->nbytes);
        dsv4_synth_hash_fill(&f, 0, t->nbytes / (uint64_t)f.elem_bytes, want);
        bad += memcmp(want, t->data, t->nbytes) != 0;
        free(want);
        /* the 16-expert model holds the same bytes under the same name (gate, bias, tid2eid have E rows/values) */
        const dsv4_st_tensor *u = dsv4_checkpoint_tensor_find(&m16->ckpt, t->name);
        if (u && u->nbytes == t->nbytes && !strstr(t->name, "tid2eid")) {
            comparable++;
            shared += !memcmp(u->data, t->data, t->nbytes);
        }
        else if (!u) CHECK(0, "%s missing from the 16-expert model", t->name);
    }
    CHECK(bad == 0, "%zu tensors differ from dsv4_synth_hash_fill", bad);
    CHECK(shared == comparable && comparable + 10 == sf->n_tensors,
          "%zu of %zu same-shape tensors equal across expert counts (of %zu; 5 blocks x gate weight and bias/tid2eid "
          "differ)", shared, comparable, sf->n_tensors);
out:
    dsv4_model_free(m8);
    dsv4_model_free(m16);
}

static void test_device_only_table(void) {
    dsv4_config c = small_tiny(8);
    dsv4_model *h = NULL, *d = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_model_create_synth(&c, 3, 0, &h, &err) == DSV4_OK, "host: %s", err.msg);
    CHECK(dsv4_model_create_synth(&c, 3, 1, &d, &err) == DSV4_OK, "device only: %s", err.msg);
    if (!h || !d) goto out;
    CHECK(d->weights_on_device_only && d->w.mtp == NULL && d->cfg->n_mtp_layers == 0, "device only: flag %d, mtp %p",
          d->weights_on_device_only, (void *)d->w.mtp);
    CHECK(d->wo_a_bf16 && d->wo_a_bf16[0] == NULL, "device only: no host wo_a copy");
    /* same main-model table */
    const dsv4_st_file *hf = &h->ckpt.files[0], *df = &d->ckpt.files[0];
    size_t n_main = 0;
    for (size_t i = 0; i < hf->n_tensors; i++) n_main += strncmp(hf->tensors[i].name, "mtp.", 4) != 0;
    CHECK(df->n_tensors == n_main, "device only: %zu tensors, host main model %zu", df->n_tensors, n_main);
    /* every view locates to its tensor, element 0; a row slice to row0 * in */
    const dsv4_layer_weights *lw = &d->w.layers[1];
    struct { const void *p; size_t bytes; const char *name; uint64_t first; } v[] = {
        {d->w.embed, 2 * (size_t)c.dim, "embed.weight", 0},
        {d->w.embed + (size_t)5 * c.dim, 2 * (size_t)c.dim, "embed.weight", 5 * (uint64_t)c.dim},
        {lw->wq_b.w + (size_t)512 * lw->wq_b.in, (size_t)512 * lw->wq_b.in, "layers.1.attn.wq_b.weight",
         512 * (uint64_t)lw->wq_b.in},
        {lw->experts_w2[7].scale, (size_t)lw->experts_w2[7].out * lw->experts_w2[7].in / 32,
         "layers.1.ffn.experts.7.w2.scale", 0},
        {lw->hc_ffn.base, 4 * 24, "layers.1.hc_ffn_base", 0},
        {d->w.layers[0].tid2eid + 2, 16, "layers.0.ffn.gate.tid2eid", 2},
    };
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        dsv4_synth_fill f, want;
        uint64_t first = ~0ull;
        dsv4_status st = dsv4_model_synth_locate(d, v[k].p, v[k].bytes, &f, &first, &err);
        CHECK(st == DSV4_OK, "locate %s: %s", v[k].name, err.msg);
        const dsv4_st_tensor *t = dsv4_checkpoint_tensor_find(&d->ckpt, v[k].name);
        CHECK(t != NULL, "%s", v[k].name);
        if (st != DSV4_OK || !t) continue;
        dsv4_synth_fill_for_tensor(d->cfg, 3, t->name, t->dtype, t->ndim, t->shape, &want, &err);
        CHECK(first == v[k].first && !memcmp(&f, &want, sizeof f), "%s: first %llu (want %llu)", v[k].name,
              (unsigned long long)first, (unsigned long long)v[k].first);
        /* and the host model holds, at the same place, what the fill generates from there */
        uint8_t got[8192];
        size_t nb = v[k].bytes < sizeof got ? v[k].bytes : sizeof got;
        dsv4_synth_hash_fill(&want, v[k].first, nb / (size_t)want.elem_bytes, got);
        const uint8_t *hp = dsv4_checkpoint_tensor_find(&h->ckpt, v[k].name)->data + v[k].first * (uint64_t)want.elem_bytes;
        CHECK(!memcmp(got, hp, nb), "%s: host bytes at element %llu differ", v[k].name,
              (unsigned long long)v[k].first);
    }
    /* a range running past its tensor, and one not on an element boundary */
    dsv4_synth_fill f;
    uint64_t first;
    const dsv4_st_tensor *emb = dsv4_checkpoint_tensor_find(&d->ckpt, "embed.weight");
    CHECK(dsv4_model_synth_locate(d, emb->data, emb->nbytes + 2, &f, &first, &err) == DSV4_ERR_INTERNAL,
          "a range past the tensor accepted");
    CHECK(dsv4_model_synth_locate(d, emb->data + 1, 2, &f, &first, &err) == DSV4_ERR_INTERNAL,
          "a range off the element boundary accepted");
out:
    dsv4_model_free(h);
    dsv4_model_free(d);
}

/* A device-only model that keeps its MTP block (the spec bench on the GPU): the whole host table, the MTP
 * views locate to their tensors, and the CUDA plan counts one more block than without it. */
static void test_device_only_with_mtp(void) {
    dsv4_config c = small_tiny(8);
    dsv4_model *h = NULL, *d = NULL, *d0 = NULL;
    dsv4_err err = {{0}};
    CHECK(dsv4_model_create_synth(&c, 5, 0, &h, &err) == DSV4_OK, "host: %s", err.msg);
    CHECK(dsv4_model_create_synth_device_mtp(&c, 5, &d, &err) == DSV4_OK, "device only + mtp: %s", err.msg);
    CHECK(dsv4_model_create_synth(&c, 5, 1, &d0, &err) == DSV4_OK, "device only: %s", err.msg);
    if (!h || !d || !d0) goto out;
    CHECK(d->weights_on_device_only && d->w.mtp != NULL && d->cfg->n_mtp_layers == h->cfg->n_mtp_layers,
          "device only + mtp: flag %d, mtp %p", d->weights_on_device_only, (void *)d->w.mtp);
    CHECK(d->ckpt.files[0].n_tensors == h->ckpt.files[0].n_tensors, "device only + mtp: %zu tensors, host %zu",
          d->ckpt.files[0].n_tensors, h->ckpt.files[0].n_tensors);
    const dsv4_fp8_linear *ep = &d->w.mtp->e_proj;
    dsv4_synth_fill f, want;
    uint64_t first = ~0ull;
    dsv4_status st = dsv4_model_synth_locate(d, ep->w, (size_t)ep->out * ep->in, &f, &first, &err);
    CHECK(st == DSV4_OK, "locate mtp e_proj: %s", err.msg);
    const dsv4_st_tensor *t = dsv4_checkpoint_tensor_find(&d->ckpt, "mtp.0.e_proj.weight");
    CHECK(t != NULL, "mtp.0.e_proj.weight in the table");
    if (st == DSV4_OK && t) {
        dsv4_synth_fill_for_tensor(d->cfg, 5, t->name, t->dtype, t->ndim, t->shape, &want, &err);
        CHECK(first == 0 && !memcmp(&f, &want, sizeof f), "mtp e_proj: first %llu", (unsigned long long)first);
    }
#ifdef DSV4_HAVE_CUDA
    dsv4_forward_cuda_options o = {0};
    o.max_seqs = 2;
    o.max_tokens = 256;
    size_t w1 = 0, r1 = 0, w0 = 0, r0 = 0;
    CHECK(dsv4_forward_cuda_plan_bytes(d, &o, &w1, &r1, &err) == DSV4_OK, "plan + mtp: %s", err.msg);
    CHECK(dsv4_forward_cuda_plan_bytes(d0, &o, &w0, &r0, &err) == DSV4_OK, "plan: %s", err.msg);
    CHECK(w1 > w0, "the plan counts the MTP block's weights: %zu vs %zu bytes", w1, w0);
#endif
out:
    dsv4_model_free(h);
    dsv4_model_free(d);
    dsv4_model_free(d0);
}

static void test_cpu_refuses_device_only(void) {
    dsv4_engine_options o = {0};
    o.synthetic.preset = "tiny";
    o.synthetic.on_device = 1;
    o.backend = "cpu";
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_engine_create(&o, &e, &err);
    CHECK(st == DSV4_ERR_UNSUPPORTED && strstr(err.msg, "cuda backend"), "engine: %s: %s", dsv4_status_name(st),
          err.msg);
    if (e) dsv4_engine_destroy(e);
    o.synthetic.on_device = 0;
    o.model_dir = "tests/data/tiny-flash";
    st = dsv4_engine_create(&o, &e, &err);
    CHECK(st == DSV4_ERR_INVALID_ARG && strstr(err.msg, "not both"), "dir and synthetic: %s", err.msg);

    dsv4_config c = small_tiny(8);
    dsv4_model *d = NULL;
    CHECK(dsv4_model_create_synth(&c, 1, 1, &d, &err) == DSV4_OK, "%s", err.msg);
    dsv4_forward *f = (dsv4_forward *)&c;
    st = d ? dsv4_forward_create(d, NULL, &f, &err) : DSV4_ERR_INTERNAL;
    CHECK(st == DSV4_ERR_UNSUPPORTED && f == NULL && strstr(err.msg, "only on the GPU"), "cpu forward: %s",
          err.msg);
    dsv4_model_free(d);
}

static void test_device_plan_and_fit(void) {
    dsv4_err err = {{0}};
    double b8 = 0, b16 = 0, b20 = 0;
    dsv4_status st = dsv4_bench_synth_device_bytes("tiny", 4, 8, 2, 1024, &b8, &err);
#ifndef DSV4_HAVE_CUDA
    CHECK(st == DSV4_ERR_UNSUPPORTED, "without CUDA: %s", dsv4_status_name(st));
    return;
#endif
    CHECK(st == DSV4_OK, "plan: %s", err.msg);
    dsv4_bench_synth_device_bytes("tiny", 4, 16, 2, 1024, &b16, &err);
    dsv4_bench_synth_device_bytes("tiny", 4, 20, 2, 1024, &b20, &err);
    dsv4_config c = small_tiny(8);
    c.vocab_size = 129280;
    double disk = dsv4_bench_synth_disk_bytes(&c);
    /* the device holds every main-model tensor (not the MTP block) plus wo_a in BF16, workspace and KV */
    CHECK(b8 > 0.8 * disk && b16 > b8 && b20 > b16, "plan bytes %g, %g, %g (checkpoint %g)", b8, b16, b20, disk);
    /* 4 layers x 8 experts x (w1, w2, w3 FP4 + scales) */
    double per_expert = 3.0 * (128 * 256 / 2 + 128 * 256 / 32);
    CHECK(fabs((b16 - b8) - 4 * 8 * per_expert) < 4 * 8 * 3 * 512.0, "8 more experts cost %g bytes, want ~%g",
          b16 - b8, 4 * 8 * per_expert);
    int E = 0;
    CHECK(dsv4_bench_synth_fit_experts("tiny", 4, 2, 1024, b20, 256, &E, &err) == DSV4_OK && E == 20,
          "fit under bytes(20): %d (%s)", E, err.msg);
    CHECK(dsv4_bench_synth_fit_experts("tiny", 4, 2, 1024, b20 - 1, 256, &E, &err) == DSV4_OK && E == 19,
          "fit under bytes(20) - 1: %d", E);
    CHECK(dsv4_bench_synth_fit_experts("tiny", 4, 2, 1024, 1e12, 40, &E, &err) == DSV4_OK && E == 40,
          "fit capped at 40: %d", E);
    CHECK(dsv4_bench_synth_fit_experts("tiny", 4, 2, 1024, 1e6, 256, &E, &err) == DSV4_ERR_CAPACITY,
          "1 MB budget accepted (%d)", E);
}

int main(void) {
    RUN(test_cpu_forward_finite);
    RUN(test_host_bytes_are_the_generator);
    RUN(test_device_only_table);
    RUN(test_device_only_with_mtp);
    RUN(test_cpu_refuses_device_only);
    RUN(test_device_plan_and_fit);
    return test_finish();
}

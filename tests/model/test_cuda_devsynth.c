/* test_cuda_devsynth.c — weights generated directly in GPU memory (backend/cuda/cuda_synth.h, model/synth_ckpt.h)
 * against the same weights generated on the host:
 *   - every tensor of a tiny model filled by the kernel (whole, and in two pieces from an offset) reads back
 *     equal to the host generator's bytes;
 *   - the CUDA forward of the device-only tiny model (nothing uploaded) equals the CUDA forward of the
 *     host-generated tiny model bit for bit: prefill logits, and the greedy tokens of the device decode loop;
 *   - the device memory a forward takes stays within dsv4_forward_cuda_plan_bytes (the basis of
 *     `dsv4 bench`'s expert count);
 *   - a device-only flash-shapes model (2 layers, 16 experts) runs a prefill to finite logits.
 * Without a CUDA build or a device every case is reported as skipped (CI has no GPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"
#include "engine/forward_cuda.h"
#include "engine/kv_access.h"
#include "engine/model.h"
#include "dsv4_synth.h"
#include "model/synth_hash.h"
#include "test_util.h"

#ifndef DSV4_HAVE_CUDA
int main(void) {
    test_skip("test_cuda_devsynth", "no CUDA device (built without CUDA)");
    return test_finish();
}
#else
#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/cuda_synth.h"

static dsv4_cuda_ctx *ctx;

static dsv4_config small_tiny(void) {
    dsv4_config c;
    dsv4_err err = {{0}};
    CHECK(dsv4_synth_config_preset("tiny", 0, 0, &c, &err) == DSV4_OK, "preset: %s", err.msg);
    c.vocab_size = 4096;
    return c;
}

/* ---- the kernel vs the host fill, every tensor --------------------------------------------------------- */

static void test_fill_equals_host(void) {
    dsv4_config c = small_tiny();
    dsv4_model *h = NULL;
    dsv4_err err = {{0}};
    if (dsv4_model_create_synth(&c, 21, 0, &h, &err) != DSV4_OK) {
        CHECK(0, "host model: %s", err.msg);
        return;
    }
    const dsv4_st_file *sf = &h->ckpt.files[0];
    size_t maxb = 0;
    for (size_t i = 0; i < sf->n_tensors; i++)
        if (sf->tensors[i].nbytes > maxb) maxb = sf->tensors[i].nbytes;
    void *d = NULL;
    uint8_t *back = malloc(maxb);
    CHECK(dsv4_cuda_alloc(ctx, maxb, &d, &err) == DSV4_OK, "alloc: %s", err.msg);
    size_t bad = 0, bad_split = 0;
    for (size_t i = 0; d && i < sf->n_tensors; i++) {
        const dsv4_st_tensor *t = &sf->tensors[i];
        dsv4_synth_fill f;
        dsv4_synth_fill_for_tensor(&h->ckpt.cfg, 21, t->name, t->dtype, t->ndim, t->shape, &f, &err);
        const uint64_t n = t->nbytes / (uint64_t)f.elem_bytes;
        if (dsv4_cuda_synth_fill(ctx, &f, 0, n, d, &err) != DSV4_OK ||
            dsv4_cuda_download(ctx, back, d, t->nbytes, &err) != DSV4_OK) {
            CHECK(0, "%s: %s", t->name, err.msg);
            break;
        }
        if (memcmp(back, t->data, t->nbytes)) {
            if (!bad++) CHECK(0, "%s: device bytes differ from the host generator's", t->name);
        }
        /* two pieces, the second from element n/3 (another grid, another start) */
        const uint64_t m = n / 3;
        dsv4_cuda_memset(ctx, d, 0x5a, t->nbytes, &err);
        if (dsv4_cuda_synth_fill(ctx, &f, m, n - m, (uint8_t *)d + m * (uint64_t)f.elem_bytes, &err) != DSV4_OK ||
            dsv4_cuda_synth_fill(ctx, &f, 0, m, d, &err) != DSV4_OK ||
            dsv4_cuda_download(ctx, back, d, t->nbytes, &err) != DSV4_OK) {
            CHECK(0, "%s: %s", t->name, err.msg);
            break;
        }
        if (memcmp(back, t->data, t->nbytes)) {
            if (!bad_split++) CHECK(0, "%s: two-piece device fill differs", t->name);
        }
    }
    CHECK(bad == 0 && bad_split == 0, "%zu / %zu of %zu tensors differ", bad, bad_split, sf->n_tensors);
    printf("  %zu tensors generated on the device, equal to the host generator\n", sf->n_tensors);
    dsv4_cuda_free(ctx, d);
    free(back);
    dsv4_model_free(h);
}

/* ---- forward: device-only vs host-generated --------------------------------------------------------- */

typedef struct gpu { dsv4_model *m; dsv4_forward_cuda *f; } gpu;

static int gpu_open(gpu *g, const dsv4_config *c, int device_only) {
    memset(g, 0, sizeof *g);
    dsv4_err err = {{0}};
    if (dsv4_model_create_synth(c, 77, device_only, &g->m, &err) != DSV4_OK) {
        CHECK(0, "model (device only %d): %s", device_only, err.msg);
        return 0;
    }
    dsv4_forward_cuda_options o = {0};
    o.max_seqs = 2;
    o.max_tokens = 1024;
    if (dsv4_forward_cuda_create(g->m, &o, &g->f, &err) != DSV4_OK) {
        CHECK(0, "cuda forward (device only %d): %s", device_only, err.msg);
        dsv4_model_free(g->m);
        g->m = NULL;
        return 0;
    }
    return 1;
}

static void gpu_close(gpu *g) {
    dsv4_forward_cuda_destroy(g->f);
    dsv4_model_free(g->m);
}

/* Prefill of 40 tokens (logits of the last), then 16 greedy steps on the device. */
static int run(gpu *g, float *logits, int32_t *tokens) {
    dsv4_err err = {{0}};
    int slot = -1;
    if (dsv4_kv_access_admit(dsv4_forward_cuda_kv(g->f), &slot, &err) != DSV4_OK) {
        CHECK(0, "admit: %s", err.msg);
        return 0;
    }
    int32_t prompt[40];
    for (int i = 0; i < 40; i++) prompt[i] = (int32_t)(1 + (i * 2654435761u) % 4095);
    dsv4_seq_step s = {slot, prompt, 40, 1};
    if (dsv4_forward_cuda_step(g->f, &s, 1, logits, &err) != DSV4_OK) {
        CHECK(0, "prefill: %s", err.msg);
        return 0;
    }
    int32_t first = 17;
    if (dsv4_forward_cuda_decode_greedy(g->f, &slot, 1, &first, 16, tokens, NULL, &err) != DSV4_OK) {
        CHECK(0, "greedy: %s", err.msg);
        return 0;
    }
    return 1;
}

static void test_forward_bitwise(void) {
    dsv4_config c = small_tiny();
    gpu hg, dg;
    if (!gpu_open(&hg, &c, 0)) return;
    if (!gpu_open(&dg, &c, 1)) {
        gpu_close(&hg);
        return;
    }
    char desc[512];
    dsv4_forward_cuda_describe(dg.f, desc, sizeof desc);
    CHECK(strstr(desc, "generated on the device") != NULL, "describe: %s", desc);
    printf("  device-only: %s\n", desc);
    const int V = c.vocab_size;
    float *lh = malloc(sizeof(float) * V), *ld = malloc(sizeof(float) * V);
    int32_t th[16], td[16];
    if (run(&hg, lh, th) && run(&dg, ld, td)) {
        int finite = 1;
        for (int i = 0; i < V; i++) finite &= isfinite(lh[i]) != 0;
        CHECK(finite, "host-generated model: non-finite logits");
        CHECK(!memcmp(lh, ld, sizeof(float) * V), "prefill logits differ between the device-only and the "
                                                  "host-generated model");
        CHECK(!memcmp(th, td, sizeof th), "greedy tokens differ");
    }
    free(lh);
    free(ld);
    gpu_close(&dg);
    gpu_close(&hg);
}

/* ---- the plan the bench sizes with vs what a forward takes --------------------------------------------- */

static void test_plan_covers_create(void) {
    dsv4_err err = {{0}};
    dsv4_config c;
    CHECK(dsv4_synth_config_preset("flash-shapes", 2, 16, &c, &err) == DSV4_OK, "%s", err.msg);
    dsv4_model *m = NULL;
    if (dsv4_model_create_synth(&c, 3, 1, &m, &err) != DSV4_OK) {
        CHECK(0, "flash-shapes device only: %s", err.msg);
        return;
    }
    dsv4_forward_cuda_options o = {0};
    o.max_seqs = 4;
    o.max_tokens = 8192;
    size_t w = 0, rest = 0, fr0 = 0, fr1 = 0, tot = 0;
    CHECK(dsv4_forward_cuda_plan_bytes(m, &o, &w, &rest, &err) == DSV4_OK, "plan: %s", err.msg);
    CHECK(dsv4_cuda_mem_info(0, &fr0, &tot, &err) == DSV4_OK, "%s", err.msg);
    dsv4_forward_cuda *f = NULL;
    if (dsv4_forward_cuda_create(m, &o, &f, &err) != DSV4_OK) {
        CHECK(0, "create: %s", err.msg);
        dsv4_model_free(m);
        return;
    }
    CHECK(dsv4_cuda_mem_info(0, &fr1, &tot, &err) == DSV4_OK, "%s", err.msg);
    /* after create the wo_a scratch is freed again: the forward holds at most the plan */
    double used = (double)fr0 - (double)fr1, plan = (double)w + (double)rest;
    printf("  flash-shapes 2 layers x 16 experts on the device: plan %.3f GB (weights %.3f), taken %.3f GB\n",
           plan / 1e9, w / 1e9, used / 1e9);
    CHECK(used <= plan + 64e6 && used >= 0.8 * (plan - 96e6 * 1.05), "taken %.3f GB vs plan %.3f GB", used / 1e9,
          plan / 1e9);
    /* and it runs: one prefill of 300 tokens to finite logits */
    int slot = -1;
    const int V = c.vocab_size;
    float *lg = malloc(sizeof(float) * V);
    int32_t *tok = malloc(sizeof(int32_t) * 300);
    for (int i = 0; i < 300; i++) tok[i] = (int32_t)(1 + (i * 40503u) % (unsigned)(V - 1));
    if (dsv4_kv_access_admit(dsv4_forward_cuda_kv(f), &slot, &err) == DSV4_OK) {
        dsv4_seq_step s = {slot, tok, 300, 1};
        CHECK(dsv4_forward_cuda_step(f, &s, 1, lg, &err) == DSV4_OK, "prefill: %s", err.msg);
        int finite = 1;
        for (int i = 0; i < V; i++) finite &= isfinite(lg[i]) != 0;
        CHECK(finite, "flash-shapes device-only: non-finite logits");
    } else {
        CHECK(0, "admit: %s", err.msg);
    }
    free(lg);
    free(tok);
    dsv4_forward_cuda_destroy(f);
    dsv4_model_free(m);
}

int main(void) {
    if (dsv4_cuda_device_count() <= 0) {
        test_skip("test_cuda_devsynth", "no CUDA device");
        return test_finish();
    }
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_cuda_ctx_create(0, 0, &ctx, &err);
    if (st != DSV4_OK) {
        char why[600];
        snprintf(why, sizeof why, "no usable CUDA device (%s: %s)", dsv4_status_name(st), err.msg);
        test_skip("test_cuda_devsynth", why);
        return test_finish();
    }
    RUN(test_fill_equals_host);
    RUN(test_forward_bitwise);
    RUN(test_plan_covers_create);
    dsv4_cuda_ctx_destroy(ctx);
    return test_finish();
}
#endif

/* inspect.c — the work of `dsv4 inspect` (include/dsv4_inspect.h; the options are parsed by
 * tools/dsv4/cmd_inspect.c): validates a checkpoint (every tensor the config implies, nothing else) and prints
 * a readable summary: layer schedule, routing, parameter counts and bytes by dtype, KV-cache bytes per token
 * and per request. --config alone prints the config-derived part (counts computed from shapes). With gpus
 * it adds the tensor/expert-parallel plan (docs/MULTI_GPU.md): weight bytes resident per GPU and the KV
 * capacity left on each, or the error "needs at least K GPUs of G GB" when N GPUs cannot hold the model
 * (checked from the config before any weight file is opened). Prints to stdout, errors as one line on
 * stderr; never exits. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4_inspect.h"
#include "core/status.h"
#include "dsv4_config.h"
#include "engine/shard.h"
#include "kv/kv_schema.h"
#include "model/checkpoint.h"
#include "model/weights.h"

/* ---- multi-GPU plan --------------------------------------------------------------------------------------
 * Per GPU: the rank's weights (dsv4_shard_weight_bytes: split tensors / N, the rest replicated) plus a fixed
 * reserve for activations, workspaces, CUDA context and NCCL buffers (RESERVE_GB: an estimate, stated in the
 * output), the rest is KV. KV pools are replicated on every rank (one shared K=V head; docs/MULTI_GPU.md), so
 * every GPU holds the whole KV of every sequence: more GPUs free weight memory, they do not split the KV. */
#define RESERVE_GB 4.0
#define MIN_KV_TOKENS 4096   /* a plan must fit at least one request of this many tokens */

/* KV bytes of one request of n tokens (0 when the schema is not computable). */
static double kv_request_bytes(const dsv4_config *c, long n, double *per_token, double *fixed) {
    dsv4_kv_schema *s = calloc(1, sizeof *s);
    dsv4_err err = {{0}};
    double b = 0;
    *per_token = *fixed = 0;
    if (s && dsv4_kv_schema_init(s, c, 0, &err) == DSV4_OK) {
        *per_token = dsv4_kv_schema_bytes_per_token(s);
        *fixed = (double)dsv4_kv_schema_fixed_bytes_per_request(s);
        b = *fixed + *per_token * (double)n;
    }
    free(s);
    return b;
}

static int plan_fits(const dsv4_config *c, int n, double mem) {
    dsv4_shard sh;
    double bpt, fixed;
    return dsv4_shard_init(c, 0, n, &sh, NULL) == DSV4_OK &&
           (double)dsv4_shard_weight_bytes(c, n) + RESERVE_GB * 1e9 + kv_request_bytes(c, MIN_KV_TOKENS, &bpt, &fixed) <= mem;
}

/* Checks that gpus GPUs of gpu_gb hold the model; 0, or the one error line and 1. */
static int print_gpu_plan_check(const dsv4_config *c, int gpus, double gpu_gb) {
    const double mem = gpu_gb * 1e9;
    dsv4_shard sh;
    dsv4_err err = {{0}};
    if (dsv4_shard_init(c, 0, gpus, &sh, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 inspect: --gpus %d: %s\n", gpus, err.msg);
        return 1;
    }
    if (!plan_fits(c, gpus, mem)) {
        int k = 0;
        for (int n = gpus + 1; n <= 1024 && !k; n++)
            if (plan_fits(c, n, mem)) k = n;
        if (k)
            fprintf(stderr, "dsv4 inspect: the model needs at least %d GPUs of %g GB (%d given: %.1f GB of weights "
                    "per GPU + %.0f GB reserve + KV for %d tokens)\n", k, gpu_gb, gpus,
                    dsv4_shard_weight_bytes(c, gpus) / 1e9, RESERVE_GB, MIN_KV_TOKENS);
        else
            fprintf(stderr, "dsv4 inspect: the model does not fit on any number of GPUs of %g GB\n", gpu_gb);
        return 1;
    }
    return 0;
}

/* Prints the plan, or the one error line and returns 1. */
static int print_gpu_plan(const dsv4_config *c, int gpus, double gpu_gb) {
    if (print_gpu_plan_check(c, gpus, gpu_gb)) return 1;
    const double mem = gpu_gb * 1e9;
    dsv4_shard sh;
    dsv4_shard_init(c, 0, gpus, &sh, NULL);
    double bpt, fixed;
    kv_request_bytes(c, 0, &bpt, &fixed);
    double w = (double)dsv4_shard_weight_bytes(c, gpus), left = mem - w - RESERVE_GB * 1e9;
    printf("multi-GPU plan: %d GPU%s of %g GB (tensor parallel: %d heads, %d groups, %d index heads, %d vocab rows "
           "per GPU; expert parallel: %d routed experts per GPU)\n", gpus, gpus == 1 ? "" : "s", gpu_gb, sh.nh, sh.ng,
           sh.nih, sh.nv, sh.ne);
    printf("  weights per GPU        %10.2f GB  (all GPUs: %.2f GB; the replicated part counted on each)\n", w / 1e9,
           w * gpus / 1e9);
    printf("  reserve per GPU        %10.2f GB  (activations, workspaces, CUDA context, NCCL; estimate)\n", RESERVE_GB);
    printf("  KV capacity per GPU    %10.2f GB  = %ld tokens in one request, or %ld requests of 8192 tokens "
           "(%.0f B/token + %.2f MiB per request; KV is replicated on every GPU)\n", left / 1e9,
           (long)((left - fixed) / bpt), (long)(left / (fixed + 8192.0 * bpt)), bpt, fixed / 1048576.0);
    return 0;
}

static void print_count(const char *label, uint64_t n, const char *unit) {
    double v = (double)n;
    const char *suf = "";
    if (v >= 1e12) { v /= 1e12; suf = "T"; }
    else if (v >= 1e9) { v /= 1e9; suf = "G"; }
    else if (v >= 1e6) { v /= 1e6; suf = "M"; }
    else if (v >= 1e3) { v /= 1e3; suf = "K"; }
    printf("  %-22s %10.3f %s%s  (%" PRIu64 ")\n", label, v, suf, unit, n);
}

static void print_layer_list(const dsv4_config *c, dsv4_layer_kind kind) {
    int n = 0;
    for (int l = 0; l < c->n_layers; l++) n += dsv4_config_layer_kind(c, l) == kind;
    static const char *const names[] = {"SWA", "CSA", "HCA"};
    printf("  %-4s %3d layer%s", names[kind], n, n == 1 ? " " : "s");
    if (n) {
        printf(": ");
        int first = 1;
        for (int l = 0; l < c->n_layers; l++) {
            if (dsv4_config_layer_kind(c, l) != kind) continue;
            if (kind == DSV4_LAYER_HCA) printf("%s%d(r%d)", first ? "" : " ", l, c->compress_ratios[l]);
            else printf("%s%d", first ? "" : " ", l);
            first = 0;
        }
    }
    printf("\n");
}

/* KV accounting: the numbers of the storage the engine actually allocates (src/kv/kv_schema.c), next to
 * the official BF16 layout of spec §5.2 for comparison. */
static void print_kv(const dsv4_config *c) {
    dsv4_kv_schema *s = calloc(1, sizeof *s);
    dsv4_err err = {{0}};
    if (!s) return;
    if (dsv4_kv_schema_init(s, c, 0, &err) != DSV4_OK) {
        printf("KV cache: not computable for this config (%s)\n", err.msg);
        free(s);
        return;
    }
    double grow_bf16 = 0;
    for (int l = 0; l < c->n_layers + c->n_mtp_layers; l++) {
        int r = c->compress_ratios[l];
        if (r == 0) continue;
        grow_bf16 += 2.0 * c->head_dim / r;
        if (r == 4) grow_bf16 += 2.0 * c->index_head_dim / 4;
    }
    double grow = dsv4_kv_schema_bytes_per_token(s);
    size_t fixed = dsv4_kv_schema_fixed_bytes_per_request(s);
    printf("KV cache per sequence (compact bit-exact storage: entry %d B, indexer key %d B, block %d tokens):\n",
           s->entry.bytes, s->ikey.code_bytes + s->ikey.n_scales, s->block_tokens);
    printf("  growth                 %10.2f B/token  (%.2f GiB at 1M tokens; unpadded %.2f; official BF16 layout "
           "%.2f B/token)\n",
           grow, grow * 1048576.0 / (1 << 30), dsv4_kv_schema_bytes_per_token_unpadded(s), grow_bf16);
    printf("  fixed per request      %10.2f MiB      (SWA rings of every layer incl. MTP + FP32 compressor state)\n",
           fixed / 1048576.0);
    free(s);
}

static void print_config(const dsv4_config *c) {
    printf("model: hidden %d, %d layers%s, vocab %d, max positions %ld\n", c->dim, c->n_layers,
           c->n_mtp_layers ? " + 1 MTP block" : " (no MTP)", c->vocab_size, c->max_position_embeddings);
    printf("attention: %d heads x %d (rope %d), q_lora %d, o_groups %d x rank %d, window %d\n", c->n_heads,
           c->head_dim, c->rope_head_dim, c->q_lora_rank, c->o_groups, c->o_lora_rank, c->window_size);
    printf("  rope theta %g (SWA), %g + YaRN factor %g / orig %g / beta %g,%g (compressed)\n", c->rope_theta,
           c->compress_rope_theta, c->rope_factor, c->original_seq_len, c->beta_fast, c->beta_slow);
    printf("  indexer %d heads x %d, top-k %d\n", c->index_n_heads, c->index_head_dim, c->index_topk);
    printf("layers by type:\n");
    print_layer_list(c, DSV4_LAYER_SWA);
    print_layer_list(c, DSV4_LAYER_CSA);
    print_layer_list(c, DSV4_LAYER_HCA);
    if (c->n_mtp_layers) {
        static const char *const names[] = {"SWA", "CSA", "HCA"};
        printf("  MTP block: %s (ratio %d), learned routing\n", names[dsv4_config_layer_kind(c, c->n_layers)],
               c->compress_ratios[c->n_layers]);
    } else {
        printf("  MTP block: absent\n");
    }
    printf("MoE: %d routed experts (%d per token, %s) + %d shared, inter %d, route scale %g, swiglu limit %g\n",
           c->n_routed_experts, c->n_activated_experts,
           c->expert_fp4 < 0 ? "dtype from weights" : c->expert_fp4 ? "FP4" : "FP8", c->n_shared_experts,
           c->moe_inter_dim, c->route_scale, c->swiglu_limit);
    if (c->n_hash_layers) printf("  hash-routed layers: 0..%d (%d)\n", c->n_hash_layers - 1, c->n_hash_layers);
    else printf("  hash-routed layers: none\n");
    printf("hyper-connections: hc %d, sinkhorn %d iters\n", c->hc_mult, c->hc_sinkhorn_iters);
}

static void print_stats(const dsv4_checkpoint_stats *s, const char *how) {
    printf("parameters (%s):\n", how);
    print_count("total", s->params_total, "");
    print_count("main model", s->params_total - s->params_mtp, "");
    print_count("MTP block", s->params_mtp, "");
    print_count("routed experts (main)", s->params_routed, "");
    print_count("active per token", s->params_active, "");
    printf("bytes by dtype (%" PRIu64 " tensors):\n", s->n_tensors);
    for (int d = 0; d < DSV4_DTYPE_COUNT; d++)
        if (s->bytes_by_dtype[d]) print_count(dsv4_dtype_name((dsv4_dtype)d), s->bytes_by_dtype[d], "B");
    print_count("total", s->bytes_total, "B");
}

/* ---- --json ---------------------------------------------------------------------------------------------
 * The same facts as the text summary, as one JSON object: config, layers by type, parameters and bytes by
 * dtype, KV bytes, and the multi-GPU plan when --gpus is given. */
static json_t *layers_json(const dsv4_config *c, dsv4_layer_kind kind) {
    json_t *a = json_array();
    for (int l = 0; a && l < c->n_layers; l++)
        if (dsv4_config_layer_kind(c, l) == kind) json_array_append_new(a, json_integer(l));
    return a;
}

static json_t *summary_json(const dsv4_config *c, const dsv4_checkpoint_stats *st) {
    json_t *o = json_object(), *dt = json_object();
    if (!o || !dt) { json_decref(o); json_decref(dt); return NULL; }
    json_object_set_new(o, "config", json_pack("{s:i, s:i, s:i, s:i, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, "
                                               "s:i, s:i, s:i, s:i}",
                                               "hidden", c->dim, "n_layers", c->n_layers, "n_mtp_layers",
                                               c->n_mtp_layers, "vocab_size", c->vocab_size, "max_position_embeddings",
                                               (json_int_t)c->max_position_embeddings, "n_heads", c->n_heads,
                                               "head_dim", c->head_dim, "window_size", c->window_size,
                                               "n_routed_experts", c->n_routed_experts, "n_activated_experts",
                                               c->n_activated_experts, "n_shared_experts", c->n_shared_experts,
                                               "moe_inter_dim", c->moe_inter_dim, "n_hash_layers", c->n_hash_layers,
                                               "hc_mult", c->hc_mult, "index_n_heads", c->index_n_heads,
                                               "index_topk", c->index_topk, "o_groups", c->o_groups));
    json_object_set_new(o, "layers", json_pack("{s:o, s:o, s:o}", "swa", layers_json(c, DSV4_LAYER_SWA), "csa",
                                               layers_json(c, DSV4_LAYER_CSA), "hca", layers_json(c, DSV4_LAYER_HCA)));
    json_object_set_new(o, "parameters", json_pack("{s:I, s:I, s:I, s:I, s:I}", "total", (json_int_t)st->params_total,
                                                   "main", (json_int_t)(st->params_total - st->params_mtp), "mtp",
                                                   (json_int_t)st->params_mtp, "routed_experts",
                                                   (json_int_t)st->params_routed, "active_per_token",
                                                   (json_int_t)st->params_active));
    for (int d = 0; d < DSV4_DTYPE_COUNT; d++)
        if (st->bytes_by_dtype[d])
            json_object_set_new(dt, dsv4_dtype_name((dsv4_dtype)d), json_integer((json_int_t)st->bytes_by_dtype[d]));
    json_object_set_new(o, "bytes_by_dtype", dt);
    json_object_set_new(o, "bytes_total", json_integer((json_int_t)st->bytes_total));
    json_object_set_new(o, "tensors", json_integer((json_int_t)st->n_tensors));
    double bpt, fixed;
    if (kv_request_bytes(c, 0, &bpt, &fixed) >= 0 && bpt > 0)
        json_object_set_new(o, "kv", json_pack("{s:f, s:f}", "bytes_per_token", bpt, "fixed_bytes_per_request", fixed));
    return o;
}

/* The plan as JSON (after print_gpu_plan's checks passed). */
static json_t *gpu_plan_json(const dsv4_config *c, int gpus, double gpu_gb) {
    dsv4_shard sh;
    if (dsv4_shard_init(c, 0, gpus, &sh, NULL) != DSV4_OK) return NULL;
    double bpt, fixed;
    kv_request_bytes(c, 0, &bpt, &fixed);
    double w = (double)dsv4_shard_weight_bytes(c, gpus), left = gpu_gb * 1e9 - w - RESERVE_GB * 1e9;
    return json_pack("{s:i, s:f, s:f, s:f, s:f, s:I, s:i, s:i}", "gpus", gpus, "gpu_mem_gb", gpu_gb,
                     "weights_per_gpu_gb", w / 1e9, "reserve_per_gpu_gb", RESERVE_GB, "kv_per_gpu_gb", left / 1e9,
                     "kv_tokens_one_request", (json_int_t)(bpt > 0 ? (left - fixed) / bpt : 0), "heads_per_gpu", sh.nh,
                     "routed_experts_per_gpu", sh.ne);
}

static int print_json(json_t *o) {
    if (!o) {
        fprintf(stderr, "dsv4 inspect: out of memory\n");
        return 1;
    }
    int rc = json_dumpf(o, stdout, JSON_INDENT(2)) == 0 ? 0 : 1;
    printf("\n");
    json_decref(o);
    return rc;
}

int dsv4_inspect(const dsv4_inspect_options *o) {
    const char *model = o->model_dir, *config = o->config_file;
    const int gpus = o->gpus, json = o->json;
    const double gpu_gb = o->gpu_mem_gb;
    dsv4_err err = {{0}};
    if (!model == !config) {
        fprintf(stderr, "dsv4 inspect: give one of a checkpoint directory or a config.json\n");
        return 1;
    }
    if (config) {
        dsv4_config cfg;
        if (dsv4_config_load(config, &cfg, &err) != DSV4_OK) {
            fprintf(stderr, "dsv4 inspect: %s\n", err.msg);
            return 1;
        }
        dsv4_checkpoint_stats st;
        dsv4_checkpoint_stats_compute(&cfg, &st);
        if (json) {
            json_t *o = summary_json(&cfg, &st);
            if (o) json_object_set_new(o, "config_file", json_string(config));
            if (o && gpus) {
                if (print_gpu_plan_check(&cfg, gpus, gpu_gb)) { json_decref(o); return 1; }
                json_object_set_new(o, "gpu_plan", gpu_plan_json(&cfg, gpus, gpu_gb));
            }
            return print_json(o);
        }
        printf("config: %s\n", config);
        print_config(&cfg);
        print_stats(&st, cfg.expert_fp4 < 0 ? "from shapes, FP4 experts assumed" : "from shapes");
        print_kv(&cfg);
        return gpus ? print_gpu_plan(&cfg, gpus, gpu_gb) : 0;
    }
    if (gpus) {
        /* Too few GPUs is an error before any weight file is opened: decide from config.json alone. */
        char path[4096];
        dsv4_config cfg;
        snprintf(path, sizeof path, "%s/config.json", model);
        if (dsv4_config_load(path, &cfg, &err) == DSV4_OK) {
            if (cfg.expert_fp4 < 0) cfg.expert_fp4 = 1;
            dsv4_shard sh;
            if (dsv4_shard_init(&cfg, 0, gpus, &sh, &err) != DSV4_OK || !plan_fits(&cfg, gpus, gpu_gb * 1e9))
                return print_gpu_plan(&cfg, gpus, gpu_gb);
        }
    }
    if (o->before_open) {
        int rc = o->before_open(o->before_open_user, model);
        if (rc) return rc;
    }
    dsv4_checkpoint ck;
    if (dsv4_checkpoint_open(model, &ck, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 inspect: %s\n", err.msg);
        return 1;
    }
    dsv4_model_weights w;
    if (dsv4_model_weights_bind(&ck, &w, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 inspect: %s\n", err.msg);
        dsv4_checkpoint_close(&ck);
        return 1;
    }
    int rc = 0;
    if (json) {
        json_t *o = summary_json(&ck.cfg, &ck.stats);
        if (o) {
            json_object_set_new(o, "checkpoint", json_string(model));
            json_object_set_new(o, "files", json_integer(ck.n_files));
            json_object_set_new(o, "valid", json_true());
        }
        if (o && gpus && print_gpu_plan_check(&ck.cfg, gpus, gpu_gb)) {
            json_decref(o);
            o = NULL;
            rc = 1;
        } else if (o && gpus) {
            json_object_set_new(o, "gpu_plan", gpu_plan_json(&ck.cfg, gpus, gpu_gb));
        }
        if (!rc) rc = print_json(o);
    } else {
        printf("checkpoint: %s (%d safetensors file%s, all %zu tensors valid; %d misaligned tensor%s copied)\n", model,
               ck.n_files, ck.n_files == 1 ? "" : "s", ck.n_index, w.n_owned_copies, w.n_owned_copies == 1 ? "" : "s");
        print_config(&ck.cfg);
        print_stats(&ck.stats, "checkpoint");
        print_kv(&ck.cfg);
        rc = gpus ? print_gpu_plan(&ck.cfg, gpus, gpu_gb) : 0;
    }
    dsv4_model_weights_free(&w);
    dsv4_checkpoint_close(&ck);
    return rc;
}

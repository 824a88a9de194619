/* fuzz_checkpoint.c — libFuzzer target for checkpoint *semantics*: a valid tiny checkpoint (synthesized
 * once: 3 layers SWA-hash / CSA / HCA, 4 experts, dim 128, head_dim 128, vocab 512, written by model/synth.c) is mutated by the
 * input -- config values, tensor bytes (random, NaN / Inf / max codes per dtype, e8m0 0xFF, tid2eid ids),
 * tensor byte ranges (aliasing, shifted offsets) -- then loaded with dsv4_engine_create (cpu, 1 thread) and
 * run for one prefill step and one decode step. The contract: every failure is a status with a message;
 * a step that succeeds returns finite logits (non-finite ones must be an error); no crash, no sanitizer
 * report, no hang (run with -timeout). Build: make fuzz; run:
 *   build/fuzz/fuzz_checkpoint -max_total_time=60 -timeout=20 -close_fd_mask=2 DIR tests/fuzz/corpus_checkpoint
 * Input: a stream of ops, each an op byte then its operands (see apply_ops); missing bytes read as 0. */
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsv4_files.h"
#include "dsv4.h"
#include "dsv4_config.h"
#include "dsv4_synth.h"

/* ---- the base checkpoint, in memory ------------------------------------------------------------------ */

typedef struct {
    char name[160];
    char file[64];       /* shard file name */
    char dtype[16];
    uint64_t b, e;       /* data_offsets */
} tensor_info;

typedef struct {
    char name[64];
    uint8_t *pristine;   /* the base file as synthesized (never modified) */
    uint8_t *data;       /* whole file, mutated by one run */
    size_t size;
    size_t data_start;   /* 8 + header length */
    json_t *header;      /* parsed header (owned) */
} shard;

static char base_dir[128], work_dir[128];
static char *base_config, *base_index;
static size_t base_config_len, base_index_len;
static shard shards[4];
static int n_shards;
static tensor_info *tensors;
static int n_tensors;

static void die(const char *what) {
    fprintf(stderr, "fuzz_checkpoint: %s\n", what);
    abort();
}

static void read_whole(const char *dir, const char *name, char **data, size_t *len) {
    char p[512];
    dsv4_err err = {{0}};
    snprintf(p, sizeof p, "%s/%s", dir, name);
    if (dsv4_file_read_all(p, 1ull << 30, data, len, &err) != DSV4_OK) die(err.msg);
}

static void load_base(void) {
    read_whole(base_dir, "config.json", &base_config, &base_config_len);
    read_whole(base_dir, "model.safetensors.index.json", &base_index, &base_index_len);
    json_t *idx = json_loadb(base_index, base_index_len, 0, NULL);
    json_t *wm = json_object_get(idx, "weight_map");
    const char *key;
    json_t *val;
    json_object_foreach(wm, key, val) {
        const char *f = json_string_value(val);
        int s;
        for (s = 0; s < n_shards && strcmp(shards[s].name, f); s++) {}
        if (s == n_shards) {
            if (n_shards == 4) die("too many shards");
            snprintf(shards[s].name, sizeof shards[s].name, "%s", f);
            char *d;
            size_t n;
            read_whole(base_dir, f, &d, &n);
            shards[s].pristine = (uint8_t *)d;
            shards[s].data = malloc(n);
            if (!shards[s].data) die("out of memory");
            memcpy(shards[s].data, d, n);
            shards[s].size = n;
            uint64_t hl = 0;
            for (int i = 7; i >= 0; i--) hl = (hl << 8) | shards[s].data[i];
            shards[s].data_start = 8 + hl;
            shards[s].header = json_loadb(d + 8, hl, 0, NULL);
            if (!shards[s].header) die("base header");
            n_shards++;
        }
    }
    json_decref(idx);
    for (int s = 0; s < n_shards; s++) {
        json_object_foreach(shards[s].header, key, val) {
            if (!strcmp(key, "__metadata__")) continue;
            tensors = realloc(tensors, sizeof *tensors * (size_t)(n_tensors + 1));
            tensor_info *t = &tensors[n_tensors++];
            snprintf(t->name, sizeof t->name, "%s", key);
            snprintf(t->file, sizeof t->file, "%s", shards[s].name);
            snprintf(t->dtype, sizeof t->dtype, "%s", json_string_value(json_object_get(val, "dtype")));
            json_t *o = json_object_get(val, "data_offsets");
            t->b = (uint64_t)json_integer_value(json_array_get(o, 0));
            t->e = (uint64_t)json_integer_value(json_array_get(o, 1));
        }
    }
}

static void remove_dirs(void) {
    dsv4_err err = {{0}};
    dsv4_remove_tree(work_dir, &err);
    dsv4_remove_tree(base_dir, &err);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    atexit(remove_dirs);
    const char *shm = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(base_dir, sizeof base_dir, "%s/dsv4_fuzz_ckpt_base_%d", shm, (int)getpid());
    snprintf(work_dir, sizeof work_dir, "%s/dsv4_fuzz_ckpt_%d", shm, (int)getpid());
    dsv4_config cfg;
    dsv4_err err = {{0}};
    if (dsv4_synth_config_preset("tiny", 3, 4, &cfg, &err) != DSV4_OK) die(err.msg);
    cfg.vocab_size = 512;      /* small everywhere: executions per second matter more than realism here */
    cfg.dim = 128;
    cfg.head_dim = 128;
    cfg.n_mtp_layers = 0;
    cfg.max_position_embeddings = 4096;
    if (dsv4_synth_write(&cfg, base_dir, 7, NULL, &err) != DSV4_OK) die(err.msg);
    load_base();
    if (mkdir(work_dir, 0755) != 0) die("mkdir work dir");
    return 0;
}

/* ---- mutation ------------------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *p;
    size_t n, i;
} reader;

static unsigned rd8(reader *r) { return r->i < r->n ? r->p[r->i++] : 0; }
static unsigned rd16(reader *r) { unsigned a = rd8(r); return a | rd8(r) << 8; }
static uint32_t rd32(reader *r) { uint32_t a = rd16(r); return a | (uint32_t)rd16(r) << 16; }

static const char *const int_keys[] = {
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "head_dim", "qk_rope_head_dim",
    "q_lora_rank", "o_groups", "o_lora_rank", "sliding_window", "index_n_heads", "index_head_dim", "index_topk",
    "n_routed_experts", "num_experts_per_tok", "n_shared_experts", "moe_intermediate_size", "num_hash_layers",
    "hc_mult", "hc_sinkhorn_iters", "num_nextn_predict_layers", "bos_token_id", "eos_token_id",
    "max_position_embeddings"};
static const char *const real_keys[] = {"rope_theta", "compress_rope_theta", "routed_scaling_factor", "swiglu_limit",
                                        "hc_eps", "rms_norm_eps"};
static const int64_t special_ints[] = {0, -1, 1, 2, 3, 4, 7, 8, 16, 64, 127, 128, 129, 255, 256, 511, 512, 1024,
                                       1025, 4096, 65536, 1 << 20, 1 << 30, 2147483647, -2147483647 - 1,
                                       (int64_t)1 << 40};
static const double special_reals[] = {0.0, -1.0, 1e-30, 1e-6, 0.5, 1.0, 1.5, 10.0, 1e6, 1e30, 1e300, -1e300};

/* Writes n bytes of pattern into tensor t at offset off (clamped to the tensor). */
static void poke(tensor_info *t, uint64_t off, const uint8_t *bytes, size_t n) {
    shard *s = NULL;
    for (int i = 0; i < n_shards; i++)
        if (!strcmp(shards[i].name, t->file)) s = &shards[i];
    uint64_t len = t->e - t->b;
    if (!s || len == 0) return;
    off %= len;
    if (n > len - off) n = (size_t)(len - off);
    memcpy(s->data + s->data_start + t->b + off, bytes, n);
}

/* The value patterns worth planting per dtype: NaN, +Inf, the largest finite, a huge integer id. */
static size_t special_pattern(const tensor_info *t, unsigned kind, uint8_t out[8]) {
    memset(out, 0, 8);
    if (!strcmp(t->dtype, "F32")) {
        static const uint32_t v[] = {0x7FC00000u, 0x7F800000u, 0x7F7FFFFFu, 0xFF800000u};
        memcpy(out, &v[kind % 4], 4);
        return 4;
    }
    if (!strcmp(t->dtype, "BF16")) {
        static const uint16_t v[] = {0x7FC0, 0x7F80, 0x7F7F, 0xFF80};
        memcpy(out, &v[kind % 4], 2);
        return 2;
    }
    if (!strcmp(t->dtype, "F8_E4M3")) { static const uint8_t v[] = {0x7F, 0xFF, 0x7E, 0xFE}; out[0] = v[kind % 4]; return 1; }
    if (!strcmp(t->dtype, "F8_E8M0")) { static const uint8_t v[] = {0xFF, 0xFE, 0x00, 0xFD}; out[0] = v[kind % 4]; return 1; }
    if (!strcmp(t->dtype, "I64")) {
        static const int64_t v[] = {4, -1, INT64_MAX, 3};
        memcpy(out, &v[kind % 4], 8);
        return 8;
    }
    out[0] = (uint8_t)(0x77 + kind);   /* I8: packed FP4, every code is finite */
    return 1;
}

/* Re-points tensor index j's data_offsets in its shard header (aliasing / shifting). */
static void set_offsets(tensor_info *t, uint64_t b, uint64_t e) {
    for (int i = 0; i < n_shards; i++)
        if (!strcmp(shards[i].name, t->file)) {
            json_t *o = json_object_get(json_object_get(shards[i].header, t->name), "data_offsets");
            json_array_set_new(o, 0, json_integer((json_int_t)b));
            json_array_set_new(o, 1, json_integer((json_int_t)e));
        }
}

static int32_t tokens[8] = {5, 17, 42};
static int n_tokens = 3;

static void apply_ops(reader *r, json_t *cfg) {
    for (int op = 0; op < 24 && r->i < r->n; op++) {
        unsigned kind = rd8(r) % 7;
        if (kind == 0) {            /* integer config key */
            const char *k = int_keys[rd8(r) % (sizeof int_keys / sizeof *int_keys)];
            unsigned how = rd8(r);
            int64_t v = how & 1 ? special_ints[rd8(r) % (sizeof special_ints / sizeof *special_ints)] : (int32_t)rd32(r);
            json_object_set_new(cfg, k, json_integer(v));
        } else if (kind == 1) {     /* real config key */
            const char *k = real_keys[rd8(r) % (sizeof real_keys / sizeof *real_keys)];
            json_object_set_new(cfg, k, json_real(special_reals[rd8(r) % (sizeof special_reals / sizeof *special_reals)]));
        } else if (kind == 2) {     /* compress_ratios[i] */
            json_t *a = json_object_get(cfg, "compress_ratios");
            size_t i = rd8(r) % (json_array_size(a) + 1);
            int64_t v = special_ints[rd8(r) % (sizeof special_ints / sizeof *special_ints)];
            if (i < json_array_size(a)) json_array_set_new(a, i, json_integer(v));
            else json_array_append_new(a, json_integer(v));
        } else if (kind == 3) {     /* random bytes into a tensor */
            tensor_info *t = &tensors[rd16(r) % (unsigned)n_tensors];
            uint64_t off = rd32(r);
            uint8_t b[4] = {(uint8_t)rd8(r), (uint8_t)rd8(r), (uint8_t)rd8(r), (uint8_t)rd8(r)};
            poke(t, off, b, 1 + rd8(r) % 4);
        } else if (kind == 4) {     /* a special value, repeated */
            tensor_info *t = &tensors[rd16(r) % (unsigned)n_tensors];
            uint64_t off = rd32(r);
            uint8_t pat[8];
            size_t pl = special_pattern(t, rd8(r), pat);
            unsigned reps = 1 + rd8(r) % 64;
            off -= off % pl;
            for (unsigned k = 0; k < reps; k++) poke(t, off + (uint64_t)k * pl, pat, pl);
        } else if (kind == 5) {     /* byte ranges: alias another tensor, or shift */
            tensor_info *a = &tensors[rd16(r) % (unsigned)n_tensors], *b = &tensors[rd16(r) % (unsigned)n_tensors];
            if (rd8(r) & 1) {
                if (!strcmp(a->file, b->file)) set_offsets(b, a->b, a->b + (b->e - b->b));
            } else {
                int64_t d = (int16_t)rd16(r);
                set_offsets(b, b->b + (uint64_t)d, b->e + (uint64_t)d);
            }
        } else {                    /* the prompt */
            n_tokens = 1 + (int)(rd8(r) % 8);
            for (int i = 0; i < n_tokens; i++) tokens[i] = (int32_t)(rd16(r) % 600);
        }
    }
}

/* ---- one run -------------------------------------------------------------------------------------- */

static void write_file(const char *name, const void *data, size_t n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", work_dir, name);
    FILE *f = fopen(p, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f)) die("write");
}

static void write_checkpoint(json_t *cfg) {
    char *c = json_dumps(cfg, JSON_COMPACT);
    write_file("config.json", c, strlen(c));
    free(c);
    write_file("model.safetensors.index.json", base_index, base_index_len);
    for (int s = 0; s < n_shards; s++) {
        char *h = json_dumps(shards[s].header, JSON_COMPACT | JSON_PRESERVE_ORDER);
        size_t hl = strlen(h), pad = (8 - hl % 8) % 8, data_len = shards[s].size - shards[s].data_start;
        size_t total = 8 + hl + pad + data_len;
        uint8_t *img = malloc(total);
        for (int i = 0; i < 8; i++) img[i] = (uint8_t)((uint64_t)(hl + pad) >> (8 * i));
        memcpy(img + 8, h, hl);
        memset(img + 8 + hl, ' ', pad);
        memcpy(img + 8 + hl + pad, shards[s].data + shards[s].data_start, data_len);
        write_file(shards[s].name, img, total);
        free(img);
        free(h);
    }
}

static void run_engine(void) {
    dsv4_engine_options o = {0};
    o.model_dir = work_dir;
    o.n_threads = 1;
    o.max_seqs = 1;
    o.max_tokens = 32;
    dsv4_engine *e = NULL;
    dsv4_err err = {{0}};
    const int verbose = getenv("DSV4_FUZZ_VERBOSE") != NULL;   /* replaying a corpus: say what happened */
    if (dsv4_engine_create(&o, &e, &err) != DSV4_OK) {
        if (!err.msg[0]) die("engine create failed without a message");
        if (verbose) fprintf(stderr, "create: %s\n", err.msg);
        return;
    }
    int V = dsv4_engine_vocab_size(e), seq;
    float *logits = malloc(sizeof(float) * (size_t)V);
    if (dsv4_engine_seq_open(e, &seq, &err) != DSV4_OK) die("seq open");
    dsv4_batch_item it = {seq, tokens, n_tokens, 1};
    for (int step = 0; step < 2; step++) {
        err.msg[0] = 0;
        dsv4_status st = dsv4_engine_step(e, &it, 1, logits, &err);
        if (st != DSV4_OK) {
            if (!err.msg[0]) die("step failed without a message");
            if (verbose) fprintf(stderr, "step %d: %s\n", step, err.msg);
            break;
        }
        if (verbose) fprintf(stderr, "step %d: ok\n", step);
        for (int v = 0; v < V; v++)
            if (!isfinite(logits[v])) die("a step returned OK with non-finite logits");
        int32_t best = 0;
        for (int v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        tokens[0] = best;
        it = (dsv4_batch_item){seq, tokens, 1, 1};
    }
    free(logits);
    dsv4_engine_destroy(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* restore the base: shard bytes and headers are rebuilt from the base files each run */
    for (int s = 0; s < n_shards; s++) {
        memcpy(shards[s].data, shards[s].pristine, shards[s].size);
        json_decref(shards[s].header);
        shards[s].header = json_loadb((const char *)shards[s].pristine + 8, shards[s].data_start - 8, 0, NULL);
    }
    tokens[0] = 5, tokens[1] = 17, tokens[2] = 42;
    n_tokens = 3;
    json_t *cfg = json_loadb(base_config, base_config_len, 0, NULL);
    reader r = {data, size, 0};
    apply_ops(&r, cfg);
    write_checkpoint(cfg);
    json_decref(cfg);
    run_engine();
    return 0;
}

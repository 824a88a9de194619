/* test_cuda_glue.c — every launcher of the CUDA forward's glue against its CPU twin, on random inputs at
 * several shapes including the edge cases of each (ring wrap, window boundary, empty lists, compressor
 * emission boundaries, padding sequences, block boundaries of the block table):
 *   cuda_kv_codec.h         store / ring write / ring decode / decode entries / decode selected
 *                           vs src/kv/kv_codec.c (dsv4_kv_entry_encode / _quantize / _decode, dsv4_kv_ikey_*)
 *   cuda_compressor_state.h n_emit, cmp_gather, cmp_update vs src/kv/kv_cmp_state.c (dsv4_kv_cmp_push)
 *   cuda_index_lists.h      build_idx, csa_meta, advance vs the visibility rule of forward_cpu.c
 *                           attend_sequence, written below in the lists' index form (ref_build_idx)
 *   cuda_moe_pairs.h        moe_expert vs dsv4_cpu_linear_fp8 / _fp4; combine, partial + finish vs the end
 *                           of forward_cpu.c moe_layer (ref_combine)
 *   cuda_elementwise.h      fill32, dequant (model.c's wo_a rule), broadcast_hc, scale, regroup, embed_part,
 *                           conversions, vocab_interleave, gather_rows vs one-line references
 *   cuda_ctx.h              pinned memory, async upload, graph capture / replay, set_device
 * Outputs are poisoned before each launch (0xFF bytes, or 0x5A where 0xFF bytes would be a legal value such
 * as an index -1) so that an element written where it must not be, or not written where it must, fails.
 *
 * Agreement demanded, stated at each check: EXACT (bytes, integers, or BF16/FP32 bit patterns) for every
 * launcher but moe_expert — they move values or apply the very rounding the CPU applies once per element;
 * moe_expert within the "CUDA linear" bound of docs/NUMERICS.md (FP32 sum order inside a block differs).
 *
 * Without a CUDA build or without a device it reports the case as skipped ("SKIP ...") (CI has no GPU). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/linear.h"
#include "backend/cpu/quant.h"
#include "core/numfmt.h"
#include "kv/kv_codec.h"
#include "kv/kv_cmp_state.h"
#include "test_util.h"

#ifndef DSV4_HAVE_CUDA
int main(void) {
    test_skip("test_cuda_glue", "no CUDA device (built without CUDA)");
    return test_finish();
}
#else
#include "backend/cuda/cuda_compressor_state.h"
#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/cuda_elementwise.h"
#include "backend/cuda/cuda_index_lists.h"
#include "backend/cuda/cuda_kv_codec.h"
#include "backend/cuda/cuda_moe_pairs.h"

static dsv4_cuda_ctx *ctx;
static test_rng rng;
static dsv4_err err;

/* ---- helpers ------------------------------------------------------------------------------------------ */

#define MAX_DEV 64
static void *devs[MAX_DEV];
static int n_devs;

#define CU(call)                                                                                  \
    do {                                                                                          \
        dsv4_status s_ = (call);                                                                  \
        CHECK(s_ == DSV4_OK, "%s: %s", #call, err.msg);                                           \
    } while (0)

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of host memory\n");
        abort();
    }
    return p;
}
/* Device buffer poisoned with `poison` bytes (freed by dev_free_all); aborts on failure (a test bug). */
static void *dalloc_p(size_t bytes, int poison) {
    void *p = NULL;
    if (dsv4_cuda_alloc(ctx, bytes ? bytes : 16, &p, &err) != DSV4_OK || n_devs == MAX_DEV) {
        fprintf(stderr, "device alloc of %zu bytes failed: %s\n", bytes, err.msg);
        abort();
    }
    devs[n_devs++] = p;
    dsv4_cuda_memset(ctx, p, poison, bytes ? bytes : 16, &err);
    return p;
}
static void *dalloc(size_t bytes) { return dalloc_p(bytes, 0xff); }
static void dev_free_all(void) {
    for (int i = 0; i < n_devs; i++) dsv4_cuda_free(ctx, devs[i]);
    n_devs = 0;
}
static void *dup_to_dev(const void *h, size_t bytes) {
    void *d = dalloc(bytes);
    if (bytes && dsv4_cuda_upload(ctx, d, h, bytes, &err) != DSV4_OK) {
        fprintf(stderr, "upload: %s\n", err.msg);
        abort();
    }
    return d;
}
static void from_dev(void *h, const void *d, size_t bytes) {
    if (!bytes) return;
    if (dsv4_cuda_download(ctx, h, d, bytes, &err) != DSV4_OK) {
        fprintf(stderr, "download: %s\n", err.msg);
        abort();
    }
}
static int rand_int(int n) { return (int)(test_rng_u64(&rng) % (uint64_t)n); }
static void rand_bytes(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)test_rng_u64(&rng);
}
/* First differing byte or -1. */
static long first_diff(const void *a, const void *b, size_t n) {
    const uint8_t *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return (long)i;
    return -1;
}

/* ---- a step and a KV layout --------------------------------------------------------------------------- */

typedef struct { int slot, P, n; } seq_spec; /* KV slot (-1 = padding), committed length, new tokens */

typedef struct {
    int n_seq, rows;
    int32_t *pos, *rseq, *sslot, *spos0, *srow0, *sn; /* host copies */
    dsv4_glue_step d;                                  /* device view */
} step_fixture;

static void step_make(step_fixture *s, const seq_spec *q, int n_seq) {
    s->n_seq = n_seq;
    s->rows = 0;
    for (int i = 0; i < n_seq; i++) s->rows += q[i].n;
    s->pos = xmalloc(4 * (size_t)s->rows); s->rseq = xmalloc(4 * (size_t)s->rows);
    s->sslot = xmalloc(4 * (size_t)n_seq); s->spos0 = xmalloc(4 * (size_t)n_seq);
    s->srow0 = xmalloc(4 * (size_t)n_seq); s->sn = xmalloc(4 * (size_t)n_seq);
    int r = 0;
    for (int i = 0; i < n_seq; i++) {
        s->sslot[i] = q[i].slot; s->spos0[i] = q[i].P; s->srow0[i] = r; s->sn[i] = q[i].n;
        for (int j = 0; j < q[i].n; j++, r++) { s->pos[r] = q[i].P + j; s->rseq[r] = i; }
    }
    s->d.pos = dup_to_dev(s->pos, 4 * (size_t)s->rows);
    s->d.rseq = dup_to_dev(s->rseq, 4 * (size_t)s->rows);
    s->d.sslot = dup_to_dev(s->sslot, 4 * (size_t)n_seq);
    s->d.spos0 = dup_to_dev(s->spos0, 4 * (size_t)n_seq);
    s->d.srow0 = dup_to_dev(s->srow0, 4 * (size_t)n_seq);
    s->d.sn = dup_to_dev(s->sn, 4 * (size_t)n_seq);
    s->d.rows = s->rows;
    s->d.n_seq = n_seq;
}
static void step_free(step_fixture *s) {
    free(s->pos); free(s->rseq); free(s->sslot); free(s->spos0); free(s->srow0); free(s->sn);
}

static int round16(int x) { return (x + 15) / 16 * 16; }
/* The entry format kv_schema.c derives for head_dim = nope + rope. */
static dsv4_kv_entry_fmt entry_fmt(int nope, int rope) {
    dsv4_kv_entry_fmt f;
    f.nope = nope; f.rope = rope; f.n_scales = nope / 64;
    f.rope_off = round16(nope); f.scale_off = f.rope_off + 2 * rope;
    f.bytes = round16(f.scale_off + f.n_scales);
    return f;
}

/* Host and device copies of one layer's arenas: n_slots slots, n_blocks blocks, block table [n_slots, bt_ld]
 * (a random permutation of the block ids, so block boundaries land anywhere in the arena). */
typedef struct {
    dsv4_kv_entry_fmt ef;
    dsv4_kv_ikey_fmt kf;
    int n_slots, n_blocks;
    uint8_t *slots, *blocks; /* host */
    int32_t *bt;             /* host */
    dsv4_glue_kv k;          /* device */
} kv_fixture;

static void kv_make(kv_fixture *f, int nope, int rope, int ik_dim, int window, int ratio, int epb, int n_slots,
                    int bt_ld) {
    memset(f, 0, sizeof *f);
    f->ef = entry_fmt(nope, rope);
    f->kf = (dsv4_kv_ikey_fmt){ik_dim, ik_dim / 2, ik_dim / 32};
    f->n_slots = n_slots;
    f->n_blocks = n_slots * bt_ld;
    dsv4_glue_kv *k = &f->k;
    k->nope = nope; k->rope = rope; k->rope_off = f->ef.rope_off; k->scale_off = f->ef.scale_off;
    k->n_scales = f->ef.n_scales; k->entry_bytes = f->ef.bytes;
    k->ik_dim = ik_dim; k->ik_code_bytes = f->kf.code_bytes; k->ik_n_scales = f->kf.n_scales;
    k->ring_off = 256;                          /* not at the slot start: offsets must be honoured */
    k->window = window;
    k->ratio = ratio;
    k->entries_per_block = epb;
    k->main_off = 64;
    k->ikey_off = 64 + (size_t)round16(epb * f->ef.bytes) + 64;
    k->ikey_scale_off = (size_t)epb * f->kf.code_bytes;
    /* strides multiples of 256 as kv_schema's (DSV4_KV_REGION_ALIGN): the BF16 rope dims are read as uint16 */
    k->slot_bytes = (k->ring_off + (size_t)window * f->ef.bytes + 512 + 255) / 256 * 256;
    k->block_bytes = (k->ikey_off + (size_t)epb * (f->kf.code_bytes + f->kf.n_scales) + 64 + 255) / 256 * 256;
    k->bt_ld = bt_ld;
    f->slots = xmalloc((size_t)n_slots * k->slot_bytes);
    f->blocks = xmalloc((size_t)f->n_blocks * k->block_bytes);
    rand_bytes(f->slots, (size_t)n_slots * k->slot_bytes);   /* whatever earlier steps left */
    rand_bytes(f->blocks, (size_t)f->n_blocks * k->block_bytes);
    f->bt = xmalloc(4 * (size_t)f->n_blocks);
    for (int i = 0; i < f->n_blocks; i++) f->bt[i] = i;
    for (int i = f->n_blocks - 1; i > 0; i--) {
        int j = rand_int(i + 1);
        int32_t t = f->bt[i]; f->bt[i] = f->bt[j]; f->bt[j] = t;
    }
}
/* Uploads the host arenas and table (after the host side was filled). */
static void kv_upload(kv_fixture *f) {
    f->k.slots = dup_to_dev(f->slots, (size_t)f->n_slots * f->k.slot_bytes);
    f->k.blocks = dup_to_dev(f->blocks, (size_t)f->n_blocks * f->k.block_bytes);
    f->k.bt = dup_to_dev(f->bt, 4 * (size_t)f->n_blocks);
}
static void kv_free(kv_fixture *f) { free(f->slots); free(f->blocks); free(f->bt); }

static uint8_t *ring_rec(kv_fixture *f, int slot, int p) {
    return f->slots + (size_t)slot * f->k.slot_bytes + f->k.ring_off + (size_t)(p % f->k.window) * f->ef.bytes;
}
static uint8_t *block_base(kv_fixture *f, int slot, int w) {
    return f->blocks + (size_t)f->bt[(size_t)slot * f->k.bt_ld + w / f->k.entries_per_block] * f->k.block_bytes;
}
static uint8_t *main_rec(kv_fixture *f, int slot, int w) {
    return block_base(f, slot, w) + f->k.main_off + (size_t)(w % f->k.entries_per_block) * f->ef.bytes;
}
static uint8_t *ikey_codes(kv_fixture *f, int slot, int w) {
    return block_base(f, slot, w) + f->k.ikey_off + (size_t)(w % f->k.entries_per_block) * f->kf.code_bytes;
}
static uint8_t *ikey_scales(kv_fixture *f, int slot, int w) {
    return block_base(f, slot, w) + f->k.ikey_off + f->k.ikey_scale_off +
           (size_t)(w % f->k.entries_per_block) * f->kf.n_scales;
}

/* A fake-quantized main / window entry [nope + rope] as the forward holds it (spec §4.3 step 2); `zeros`
 * makes its first 64-block zero (both signs), the block at the amax floor. */
static void fq_entry(const dsv4_kv_entry_fmt *f, float *x, int zeros) {
    test_fill_bf16(&rng, x, (size_t)(f->nope + f->rope), 0.5 + 4.0 * test_rng_uniform(&rng));
    if (zeros)
        for (int i = 0; i < 64; i++) x[i] = (i & 1) ? -0.0f : 0.0f;
    dsv4_cpu_fake_quant_fp8(x, (size_t)f->nope, 64);
}
/* A fake-quantized indexer key [dim] (FP4, block 32). */
static void fq_ikey(const dsv4_kv_ikey_fmt *f, float *x) {
    test_fill_bf16(&rng, x, (size_t)f->dim, 0.5 + 4.0 * test_rng_uniform(&rng));
    dsv4_cpu_fake_quant_fp4(x, (size_t)f->dim);
}
static uint16_t *bf16_of(const float *x, size_t n) {
    uint16_t *b = xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) b[i] = dsv4_f32_to_bf16(x[i]);
    return b;
}

/* ==== KV codec (cuda_kv_codec.h) vs kv_codec.c ========================================================= */

/* Stores n_emit finished entries (main or indexer keys) at distinct (slot, w), some slots -1 (skipped), w
 * crossing block boundaries; the whole block arena must equal the CPU encoder's bytes: EXACT (the device
 * recomputes each block exponent from the fake-quantized values with the CPU rule; bytes it must not touch
 * keep their random contents). */
static void store_case(int nope, int rope, int ik_dim, int epb, int n_emit, int is_indexer) {
    kv_fixture f;
    kv_make(&f, nope, rope, ik_dim, 8, 4, epb, 3, 4);
    DSV4_ASSERT(n_emit <= 4 * epb);
    const int dim = is_indexer ? ik_dim : nope + rope;
    int32_t *e_slot = xmalloc(4 * (size_t)n_emit), *e_w = xmalloc(4 * (size_t)n_emit);
    int *perm = xmalloc(sizeof(int) * 4 * (size_t)epb);
    for (int i = 0; i < 4 * epb; i++) perm[i] = i;
    for (int i = 4 * epb - 1; i > 0; i--) { int j = rand_int(i + 1), t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
    /* the first two entries: the last of a block and the first of the next, in slot 0 */
    for (int want_w = epb - 1, at = 0; at < 2 && at < n_emit; want_w++, at++)
        for (int i = 0; i < 4 * epb; i++)
            if (perm[i] == want_w) { perm[i] = perm[at]; perm[at] = want_w; break; }
    float *x = xmalloc(sizeof(float) * (size_t)(n_emit ? n_emit : 1) * dim);
    uint8_t *want = xmalloc((size_t)f.n_blocks * f.k.block_bytes);
    memcpy(want, f.blocks, (size_t)f.n_blocks * f.k.block_bytes);
    kv_upload(&f);
    for (int e = 0; e < n_emit; e++) {
        e_slot[e] = e < 2 ? 0 : rand_int(4) - 1; /* -1: no window completed there, skipped */
        e_w[e] = perm[e];                        /* distinct, so no two entries share a place */
        float *xe = x + (size_t)e * dim;
        if (is_indexer) fq_ikey(&f.kf, xe);
        else fq_entry(&f.ef, xe, e % 5 == 3);
    }
    for (int e = 0; e < n_emit; e++) {
        if (e_slot[e] < 0) continue;
        /* the CPU encoder writes the place the device must write, in `want` */
        size_t off_main = (size_t)(main_rec(&f, e_slot[e], e_w[e]) - f.blocks);
        size_t off_codes = (size_t)(ikey_codes(&f, e_slot[e], e_w[e]) - f.blocks);
        size_t off_scales = (size_t)(ikey_scales(&f, e_slot[e], e_w[e]) - f.blocks);
        dsv4_status st = is_indexer ? dsv4_kv_ikey_encode(&f.kf, x + (size_t)e * dim, want + off_codes,
                                                          want + off_scales, &err)
                                    : dsv4_kv_entry_encode(&f.ef, x + (size_t)e * dim, want + off_main, &err);
        CHECK(st == DSV4_OK, "CPU encode of a fake-quant entry failed: %s", err.msg); /* a test bug */
    }
    uint16_t *xb = bf16_of(x, (size_t)n_emit * dim);
    uint16_t *d_x = dup_to_dev(xb, 2 * (size_t)n_emit * dim);
    int32_t *d_slot = dup_to_dev(e_slot, 4 * (size_t)n_emit), *d_w = dup_to_dev(e_w, 4 * (size_t)n_emit);
    CU(dsv4_glue_store_entries(ctx, &f.k, d_x, n_emit, d_slot, d_w, is_indexer, &err));
    uint8_t *got = xmalloc((size_t)f.n_blocks * f.k.block_bytes);
    from_dev(got, f.k.blocks, (size_t)f.n_blocks * f.k.block_bytes);
    long at = first_diff(got, want, (size_t)f.n_blocks * f.k.block_bytes);
    CHECK(at < 0, "store %s nope=%d ik=%d epb=%d: block arena differs from the CPU encoder at byte %ld "
          "(block %ld, offset %ld): got %02x want %02x (EXACT)", is_indexer ? "indexer" : "main", nope, ik_dim,
          epb, at, at / (long)f.k.block_bytes, at % (long)f.k.block_bytes, at >= 0 ? got[at] : 0,
          at >= 0 ? want[at] : 0);
    free(e_slot); free(e_w); free(perm); free(x); free(want); free(xb); free(got);
    kv_free(&f);
    dev_free_all();
}

static void test_store_entries(void) {
    store_case(448, 64, 128, 32, 50, 0);  /* V4 shapes: head_dim 512, index_head_dim 128, 128 tokens / ratio 4 */
    store_case(448, 64, 128, 32, 50, 1);
    store_case(64, 16, 32, 2, 7, 0);      /* tiny: 2 entries per block, every entry near a block boundary */
    store_case(64, 16, 32, 2, 7, 1);
    store_case(64, 16, 32, 4, 0, 0);      /* nothing to store */
}

/* Window ring write: the last min(n, window) fresh rows of each live sequence at slot p mod window;
 * EXACT against dsv4_kv_entry_quantize (what the CPU forward stores; equal to encode on fake-quant rows). */
static void ring_write_case(int nope, int rope, int window, const seq_spec *q, int n_seq) {
    kv_fixture f;
    kv_make(&f, nope, rope, 32, window, 4, 4, 4, 2);
    step_fixture s;
    uint8_t *want = xmalloc((size_t)f.n_slots * f.k.slot_bytes);
    memcpy(want, f.slots, (size_t)f.n_slots * f.k.slot_bytes);
    kv_upload(&f);
    step_make(&s, q, n_seq);
    const int hd = nope + rope;
    float *x = xmalloc(sizeof(float) * (size_t)s.rows * hd);
    for (int r = 0; r < s.rows; r++) fq_entry(&f.ef, x + (size_t)r * hd, r % 7 == 2);
    for (int i = 0; i < n_seq; i++) {
        if (q[i].slot < 0) continue;
        for (int j = q[i].n > window ? q[i].n - window : 0; j < q[i].n; j++) {
            uint8_t *rec = ring_rec(&f, q[i].slot, q[i].P + j);
            dsv4_kv_entry_quantize(&f.ef, x + (size_t)(s.srow0[i] + j) * hd, want + (rec - f.slots));
        }
    }
    uint16_t *xb = bf16_of(x, (size_t)s.rows * hd);
    uint16_t *d_x = dup_to_dev(xb, 2 * (size_t)s.rows * hd);
    CU(dsv4_glue_ring_write(ctx, &s.d, &f.k, d_x, &err));
    uint8_t *got = xmalloc((size_t)f.n_slots * f.k.slot_bytes);
    from_dev(got, f.k.slots, (size_t)f.n_slots * f.k.slot_bytes);
    long at = first_diff(got, want, (size_t)f.n_slots * f.k.slot_bytes);
    CHECK(at < 0, "ring write window=%d: slot arena differs at byte %ld (slot %ld, offset %ld) (EXACT)", window, at,
          at / (long)f.k.slot_bytes, at % (long)f.k.slot_bytes);
    free(want); free(x); free(xb); free(got);
    step_free(&s);
    kv_free(&f);
    dev_free_all();
}

static void test_ring_write(void) {
    /* decode rows at the ring wrap (p = window-1, window, 2·window), a padding sequence, a first token */
    const seq_spec dec[] = {{0, 7, 1}, {1, 8, 1}, {-1, 5, 1}, {2, 16, 1}, {3, 0, 1}};
    ring_write_case(64, 16, 8, dec, 5);
    /* prefill longer than the window (only the last 8 rows land), one that wraps, one mid-ring */
    const seq_spec pre[] = {{2, 0, 21}, {0, 5, 6}, {1, 3, 2}, {-1, 0, 9}};
    ring_write_case(64, 16, 8, pre, 4);
    const seq_spec flash[] = {{1, 127, 3}, {0, 1000, 1}, {3, 0, 130}};
    ring_write_case(448, 64, 128, flash, 3); /* V4: window 128, head_dim 512 */
    const seq_spec none[] = {{0, 4, 0}};
    ring_write_case(64, 16, 8, none, 1);     /* a sequence with no new token */
}

/* Ring decode: every record of each live sequence's ring, EXACT against dsv4_kv_entry_decode (BF16-exact
 * values); a padding sequence's rows stay untouched. */
static void ring_decode_case(int nope, int rope, int window, const seq_spec *q, int n_seq) {
    kv_fixture f;
    kv_make(&f, nope, rope, 32, window, 4, 4, 4, 2);
    const int hd = nope + rope;
    float *x = xmalloc(sizeof(float) * hd);
    for (int sl = 0; sl < f.n_slots; sl++)
        for (int p = 0; p < window; p++) {
            fq_entry(&f.ef, x, p % 5 == 1);
            dsv4_kv_entry_quantize(&f.ef, x, ring_rec(&f, sl, p));
        }
    kv_upload(&f);
    step_fixture s;
    step_make(&s, q, n_seq);
    size_t n_out = (size_t)n_seq * window * hd;
    uint16_t *d_out = dalloc(2 * n_out), *got = xmalloc(2 * n_out);
    CU(dsv4_glue_ring_decode(ctx, &s.d, &f.k, d_out, &err));
    from_dev(got, d_out, 2 * n_out);
    size_t bad = 0;
    for (int i = 0; i < n_seq; i++)
        for (int j = 0; j < window; j++) {
            const uint16_t *g = got + ((size_t)i * window + j) * hd;
            if (q[i].slot < 0) {
                for (int c = 0; c < hd; c++) bad += g[c] != 0xffff;
                continue;
            }
            dsv4_kv_entry_decode(&f.ef, ring_rec(&f, q[i].slot, j), x);
            for (int c = 0; c < hd; c++) bad += g[c] != dsv4_f32_to_bf16(x[c]);
        }
    CHECK(bad == 0, "ring decode window=%d: %zu values differ from dsv4_kv_entry_decode (EXACT)", window, bad);
    free(x); free(got);
    step_free(&s);
    kv_free(&f);
    dev_free_all();
}

static void test_ring_decode(void) {
    const seq_spec a[] = {{0, 3, 1}, {-1, 0, 1}, {3, 40, 2}};
    ring_decode_case(64, 16, 8, a, 3);
    const seq_spec b[] = {{2, 500, 1}, {1, 0, 5}};
    ring_decode_case(448, 64, 128, b, 2);
}

/* Fills every block entry of every slot with CPU-encoded random entries and indexer keys. */
static void fill_blocks(kv_fixture *f) {
    float *x = xmalloc(sizeof(float) * (size_t)(f->ef.nope + f->ef.rope + f->kf.dim));
    for (int sl = 0; sl < f->n_slots; sl++)
        for (int w = 0; w < f->k.bt_ld * f->k.entries_per_block; w++) {
            fq_entry(&f->ef, x, w % 6 == 5);
            dsv4_kv_entry_quantize(&f->ef, x, main_rec(f, sl, w));
            fq_ikey(&f->kf, x);
            dsv4_kv_ikey_quantize(&f->kf, x, ikey_codes(f, sl, w), ikey_scales(f, sl, w));
        }
    free(x);
}

/* Decode of the visible entries w < min((P+n)/ratio, max_e) of each live sequence (main or indexer keys):
 * EXACT against dsv4_kv_entry_decode / dsv4_kv_ikey_decode; rows past that stay untouched. */
static void decode_entries_case(int nope, int rope, int ik_dim, int ratio, int epb, int max_e, const seq_spec *q,
                                int n_seq, int is_indexer) {
    kv_fixture f;
    kv_make(&f, nope, rope, ik_dim, 8, ratio, epb, 4, 4);
    fill_blocks(&f);
    kv_upload(&f);
    step_fixture s;
    step_make(&s, q, n_seq);
    const int dim = is_indexer ? ik_dim : nope + rope;
    size_t n_out = (size_t)n_seq * max_e * dim;
    uint16_t *d_out = dalloc(2 * n_out), *got = xmalloc(2 * n_out);
    float *x = xmalloc(sizeof(float) * dim);
    CU(dsv4_glue_decode_entries(ctx, &s.d, &f.k, is_indexer, max_e, d_out, &err));
    from_dev(got, d_out, 2 * n_out);
    size_t bad = 0, n_dec = 0;
    for (int i = 0; i < n_seq; i++) {
        int vis = q[i].slot < 0 ? 0 : (q[i].P + q[i].n) / ratio;
        for (int w = 0; w < max_e; w++) {
            const uint16_t *g = got + ((size_t)i * max_e + w) * dim;
            if (w >= vis) {
                for (int c = 0; c < dim; c++) bad += g[c] != 0xffff;
                continue;
            }
            n_dec++;
            if (is_indexer) dsv4_kv_ikey_decode(&f.kf, ikey_codes(&f, q[i].slot, w), ikey_scales(&f, q[i].slot, w), x);
            else dsv4_kv_entry_decode(&f.ef, main_rec(&f, q[i].slot, w), x);
            for (int c = 0; c < dim; c++) bad += g[c] != dsv4_f32_to_bf16(x[c]);
        }
    }
    CHECK(bad == 0, "decode %s entries ratio=%d max_e=%d: %zu of %zu rows' values differ (EXACT)",
          is_indexer ? "indexer" : "main", ratio, max_e, bad, n_dec);
    free(got); free(x);
    step_free(&s);
    kv_free(&f);
    dev_free_all();
}

static void test_decode_entries(void) {
    /* ratio 4: P+n just below / at / past emission boundaries, nothing visible yet (P+n < 4), padding */
    const seq_spec a[] = {{0, 3, 1}, {1, 10, 3}, {-1, 20, 2}, {2, 0, 3}, {3, 17, 14}};
    for (int ix = 0; ix <= 1; ix++) decode_entries_case(64, 16, 32, 4, 2, 8, a, 5, ix);
    /* max_e below the visible count clips; V4 shapes */
    const seq_spec b[] = {{1, 120, 9}, {0, 2, 200}};
    for (int ix = 0; ix <= 1; ix++) decode_entries_case(448, 64, 128, 4, 32, 40, b, 2, ix);
    /* HCA ratio 128 (1 entry per block of 128 tokens) */
    const seq_spec c[] = {{2, 127, 1}, {3, 300, 1}, {1, 0, 255}};
    decode_entries_case(448, 64, 128, 128, 1, 4, c, 3, 0);
}

/* Decode of the indexer's picks sel [rows, topk] (-1 = none): EXACT; -1 picks and padding rows untouched. */
static void decode_selected_case(int nope, int rope, int ratio, int epb, int topk, const seq_spec *q, int n_seq) {
    kv_fixture f;
    kv_make(&f, nope, rope, 32, 8, ratio, epb, 4, 4);
    fill_blocks(&f);
    kv_upload(&f);
    step_fixture s;
    step_make(&s, q, n_seq);
    const int hd = nope + rope;
    int32_t *sel = xmalloc(4 * (size_t)s.rows * topk);
    for (int r = 0; r < s.rows; r++) {
        int vis = (s.pos[r] + 1) / ratio;
        for (int j = 0; j < topk; j++) sel[(size_t)r * topk + j] = j < vis && rand_int(5) ? rand_int(vis) : -1;
    }
    int32_t *d_sel = dup_to_dev(sel, 4 * (size_t)s.rows * topk);
    size_t n_out = (size_t)s.rows * topk * hd;
    uint16_t *d_out = dalloc(2 * n_out), *got = xmalloc(2 * n_out);
    float *x = xmalloc(sizeof(float) * hd);
    CU(dsv4_glue_decode_selected(ctx, &s.d, &f.k, d_sel, topk, d_out, &err));
    from_dev(got, d_out, 2 * n_out);
    size_t bad = 0;
    for (int r = 0; r < s.rows; r++) {
        int slot = s.sslot[s.rseq[r]];
        for (int j = 0; j < topk; j++) {
            const uint16_t *g = got + ((size_t)r * topk + j) * hd;
            int w = sel[(size_t)r * topk + j];
            if (slot < 0 || w < 0) {
                for (int c = 0; c < hd; c++) bad += g[c] != 0xffff;
                continue;
            }
            dsv4_kv_entry_decode(&f.ef, main_rec(&f, slot, w), x);
            for (int c = 0; c < hd; c++) bad += g[c] != dsv4_f32_to_bf16(x[c]);
        }
    }
    CHECK(bad == 0, "decode selected topk=%d: %zu values differ (EXACT)", topk, bad);
    free(sel); free(got); free(x);
    step_free(&s);
    kv_free(&f);
    dev_free_all();
}

static void test_decode_selected(void) {
    const seq_spec a[] = {{0, 3, 1}, {-1, 12, 2}, {1, 9, 6}, {3, 0, 2}};
    decode_selected_case(64, 16, 4, 2, 4, a, 4);
    const seq_spec b[] = {{2, 400, 2}};
    decode_selected_case(448, 64, 4, 32, 64, b, 1);
}

/* ==== compressor tail state (cuda_compressor_state.h) vs kv_cmp_state.c ================================== */

/* One step of a compressor of ratio r over the given sequences (distinct slots or -1), from a random tail
 * state (what earlier steps left). Phase 1 must give, for each sequence's k-th emission slot, the k-th window
 * dsv4_kv_cmp_push emits over the sequence's tokens (scores = projection + ape, one FP32 add as the CPU),
 * e_slot / e_w / e_pos, and for slots where no window completes e_slot = -1 with values 0, scores -inf;
 * phase 2 the state the pushes leave. All EXACT (values are moved; the one add is the same FP32 add). */
static void cmp_case(int r, int d, int overlap, const seq_spec *q, int n_seq, int n_slots_arena) {
    const int W = (overlap ? 2 : 1) * d, ns = overlap ? 2 * r : r;
    dsv4_glue_kv k;
    memset(&k, 0, sizeof k);
    dsv4_glue_cmp c = {r, d, overlap, W, 0, 0, 0, 0, NULL, NULL, NULL};
    c.kv_prev_off = 64;
    c.sc_prev_off = c.kv_prev_off + (size_t)r * d * 4;
    c.kv_cur_off = c.sc_prev_off + (size_t)r * d * 4;
    c.sc_cur_off = c.kv_cur_off + (size_t)r * W * 4;
    k.slot_bytes = (c.sc_cur_off + (size_t)r * W * 4 + 64 + 255) / 256 * 256;
    size_t arena = (size_t)n_slots_arena * k.slot_bytes;
    uint8_t *slots = xmalloc(arena);
    rand_bytes(slots, arena); /* bytes outside the state regions must stay as they are */
    for (int sl = 0; sl < n_slots_arena; sl++) {
        float *st = (float *)(void *)(slots + (size_t)sl * k.slot_bytes + c.kv_prev_off);
        size_t n = (c.sc_cur_off + (size_t)r * W * 4 - c.kv_prev_off) / 4;
        for (size_t i = 0; i < n; i++) st[i] = (float)test_rng_normal(&rng);
    }
    k.slots = dup_to_dev(slots, arena);
    step_fixture s;
    step_make(&s, q, n_seq);
    float *pkv = xmalloc(sizeof(float) * (size_t)s.rows * W), *psc = xmalloc(sizeof(float) * (size_t)s.rows * W);
    float *ape = xmalloc(sizeof(float) * (size_t)r * W);
    for (size_t i = 0; i < (size_t)s.rows * W; i++) { pkv[i] = (float)test_rng_normal(&rng); psc[i] = (float)test_rng_normal(&rng); }
    for (size_t i = 0; i < (size_t)r * W; i++) ape[i] = (float)test_rng_normal(&rng);
    c.proj_kv = dup_to_dev(pkv, sizeof(float) * (size_t)s.rows * W);
    c.proj_sc = dup_to_dev(psc, sizeof(float) * (size_t)s.rows * W);
    c.ape = dup_to_dev(ape, sizeof(float) * (size_t)r * W);

    int n_emit = dsv4_glue_n_emit(s.sn, n_seq, r), want_emit = 0;
    for (int i = 0; i < n_seq; i++) want_emit += (q[i].n + r - 1) / r;
    CHECK(n_emit == want_emit, "n_emit %d, want Σ ceil(n/r) = %d (EXACT)", n_emit, want_emit);
    size_t nv = (size_t)(n_emit ? n_emit : 1) * ns * d;
    float *d_v = dalloc(4 * nv), *d_s = dalloc(4 * nv);
    int32_t *d_es = dalloc_p(4 * (size_t)(n_emit + 1), 0x5a), *d_ew = dalloc_p(4 * (size_t)(n_emit + 1), 0x5a);
    int32_t *d_ep = dalloc_p(4 * (size_t)(n_emit + 1), 0x5a);
    CU(dsv4_glue_cmp_gather(ctx, &s.d, &k, &c, n_emit, d_v, d_s, d_es, d_ew, d_ep, &err));
    float *gv = xmalloc(4 * nv), *gs = xmalloc(4 * nv);
    int32_t *ges = xmalloc(4 * (size_t)(n_emit + 1)), *gew = xmalloc(4 * (size_t)(n_emit + 1));
    int32_t *gep = xmalloc(4 * (size_t)(n_emit + 1));
    from_dev(gv, d_v, 4 * (size_t)n_emit * ns * d);
    from_dev(gs, d_s, 4 * (size_t)n_emit * ns * d);
    from_dev(ges, d_es, 4 * (size_t)n_emit);
    from_dev(gew, d_ew, 4 * (size_t)n_emit);
    from_dev(gep, d_ep, 4 * (size_t)n_emit);
    CU(dsv4_glue_cmp_update(ctx, &s.d, &k, &c, &err));
    uint8_t *got = xmalloc(arena);
    from_dev(got, k.slots, arena);

    /* the CPU twin, token by token, on the host copy of the arena */
    float *wv = xmalloc(sizeof(float) * (size_t)ns * d), *wsc = xmalloc(sizeof(float) * (size_t)ns * d);
    float *sc = xmalloc(sizeof(float) * W);
    size_t bad_meta = 0, bad_val = 0;
    int e0 = 0;
    for (int i = 0; i < n_seq; i++) {
        const int slots_i = (q[i].n + r - 1) / r, P = q[i].P;
        int k_emit = 0;
        if (q[i].slot >= 0) {
            uint8_t *sb = slots + (size_t)q[i].slot * k.slot_bytes;
            dsv4_kv_cmp_view v = {r, d, overlap, overlap ? (float *)(void *)(sb + c.kv_prev_off) : NULL,
                                  overlap ? (float *)(void *)(sb + c.sc_prev_off) : NULL,
                                  (float *)(void *)(sb + c.kv_cur_off), (float *)(void *)(sb + c.sc_cur_off)};
            for (int j = 0; j < q[i].n; j++) {
                const long t = P + j, row = s.srow0[i] + j;
                for (int col = 0; col < W; col++) sc[col] = psc[row * W + col] + ape[(t % r) * W + col];
                if (!dsv4_kv_cmp_push(&v, t, pkv + row * W, sc, wv, wsc)) continue;
                const int e = e0 + k_emit++;
                bad_meta += ges[e] != q[i].slot || gew[e] != t / r || gep[e] != (t / r) * r;
                for (int m = 0; m < ns * d; m++)
                    bad_val += memcmp(&gv[(size_t)e * ns * d + m], &wv[m], 4) || memcmp(&gs[(size_t)e * ns * d + m], &wsc[m], 4);
            }
        }
        for (int kk = k_emit; kk < slots_i; kk++) { /* no window completes there */
            const int e = e0 + kk;
            bad_meta += ges[e] != -1 || gew[e] != P / r + kk || gep[e] != 0;
            for (int m = 0; m < ns * d; m++)
                bad_val += gv[(size_t)e * ns * d + m] != 0.0f || gs[(size_t)e * ns * d + m] != -INFINITY;
        }
        e0 += slots_i;
    }
    CHECK(bad_meta == 0, "cmp gather r=%d overlap=%d: %zu emission slots with wrong e_slot/e_w/e_pos (EXACT)", r,
          overlap, bad_meta);
    CHECK(bad_val == 0, "cmp gather r=%d overlap=%d: %zu window values differ from dsv4_kv_cmp_push (EXACT)", r,
          overlap, bad_val);
    long at = first_diff(got, slots, arena);
    CHECK(at < 0, "cmp update r=%d overlap=%d: slot arena differs from the CPU rule at byte %ld (slot %ld, offset "
          "%ld) (EXACT)", r, overlap, at, at / (long)k.slot_bytes, at % (long)k.slot_bytes);
    free(slots); free(pkv); free(psc); free(ape); free(gv); free(gs); free(ges); free(gew); free(gep); free(got);
    free(wv); free(wsc); free(sc);
    step_free(&s);
    dev_free_all();
}

static void test_compressor_state(void) {
    /* CSA (ratio 4, overlap): decode rows that complete a window (P = 3, 7), that do not (P = 5), the very
     * first window (P = 3: previous window empty), a padding sequence; prefill from 0 and from mid-window */
    const seq_spec dec[] = {{0, 3, 1}, {1, 5, 1}, {2, 7, 1}, {-1, 11, 1}, {3, 0, 1}};
    cmp_case(4, 32, 1, dec, 5, 4);
    const seq_spec pre[] = {{1, 0, 17}, {0, 6, 9}, {2, 13, 3}, {-1, 0, 8}};
    cmp_case(4, 32, 1, pre, 4, 3);
    cmp_case(4, 128, 1, pre, 4, 3); /* V4 indexer compressor width (d = 128) */
    /* HCA (no overlap): ratio 8, and ratio 128 where a chunk shorter than r may or may not complete one */
    const seq_spec h8[] = {{0, 7, 1}, {1, 0, 8}, {2, 9, 30}, {3, 1, 2}};
    cmp_case(8, 16, 0, h8, 4, 4);
    const seq_spec h128[] = {{0, 127, 1}, {1, 100, 40}, {2, 0, 300}, {-1, 127, 1}};
    cmp_case(128, 8, 0, h128, 4, 3);
    const seq_spec empty[] = {{0, 4, 0}};
    cmp_case(4, 32, 1, empty, 1, 1); /* no token: no emission slot, state unchanged */
}

/* ==== index lists (cuda_index_lists.h) vs forward_cpu.c attend_sequence's visibility rule ================ */

/* The CPU's list for row r in staging-row form (forward_cpu.c attend_sequence): window positions
 * max(0, t-win+1) .. t oldest first — a fresh row of this step when p >= P, else the ring record of p —
 * then the compressed entries: HCA w < (t+1)/ratio, CSA the indexer's picks j < min(n_comp, (t+1)/ratio)
 * that are >= 0. Returns its length. */
static int cpu_list(const step_fixture *s, int r, int window, int ring_base, int kind, int ratio, int comp_base,
                    int n_comp, const int32_t *sel, int32_t *out) {
    const int sq = s->rseq[r];
    if (s->sslot[sq] < 0) return 0;
    const int t = s->pos[r], P = s->spos0[sq], row0 = s->srow0[sq];
    int n = 0;
    for (int p = t - window + 1 < 0 ? 0 : t - window + 1; p <= t; p++)
        out[n++] = p >= P ? row0 + (p - P) : ring_base + sq * window + p % window;
    if (!kind) return n;
    int n_vis = (t + 1) / ratio < n_comp ? (t + 1) / ratio : n_comp;
    for (int j = 0; j < n_vis; j++) {
        if (kind == 2) out[n++] = comp_base + sq * n_comp + j;
        else if (sel[(size_t)r * n_comp + j] >= 0) out[n++] = comp_base + r * n_comp + j;
    }
    return n;
}

/* The device list, with its -1 holes (positions before 0, picks of none) dropped, must be the CPU's list;
 * n_live = window + min(n_comp, (t+1)/ratio) (0 for padding); past n_live untouched (full = 0) or -1
 * (full = 1). All EXACT (integers). csa_meta on the same step: n_keys = (t+1)/ratio, key_start = s·max_e. */
static void idx_case(int window, int kind, int ratio, int n_comp, const seq_spec *q, int n_seq, int full) {
    step_fixture s;
    step_make(&s, q, n_seq);
    const int K = window + n_comp, ring_base = s.rows + 3, comp_base = ring_base + n_seq * window + 5;
    int32_t *sel = xmalloc(4 * (size_t)(s.rows ? s.rows : 1) * (n_comp ? n_comp : 1));
    for (int r = 0; r < s.rows; r++) {
        int vis = (s.pos[r] + 1) / (ratio ? ratio : 1);
        for (int j = 0; j < n_comp; j++) sel[(size_t)r * n_comp + j] = j < vis && rand_int(6) ? rand_int(vis) : -1;
    }
    int32_t *d_sel = kind == 1 ? dup_to_dev(sel, 4 * (size_t)s.rows * n_comp) : NULL;
    int32_t *d_idx = dalloc_p(4 * (size_t)s.rows * K, 0x5a), *d_live = dalloc_p(4 * (size_t)s.rows, 0x5a);
    CU(dsv4_glue_build_idx(ctx, &s.d, window, ring_base, kind, ratio ? ratio : 1, comp_base, n_comp, d_sel, d_idx,
                           d_live, full, &err));
    int32_t *idx = xmalloc(4 * (size_t)s.rows * K + 4), *live = xmalloc(4 * (size_t)s.rows + 4);
    int32_t *want = xmalloc(4 * (size_t)K);
    from_dev(idx, d_idx, 4 * (size_t)s.rows * K);
    from_dev(live, d_live, 4 * (size_t)s.rows);
    size_t bad = 0;
    for (int r = 0; r < s.rows; r++) {
        int n_want = cpu_list(&s, r, window, ring_base, kind, ratio, comp_base, n_comp, sel, want);
        const int sq = s.rseq[r], t = s.pos[r];
        const int vis = kind ? ((t + 1) / ratio < n_comp ? (t + 1) / ratio : n_comp) : 0;
        const int L = s.sslot[sq] < 0 ? 0 : window + vis;
        int ok = live[r] == L, m = 0;
        for (int j = 0; j < L && ok; j++) {
            int v = idx[(size_t)r * K + j];
            if (v == -1) continue;
            ok = m < n_want && v == want[m];
            m++;
        }
        ok = ok && m == n_want;
        for (int j = L; j < K && ok; j++) ok = idx[(size_t)r * K + j] == (full ? -1 : 0x5a5a5a5a);
        if (!ok && bad < 3)
            fprintf(stderr, "  row %d (t=%d, seq %d): n_live %d want %d; list differs from the CPU's\n", r, t, sq,
                    live[r], L);
        bad += !ok;
    }
    CHECK(bad == 0, "build_idx window=%d kind=%d ratio=%d n_comp=%d full=%d: %zu rows differ (EXACT)", window, kind,
          ratio, n_comp, full, bad);
    if (kind) { /* csa_meta over the same step */
        const int max_e = 37;
        int32_t *d_nk = dalloc_p(4 * (size_t)s.rows, 0x5a), *d_ks = dalloc_p(4 * (size_t)s.rows, 0x5a);
        CU(dsv4_glue_csa_meta(ctx, &s.d, ratio, max_e, d_nk, d_ks, &err));
        int32_t *nk = xmalloc(4 * (size_t)s.rows + 4), *ks = xmalloc(4 * (size_t)s.rows + 4);
        from_dev(nk, d_nk, 4 * (size_t)s.rows);
        from_dev(ks, d_ks, 4 * (size_t)s.rows);
        size_t bm = 0;
        for (int r = 0; r < s.rows; r++) {
            int live_r = s.sslot[s.rseq[r]] >= 0;
            bm += nk[r] != (live_r ? (s.pos[r] + 1) / ratio : 0) || ks[r] != (live_r ? s.rseq[r] * max_e : 0);
        }
        CHECK(bm == 0, "csa_meta ratio=%d: %zu rows differ (EXACT)", ratio, bm);
        free(nk); free(ks);
    }
    free(sel); free(idx); free(live); free(want);
    step_free(&s);
    dev_free_all();
}

static void test_index_lists(void) {
    /* window boundary: t < window-1 (holes before position 0), t = window-1, t >= window (ring records);
     * prefill longer than the window (fresh rows only); padding; emission boundaries for the compressed part */
    const seq_spec a[] = {{0, 0, 3}, {1, 6, 1}, {2, 7, 1}, {-1, 3, 2}, {3, 20, 12}, {4, 2, 1}};
    for (int full = 0; full <= 1; full++) {
        idx_case(8, 0, 0, 0, a, 6, full);   /* SWA */
        idx_case(8, 2, 4, 9, a, 6, full);   /* HCA-like, n_comp caps the visible count for late rows */
        idx_case(8, 1, 4, 4, a, 6, full);   /* CSA, top-k 4 */
    }
    const seq_spec flash[] = {{0, 1000, 1}, {1, 126, 4}, {2, 0, 200}};
    idx_case(128, 1, 4, 512, flash, 3, 0);  /* V4: window 128, top-k 512 */
    idx_case(128, 2, 128, 64, flash, 3, 0); /* V4 HCA ratio 128 */
    const seq_spec none[] = {{0, 5, 0}};
    idx_case(8, 1, 4, 4, none, 1, 0);       /* no rows: nothing launched */
}

/* Greedy advance: EXACT (integers) against the obvious host loop; the history row is written only while
 * *ctr < cap. */
static void advance_case(int n, int ctr0, int cap) {
    int32_t *am = xmalloc(4 * (size_t)n), *pos = xmalloc(4 * (size_t)n), *sp = xmalloc(4 * (size_t)n);
    for (int i = 0; i < n; i++) { am[i] = rand_int(100000); pos[i] = rand_int(5000); sp[i] = pos[i] - rand_int(3); }
    int32_t *d_am = dup_to_dev(am, 4 * (size_t)n), *d_pos = dup_to_dev(pos, 4 * (size_t)n);
    int32_t *d_sp = dup_to_dev(sp, 4 * (size_t)n), *d_tok = dalloc_p(4 * (size_t)n, 0x5a);
    int32_t *d_hist = dalloc_p(4 * (size_t)n * cap, 0x5a), *d_ctr = dup_to_dev(&ctr0, 4);
    CU(dsv4_glue_advance(ctx, d_am, n, d_tok, d_pos, d_sp, d_hist, d_ctr, cap, &err));
    int32_t *tok = xmalloc(4 * (size_t)n), *gpos = xmalloc(4 * (size_t)n), *gsp = xmalloc(4 * (size_t)n);
    int32_t *hist = xmalloc(4 * (size_t)n * cap), ctr = 0;
    from_dev(tok, d_tok, 4 * (size_t)n);
    from_dev(gpos, d_pos, 4 * (size_t)n);
    from_dev(gsp, d_sp, 4 * (size_t)n);
    from_dev(hist, d_hist, 4 * (size_t)n * cap);
    from_dev(&ctr, d_ctr, 4);
    size_t bad = ctr != ctr0 + 1;
    for (int i = 0; i < n; i++) bad += tok[i] != am[i] || gpos[i] != pos[i] + 1 || gsp[i] != sp[i] + 1;
    for (int c = 0; c < cap; c++)
        for (int i = 0; i < n; i++) bad += hist[(size_t)c * n + i] != (c == ctr0 ? am[i] : 0x5a5a5a5a);
    CHECK(bad == 0, "advance n=%d ctr=%d cap=%d: %zu values differ (EXACT)", n, ctr0, cap, bad);
    free(am); free(pos); free(sp); free(tok); free(gpos); free(gsp); free(hist);
    dev_free_all();
}

static void test_advance(void) {
    advance_case(1, 0, 4);
    advance_case(300, 2, 4);  /* more sequences than threads of the block */
    advance_case(5, 4, 4);    /* history full: counter still advances, nothing written */
}

/* ==== routed experts per pair (cuda_moe_pairs.h) ========================================================== */

static uint8_t rand_e4m3(void) { /* any finite code (0x7f, 0xff are NaN) */
    uint8_t c;
    do c = (uint8_t)test_rng_u64(&rng); while ((c & 0x7f) == 0x7f);
    return c;
}

/* moe_expert against the CPU linears on the same act-quantized row: the "CUDA linear" bound of
 * docs/NUMERICS.md, |y_gpu − y_cpu| ≤ 2^-7·|y_cpu| + 2^-11·S with S = Σ_k |x̂_k·ŵ_k| (the same exact products
 * and per-block scaling; only the FP32 order inside a block and of the lane fold differs). Pairs whose expert
 * another rank holds must be exactly 0 (EXACT). */
static void moe_expert_case(int K, int N, int E, int e0, int ne, int rows, int k, int in_div, int fp4) {
    const int pairs = rows * k, xrows = (pairs + in_div - 1) / in_div;
    float *x = xmalloc(sizeof(float) * (size_t)xrows * K);
    test_fill_bf16(&rng, x, (size_t)xrows * K, 1.0);
    uint8_t *xq = xmalloc((size_t)xrows * K), *xs = xmalloc((size_t)xrows * (K / 128));
    for (int r = 0; r < xrows; r++) dsv4_cpu_act_quant_fp8(x + (size_t)r * K, (size_t)K, 128, xq + (size_t)r * K,
                                                           xs + (size_t)r * (K / 128));
    const size_t w_stride = fp4 ? (size_t)N * K / 2 : (size_t)N * K;
    const size_t s_stride = fp4 ? (size_t)N * (K / 32) : (size_t)((N + 127) / 128) * (K / 128);
    uint8_t *w = xmalloc(w_stride * ne), *sc = xmalloc(s_stride * ne);
    for (size_t i = 0; i < w_stride * ne; i++) w[i] = fp4 ? (uint8_t)test_rng_u64(&rng) : rand_e4m3();
    for (size_t i = 0; i < s_stride * ne; i++) sc[i] = (uint8_t)(120 + rand_int(12));
    int32_t *ex = xmalloc(4 * (size_t)pairs);
    for (int p = 0; p < pairs; p++) ex[p] = rand_int(E);
    uint8_t *d_xq = dup_to_dev(xq, (size_t)xrows * K), *d_xs = dup_to_dev(xs, (size_t)xrows * (K / 128));
    uint8_t *d_w = dup_to_dev(w, w_stride * ne), *d_s = dup_to_dev(sc, s_stride * ne);
    int32_t *d_ex = dup_to_dev(ex, 4 * (size_t)pairs);
    uint16_t *d_y = dalloc(2 * (size_t)pairs * N), *y = xmalloc(2 * (size_t)pairs * N);
    CU(dsv4_glue_moe_expert(ctx, d_xq, d_xs, K, in_div, d_ex, e0, ne, pairs, d_w, d_s, w_stride, s_stride, fp4, N,
                            d_y, &err));
    from_dev(y, d_y, 2 * (size_t)pairs * N);
    float *yref = xmalloc(sizeof(float) * N);
    double worst = 0;
    size_t n_diff = 0, bad_zero = 0;
    for (int p = 0; p < pairs; p++) {
        const int e = ex[p] - e0, row = p / in_div;
        if (e < 0 || e >= ne) {
            for (int n = 0; n < N; n++) bad_zero += y[(size_t)p * N + n] != 0;
            continue;
        }
        const uint8_t *we = w + e * w_stride, *se = sc + e * s_stride;
        if (fp4) dsv4_cpu_linear_fp4(NULL, x + (size_t)row * K, 1, K, we, se, N, yref);
        else dsv4_cpu_linear_fp8(NULL, x + (size_t)row * K, 1, K, we, se, N, yref);
        for (int n = 0; n < N; n++) {
            double S = 0;
            for (int kk = 0; kk < K; kk++) {
                double xv = dsv4_e4m3_to_f32(xq[(size_t)row * K + kk]) * dsv4_e8m0_to_f32(xs[(size_t)row * (K / 128) + kk / 128]);
                double wv = fp4 ? dsv4_fp4_unpack(we + (size_t)n * (K / 2), (size_t)kk) * dsv4_e8m0_to_f32(se[(size_t)n * (K / 32) + kk / 32])
                                : dsv4_e4m3_to_f32(we[(size_t)n * K + kk]) *
                                      dsv4_e8m0_to_f32(se[(size_t)(n / 128) * (K / 128) + kk / 128]);
                S += fabs(xv * wv);
            }
            double got = dsv4_bf16_to_f32(y[(size_t)p * N + n]), tol = 0x1p-7 * fabs(yref[n]) + 0x1p-11 * S + 1e-30;
            double r = fabs(got - yref[n]) / tol;
            if (!(r <= worst)) worst = r;
            n_diff += got != yref[n];
        }
    }
    CHECK(bad_zero == 0, "moe_expert: %zu outputs of other ranks' experts are not 0 (EXACT)", bad_zero);
    CHECK(worst <= 1.0, "moe_expert K=%d N=%d fp4=%d: max |d|/tol %.3g (CUDA linear bound, docs/NUMERICS.md)", K, N,
          fp4, worst);
    printf("  moe_expert K=%d N=%d fp4=%d e0=%d ne=%d: %zu/%zu differ from the CPU, max |d|/tol %.3f\n", K, N, fp4,
           e0, ne, n_diff, (size_t)pairs * N, worst);
    free(x); free(xq); free(xs); free(w); free(sc); free(ex); free(y); free(yref);
    dev_free_all();
}

static void test_moe_expert(void) {
    moe_expert_case(256, 96, 8, 0, 8, 3, 2, 2, 0);       /* FP8, N not a multiple of 128 (scale rows) */
    moe_expert_case(256, 96, 8, 0, 8, 3, 2, 2, 1);       /* FP4 */
    moe_expert_case(512, 64, 16, 4, 6, 4, 3, 3, 1);      /* an expert slice [4, 10): other pairs are 0 */
    moe_expert_case(4096, 256, 32, 0, 32, 2, 6, 6, 1);  /* V4 w1/w3: D = 4096, k = 6 (32 experts held) */
    moe_expert_case(2048, 128, 16, 0, 16, 12, 1, 1, 0); /* w2 shape (in_div 1), FP8 */
    moe_expert_case(256, 64, 4, 0, 4, 0, 2, 2, 0);       /* no pairs */
}

/* The combine of forward_cpu.c moe_layer: Σ routed in ascending expert id (stable for repeated ids), FP32,
 * only experts in [e0, e0+ne); full = 1 also adds the shared expert and rounds to BF16. */
static void ref_combine(const uint16_t *ey, const int32_t *ex, int r, int k, int D, int e0, int ne, int d, float *acc) {
    int order[16];
    for (int j = 0; j < k; j++) order[j] = j;
    for (int a = 1; a < k; a++)
        for (int b = a; b > 0 && ex[r * k + order[b]] < ex[r * k + order[b - 1]]; b--) {
            int t = order[b]; order[b] = order[b - 1]; order[b - 1] = t;
        }
    float s = 0.0f;
    for (int j = 0; j < k; j++) {
        int e = ex[r * k + order[j]];
        if (e >= e0 && e < e0 + ne) s += dsv4_bf16_to_f32(ey[((size_t)r * k + order[j]) * D + d]);
    }
    *acc = s;
}

/* combine, partial + finish: EXACT (bits) against the CPU's FP32 additions in the same order. */
static void moe_combine_case(int rows, int k, int D, int E, int e0, int ne) {
    float *f = xmalloc(sizeof(float) * (size_t)(rows ? rows : 1) * k * D);
    test_fill_bf16(&rng, f, (size_t)rows * k * D, 1.0);
    uint16_t *ey = bf16_of(f, (size_t)rows * k * D);
    test_fill_bf16(&rng, f, (size_t)rows * D, 1.0);
    uint16_t *sy = bf16_of(f, (size_t)rows * D);
    int32_t *ex = xmalloc(4 * (size_t)(rows ? rows : 1) * k);
    for (int i = 0; i < rows * k; i++) ex[i] = rand_int(E); /* repeats allowed (hash routing may repeat) */
    uint16_t *d_ey = dup_to_dev(ey, 2 * (size_t)rows * k * D), *d_sy = dup_to_dev(sy, 2 * (size_t)rows * D);
    int32_t *d_ex = dup_to_dev(ex, 4 * (size_t)rows * k);
    uint16_t *d_out = dalloc(2 * (size_t)rows * D), *d_out2 = dalloc(2 * (size_t)rows * D);
    float *d_part = dalloc(4 * (size_t)rows * D), *d_pfull = dalloc(4 * (size_t)rows * D);
    CU(dsv4_glue_moe_combine(ctx, d_ey, d_ex, rows, k, D, d_sy, d_out, &err));
    CU(dsv4_glue_moe_partial(ctx, d_ey, d_ex, rows, k, D, e0, ne, d_part, &err));
    CU(dsv4_glue_moe_partial(ctx, d_ey, d_ex, rows, k, D, 0, E, d_pfull, &err));
    CU(dsv4_glue_moe_finish(ctx, d_pfull, d_sy, (long)rows * D, d_out2, &err));
    uint16_t *out = xmalloc(2 * (size_t)rows * D + 2), *out2 = xmalloc(2 * (size_t)rows * D + 2);
    float *part = xmalloc(4 * (size_t)rows * D + 4);
    from_dev(out, d_out, 2 * (size_t)rows * D);
    from_dev(out2, d_out2, 2 * (size_t)rows * D);
    from_dev(part, d_part, 4 * (size_t)rows * D);
    size_t bad_c = 0, bad_p = 0, bad_f = 0;
    for (int r = 0; r < rows; r++)
        for (int d = 0; d < D; d++) {
            float acc, pacc;
            ref_combine(ey, ex, r, k, D, 0, E, d, &acc);
            ref_combine(ey, ex, r, k, D, e0, ne, d, &pacc);
            uint16_t want = dsv4_f32_to_bf16(acc + dsv4_bf16_to_f32(sy[(size_t)r * D + d]));
            bad_c += out[(size_t)r * D + d] != want;
            bad_f += out2[(size_t)r * D + d] != want;
            bad_p += memcmp(&part[(size_t)r * D + d], &pacc, 4) != 0;
        }
    CHECK(bad_c == 0, "moe_combine rows=%d k=%d: %zu values differ (EXACT)", rows, k, bad_c);
    CHECK(bad_p == 0, "moe_partial [%d, %d): %zu values differ (EXACT)", e0, e0 + ne, bad_p);
    CHECK(bad_f == 0, "moe_partial(all) + moe_finish: %zu values differ from moe_combine's rule (EXACT)", bad_f);
    free(f); free(ey); free(sy); free(ex); free(out); free(out2); free(part);
    dev_free_all();
}

static void test_moe_combine(void) {
    moe_combine_case(5, 6, 4096, 256, 64, 64); /* V4: k = 6, D = 4096, a quarter of the experts on this rank */
    moe_combine_case(3, 16, 300, 20, 0, 7);    /* the largest k the kernel takes, D not a multiple of 256 */
    moe_combine_case(4, 1, 64, 4, 2, 2);
    moe_combine_case(0, 6, 64, 8, 0, 8);       /* no rows */
    dsv4_status st = dsv4_glue_moe_combine(ctx, NULL, NULL, 1, 17, 64, NULL, NULL, &err);
    CHECK(st == DSV4_ERR_INVALID_ARG, "moe_combine with k = 17 must fail with INVALID_ARG, got %s",
          dsv4_status_name(st));
}

/* ==== element-wise and row movement (cuda_elementwise.h) ================================================= */

static void test_fill32(void) {
    const size_t n = 1000;
    uint32_t *d = dalloc(4 * (n + 1)), *h = xmalloc(4 * (n + 1));
    CU(dsv4_glue_fill32(ctx, d, 0xdeadbeefu, n, &err));
    CU(dsv4_glue_fill32(ctx, d + n, 0x12345678u, 0, &err)); /* n_words = 0 writes nothing */
    from_dev(h, d, 4 * (n + 1));
    size_t bad = h[n] != 0xffffffffu;
    for (size_t i = 0; i < n; i++) bad += h[i] != 0xdeadbeefu;
    CHECK(bad == 0, "fill32: %zu words wrong (EXACT)", bad);
    free(h);
    dev_free_all();
}

/* wo_a dequant: EXACT against model.c's rule bf16(e4m3(w) · 2^(s-127)) (one product of two exact values,
 * rounded once), incl. the extreme scale codes 0 (2^-127, subnormal products) and 254 (overflow to inf). */
static void test_dequant(void) {
    const int out = 200, in = 384, sr = (out + 127) / 128, sc = in / 128;
    uint8_t *w = xmalloc((size_t)out * in), *s = xmalloc((size_t)sr * sc);
    for (int i = 0; i < out * in; i++) w[i] = rand_e4m3();
    for (int i = 0; i < sr * sc; i++) s[i] = (uint8_t)(100 + rand_int(55));
    s[0] = 0;
    s[sr * sc - 1] = 254;
    uint8_t *d_w = dup_to_dev(w, (size_t)out * in), *d_s = dup_to_dev(s, (size_t)sr * sc);
    uint16_t *d_y = dalloc(2 * (size_t)out * in), *y = xmalloc(2 * (size_t)out * in);
    CU(dsv4_glue_dequant_fp8_bf16(ctx, d_w, d_s, out, in, d_y, &err));
    from_dev(y, d_y, 2 * (size_t)out * in);
    size_t bad = 0;
    for (int o = 0; o < out; o++)
        for (int c = 0; c < in; c++) {
            float v = dsv4_e4m3_to_f32(w[(size_t)o * in + c]) * dsv4_e8m0_to_f32(s[(o / 128) * sc + c / 128]);
            bad += y[(size_t)o * in + c] != dsv4_f32_to_bf16(v);
        }
    CHECK(bad == 0, "dequant_fp8_bf16: %zu values differ from model.c's rule (EXACT)", bad);
    free(w); free(s); free(y);
    dev_free_all();
}

/* broadcast_hc, scale_bf16, regroup, gather_rows, vocab_interleave: data movement or one correctly rounded
 * FP32 product per element, EXACT. */
static void test_rows(void) {
    const int rows = 5, hc = 4, D = 72;
    float *f = xmalloc(sizeof(float) * 4096);
    test_fill_bf16(&rng, f, (size_t)rows * D, 1.0);
    uint16_t *x = bf16_of(f, (size_t)rows * D), *d_x = dup_to_dev(x, 2 * (size_t)rows * D);
    uint16_t *d_X = dalloc(2 * (size_t)rows * hc * D), *X = xmalloc(2 * (size_t)rows * hc * D);
    CU(dsv4_glue_broadcast_hc(ctx, d_x, rows, hc, D, d_X, &err));
    from_dev(X, d_X, 2 * (size_t)rows * hc * D);
    size_t bad = 0;
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < hc; h++)
            for (int d = 0; d < D; d++) bad += X[((size_t)r * hc + h) * D + d] != x[(size_t)r * D + d];
    CHECK(bad == 0, "broadcast_hc: %zu values differ (EXACT)", bad);

    const long n = 1000; /* not a multiple of the block */
    test_fill_bf16(&rng, f, (size_t)n, 3.0);
    uint16_t *v = bf16_of(f, (size_t)n), *d_v = dup_to_dev(v, 2 * (size_t)n), *gv = xmalloc(2 * (size_t)n);
    const float s = 0.3713f;
    CU(dsv4_glue_scale_bf16(ctx, d_v, n, s, &err));
    from_dev(gv, d_v, 2 * (size_t)n);
    bad = 0;
    for (long i = 0; i < n; i++) bad += gv[i] != dsv4_f32_to_bf16(dsv4_bf16_to_f32(v[i]) * s);
    CHECK(bad == 0, "scale_bf16: %zu values differ from bf16(x·s) (EXACT)", bad);

    const int G = 4, cols = 40, rr = 3;
    test_fill_bf16(&rng, f, (size_t)rr * G * cols, 1.0);
    uint16_t *src = bf16_of(f, (size_t)rr * G * cols), *d_src = dup_to_dev(src, 2 * (size_t)rr * G * cols);
    uint16_t *d_g = dalloc(2 * (size_t)rr * G * cols), *d_back = dalloc(2 * (size_t)rr * G * cols);
    uint16_t *g = xmalloc(2 * (size_t)rr * G * cols), *back = xmalloc(2 * (size_t)rr * G * cols);
    CU(dsv4_glue_regroup(ctx, d_src, d_g, rr, G, cols, 1, &err));
    CU(dsv4_glue_regroup(ctx, d_g, d_back, rr, G, cols, 0, &err));
    from_dev(g, d_g, 2 * (size_t)rr * G * cols);
    from_dev(back, d_back, 2 * (size_t)rr * G * cols);
    bad = 0;
    for (int gg = 0; gg < G; gg++)
        for (int r = 0; r < rr; r++)
            for (int c = 0; c < cols; c++)
                bad += g[((size_t)gg * rr + r) * cols + c] != src[(size_t)r * G * cols + gg * cols + c];
    bad += memcmp(back, src, 2 * (size_t)rr * G * cols) != 0;
    CHECK(bad == 0, "regroup: %zu values differ (split: dst[g][r][c] = src[r][g·cols+c]; join: the inverse) (EXACT)",
          bad);

    const int elems = 70, n_src = 10, n_idx = 13;
    test_fill_bf16(&rng, f, (size_t)n_src * elems, 1.0);
    uint16_t *rsrc = bf16_of(f, (size_t)n_src * elems), *d_rsrc = dup_to_dev(rsrc, 2 * (size_t)n_src * elems);
    int32_t idx[13];
    for (int i = 0; i < n_idx; i++) idx[i] = rand_int(n_src); /* repeats allowed */
    int32_t *d_idx = dup_to_dev(idx, sizeof idx);
    uint16_t *d_dst = dalloc(2 * (size_t)n_idx * elems), *dst = xmalloc(2 * (size_t)n_idx * elems);
    CU(dsv4_glue_gather_rows(ctx, d_rsrc, elems, d_idx, n_idx, d_dst, &err));
    from_dev(dst, d_dst, 2 * (size_t)n_idx * elems);
    bad = 0;
    for (int i = 0; i < n_idx; i++) bad += memcmp(dst + (size_t)i * elems, rsrc + (size_t)idx[i] * elems, 2 * (size_t)elems) != 0;
    CHECK(bad == 0, "gather_rows: %zu rows differ (EXACT)", bad);

    const int world = 3, nr = 4, nv = 50;
    float *all = xmalloc(sizeof(float) * world * nr * nv), *vo = xmalloc(sizeof(float) * world * nr * nv);
    for (int i = 0; i < world * nr * nv; i++) all[i] = (float)test_rng_normal(&rng);
    float *d_all = dup_to_dev(all, sizeof(float) * world * nr * nv), *d_vo = dalloc(sizeof(float) * world * nr * nv);
    CU(dsv4_glue_vocab_interleave(ctx, d_all, world, nr, nv, d_vo, &err));
    from_dev(vo, d_vo, sizeof(float) * world * nr * nv);
    bad = 0;
    for (int i = 0; i < nr; i++)
        for (int rk = 0; rk < world; rk++)
            for (int j = 0; j < nv; j++)
                bad += memcmp(&vo[(size_t)i * world * nv + rk * nv + j], &all[((size_t)rk * nr + i) * nv + j], 4) != 0;
    CHECK(bad == 0, "vocab_interleave: %zu values differ (EXACT)", bad);
    free(f); free(x); free(X); free(v); free(gv); free(src); free(g); free(back); free(rsrc); free(dst); free(all);
    free(vo);
    dev_free_all();
}

/* Vocab-split embedding: the owned rows as FP32 of the BF16 table (EXACT), the others -0.0 (bit pattern
 * 0x80000000, the identity of the all-reduce's addition). Tokens below v0, at v0, at v0+nv-1, past it. */
static void test_embed_part(void) {
    const int nv = 20, D = 300, v0 = 40, rows = 7;
    float *f = xmalloc(sizeof(float) * nv * D);
    test_fill_bf16(&rng, f, (size_t)nv * D, 1.0);
    uint16_t *tab = bf16_of(f, (size_t)nv * D), *d_tab = dup_to_dev(tab, 2 * (size_t)nv * D);
    int32_t tok[7] = {0, 39, 40, 59, 60, 45, 1000};
    int32_t *d_tok = dup_to_dev(tok, sizeof tok);
    float *d_out = dalloc(sizeof(float) * rows * D), *out = xmalloc(sizeof(float) * rows * D);
    CU(dsv4_glue_embed_part(ctx, d_tab, v0, nv, D, d_tok, rows, d_out, &err));
    from_dev(out, d_out, sizeof(float) * rows * D);
    size_t bad = 0;
    for (int r = 0; r < rows; r++) {
        int t = tok[r] - v0, own = t >= 0 && t < nv;
        for (int d = 0; d < D; d++) {
            float want = own ? dsv4_bf16_to_f32(tab[(size_t)t * D + d]) : -0.0f;
            bad += memcmp(&out[(size_t)r * D + d], &want, 4) != 0;
        }
    }
    CHECK(bad == 0, "embed_part: %zu values differ (EXACT, -0.0 for rows of other ranks)", bad);
    free(f); free(tab); free(out);
    dev_free_all();
}

/* Conversions: bf16 -> f32 exact, f32 -> bf16 RNE as dsv4_f32_to_bf16 (EXACT), on normal values, exact ties
 * (low half 0x8000, both parities), subnormals, ±0, values that round to ±inf, ±inf. */
static void test_convert(void) {
    const long n = 100003;
    float *x = xmalloc(sizeof(float) * n);
    for (long i = 0; i < n; i++) {
        uint32_t b = (uint32_t)test_rng_u64(&rng);
        switch (i % 6) {
        case 0: b = (b & 0xffff0000u) | 0x8000u; break;    /* an exact tie */
        case 1: b &= 0x807fffffu; break;                     /* subnormal or zero */
        case 2: b = (b & 0x80000000u) | 0x7f7f8000u | (b & 0x7fffu); break; /* near FLT_MAX: may round to inf */
        default: break;
        }
        if (((b >> 23) & 0xff) == 0xff) b &= 0xff800000u; /* NaN -> inf (NaN payloads are not compared) */
        memcpy(&x[i], &b, 4);
    }
    x[0] = 0.0f; x[1] = -0.0f; x[2] = INFINITY; x[3] = -INFINITY;
    float *d_x = dup_to_dev(x, sizeof(float) * n), *d_back = dalloc(sizeof(float) * n);
    uint16_t *d_b = dalloc(2 * (size_t)n), *b = xmalloc(2 * (size_t)n);
    float *back = xmalloc(sizeof(float) * n);
    CU(dsv4_glue_f32_to_bf16(ctx, d_x, n, d_b, &err));
    CU(dsv4_glue_bf16_to_f32(ctx, d_b, n, d_back, &err));
    from_dev(b, d_b, 2 * (size_t)n);
    from_dev(back, d_back, sizeof(float) * n);
    size_t bad = 0, bad_back = 0;
    for (long i = 0; i < n; i++) {
        bad += b[i] != dsv4_f32_to_bf16(x[i]);
        float want = dsv4_bf16_to_f32(b[i]);
        bad_back += memcmp(&back[i], &want, 4) != 0;
    }
    CHECK(bad == 0, "f32_to_bf16: %zu of %ld differ from dsv4_f32_to_bf16 (EXACT)", bad, n);
    CHECK(bad_back == 0, "bf16_to_f32: %zu of %ld differ (EXACT)", bad_back, n);
    free(x); free(b); free(back);
    dev_free_all();
}

/* ==== cuda_ctx.h: pinned memory, async upload, graph capture and replay, set_device ====================== */

static void test_ctx_graph(void) {
    CU(dsv4_glue_set_device(ctx, &err));
    const size_t n = 4096;
    uint32_t *pin = NULL;
    CU(dsv4_glue_host_alloc(4 * n, (void **)&pin, &err));
    if (!pin) return;
    for (size_t i = 0; i < n; i++) pin[i] = (uint32_t)i * 2654435761u;
    uint32_t *d = dalloc(4 * n), *h = xmalloc(4 * n);
    CU(dsv4_glue_upload_async(ctx, d, pin, 4 * n, &err));
    CU(dsv4_cuda_sync(ctx, &err));
    from_dev(h, d, 4 * n);
    CHECK(memcmp(h, pin, 4 * n) == 0, "upload_async from pinned memory: contents differ (EXACT)");
    /* capture a fill, replay it twice over a cleared buffer */
    void *exec = NULL;
    CU(dsv4_glue_capture_begin(ctx, &err));
    dsv4_status st = dsv4_glue_fill32(ctx, d, 0xabcdef01u, n, &err);
    CU(dsv4_glue_capture_end(ctx, st == DSV4_OK, &exec, &err));
    CHECK(exec != NULL, "capture_end gave no graph");
    for (int rep = 0; rep < 2 && exec; rep++) {
        CU(dsv4_cuda_memset(ctx, d, 0, 4 * n, &err));
        CU(dsv4_glue_graph_launch(ctx, exec, &err));
        from_dev(h, d, 4 * n);
        size_t bad = 0;
        for (size_t i = 0; i < n; i++) bad += h[i] != 0xabcdef01u;
        CHECK(bad == 0, "graph replay %d: %zu words wrong (EXACT)", rep, bad);
    }
    dsv4_glue_graph_destroy(exec);
    /* an aborted capture (ok = 0) gives no graph and leaves the stream usable */
    exec = (void *)1;
    CU(dsv4_glue_capture_begin(ctx, &err));
    (void)dsv4_glue_fill32(ctx, d, 1u, n, &err);
    CU(dsv4_glue_capture_end(ctx, 0, &exec, &err));
    CHECK(exec == NULL, "aborted capture must leave *exec NULL");
    CU(dsv4_glue_fill32(ctx, d, 7u, n, &err));
    from_dev(h, d, 4 * n);
    CHECK(h[0] == 7u && h[n - 1] == 7u, "stream not usable after an aborted capture");
    dsv4_glue_graph_destroy(NULL);
    dsv4_glue_host_free(pin);
    dsv4_glue_host_free(NULL);
    free(h);
    dev_free_all();
}

int main(void) {
    if (dsv4_cuda_device_count() == 0) {
        test_skip("test_cuda_glue", "no CUDA device");
        return test_finish();
    }
    dsv4_status st = dsv4_cuda_ctx_create(0, 0, &ctx, &err);
    if (st != DSV4_OK) {
        char why[600];
        snprintf(why, sizeof why, "no usable CUDA device (%s: %s)", dsv4_status_name(st), err.msg);
        test_skip("test_cuda_glue", why);
        return test_finish();
    }
    char desc[256];
    dsv4_cuda_describe(ctx, desc, sizeof desc);
    printf("device: %s\n", desc);
    test_rng_seed(&rng, 20261205);
    RUN(test_store_entries);
    RUN(test_ring_write);
    RUN(test_ring_decode);
    RUN(test_decode_entries);
    RUN(test_decode_selected);
    RUN(test_compressor_state);
    RUN(test_index_lists);
    RUN(test_advance);
    RUN(test_moe_expert);
    RUN(test_moe_combine);
    RUN(test_fill32);
    RUN(test_dequant);
    RUN(test_rows);
    RUN(test_embed_part);
    RUN(test_convert);
    RUN(test_ctx_graph);
    dsv4_cuda_ctx_destroy(ctx);
    return test_finish();
}
#endif

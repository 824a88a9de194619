/* engine_glue.cu — device kernels of the CUDA forward pass that are not ops of the op library (see
 * engine_glue.h): compact KV storage (store / decode, window ring), compressor tail-state gather/update,
 * attention index lists, routed experts chosen on the device, graphs and pinned memory. Must not allocate
 * device memory or synchronize (graph helpers excepted, which run between steps). */
#include "backend/cuda/engine_glue.h"
#include "backend/cuda/kernels/ops_common.cuh"

#define GLUE_CHECK(err) DSV4_CUDA_CHECK_LAUNCH(err)
#define CST(ctx) ((cudaStream_t)(ctx)->stream)

static unsigned nblk(long n, int t) { return (unsigned)((n + t - 1) / t); }

extern "C" int dsv4_glue_n_emit(const int32_t *sn, int n_seq, int ratio) {
    int n = 0;
    for (int s = 0; s < n_seq; s++) n += (sn[s] + ratio - 1) / ratio;
    return n;
}

/* ==== small element-wise kernels ======================================================================== */

__global__ void fill32_kernel(uint32_t *dst, uint32_t v, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        dst[i] = v;
}

extern "C" dsv4_status dsv4_glue_fill32(dsv4_cuda_ctx *ctx, void *dst, uint32_t pattern, size_t n_words,
                                        dsv4_err *err) {
    if (!n_words) return DSV4_OK;
    size_t b = (n_words + 255) / 256;
    fill32_kernel<<<(unsigned)(b < 65535 ? b : 65535), 256, 0, CST(ctx)>>>((uint32_t *)dst, pattern, n_words);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__device__ __forceinline__ float e4m3_val(uint8_t c) {
    __half_raw hr = __nv_cvt_fp8_to_halfraw((__nv_fp8_storage_t)c, __NV_E4M3);
    return __half2float(__half(hr));
}
__device__ __forceinline__ float e2m1_val(uint8_t c) {
    const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float v = mag[c & 7];
    return (c & 8) ? -v : v;
}
__device__ __forceinline__ uint8_t e2m1_code(float v) { /* v already an e2m1 value */
    float a = fabsf(v);
    uint8_t c = a < 0.25f ? 0 : a < 0.75f ? 1 : a < 1.25f ? 2 : a < 1.75f ? 3 : a < 2.5f ? 4 : a < 3.5f ? 5
              : a < 5.0f ? 6 : 7;
    return (uint8_t)(c | (signbit(v) ? 8 : 0));
}

__global__ void dequant_kernel(const uint8_t *w, const uint8_t *s, int out, int in, uint16_t *y) {
    long n = (long)out * in;
    int sc = (in + 127) / 128;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int o = (int)(i / in), c = (int)(i % in);
        y[i] = f2bf(ldexpf(e4m3_val(w[i]), (int)s[(size_t)(o / 128) * sc + c / 128] - 127));
    }
}

extern "C" dsv4_status dsv4_glue_dequant_fp8_bf16(dsv4_cuda_ctx *ctx, const uint8_t *w, const uint8_t *scale,
                                                  int out, int in, uint16_t *y, dsv4_err *err) {
    long n = (long)out * in;
    dequant_kernel<<<nblk(n < (1L << 24) ? n : (1L << 24), 256), 256, 0, CST(ctx)>>>(w, scale, out, in, y);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void broadcast_kernel(const uint16_t *x, int rows, int hc, int D, uint16_t *X) {
    long n = (long)rows * hc * D;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        long r = i / ((long)hc * D);
        X[i] = x[r * D + i % D];
    }
}

extern "C" dsv4_status dsv4_glue_broadcast_hc(dsv4_cuda_ctx *ctx, const uint16_t *x, int rows, int hc, int D,
                                              uint16_t *X, dsv4_err *err) {
    long n = (long)rows * hc * D;
    if (!n) return DSV4_OK;
    broadcast_kernel<<<nblk(n, 256), 256, 0, CST(ctx)>>>(x, rows, hc, D, X);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void scale_kernel(uint16_t *x, long n, float s) {
    long i = blockIdx.x * (long)blockDim.x + threadIdx.x;
    if (i < n) x[i] = f2bf(__fmul_rn(bf2f(x[i]), s));
}

extern "C" dsv4_status dsv4_glue_scale_bf16(dsv4_cuda_ctx *ctx, uint16_t *x, long n, float s, dsv4_err *err) {
    if (!n) return DSV4_OK;
    scale_kernel<<<nblk(n, 256), 256, 0, CST(ctx)>>>(x, n, s);
    GLUE_CHECK(err);
    return DSV4_OK;
}

/* ==== compressor tail state ============================================================================ */

/* (value, score) of token tok, column col of the compressor's width, from this step's projections when the
 * token is new (tok >= P) or from the tail state at the start of the step. */
struct cmp_src {
    const dsv4_glue_cmp *c;
    const float *kv_prev, *sc_prev, *kv_cur, *sc_cur;
    int P, row0;
};

__device__ __forceinline__ void cmp_get(const cmp_src &q, int tok, int col, float &v, float &s) {
    const dsv4_glue_cmp &c = *q.c;
    const int r = c.ratio, W = c.width;
    if (tok >= q.P) {
        size_t o = (size_t)(q.row0 + tok - q.P) * W + col;
        v = c.proj_kv[o];
        s = __fadd_rn(c.proj_sc[o], c.ape[(size_t)(tok % r) * W + col]);
    } else if (tok / r == q.P / r) {
        v = q.kv_cur[(size_t)(tok % r) * W + col];
        s = q.sc_cur[(size_t)(tok % r) * W + col];
    } else { /* previous window (overlap only; col < d) */
        v = q.kv_prev[(size_t)(tok % r) * c.d + col];
        s = q.sc_prev[(size_t)(tok % r) * c.d + col];
    }
}

__device__ __forceinline__ cmp_src cmp_src_of(const dsv4_glue_cmp &c, const dsv4_glue_kv &kv, int slot, int P,
                                              int row0) {
    cmp_src q;
    q.c = &c;
    const uint8_t *sb = kv.slots + (size_t)slot * kv.slot_bytes;
    q.kv_prev = (const float *)(sb + c.kv_prev_off);
    q.sc_prev = (const float *)(sb + c.sc_prev_off);
    q.kv_cur = (const float *)(sb + c.kv_cur_off);
    q.sc_cur = (const float *)(sb + c.sc_cur_off);
    q.P = P;
    q.row0 = row0;
    return q;
}

__global__ void cmp_gather_kernel(dsv4_glue_step st, dsv4_glue_kv kv, dsv4_glue_cmp c, float *vals,
                                  float *scores, int32_t *e_slot, int32_t *e_w, int32_t *e_pos) {
    const int e = blockIdx.x, r = c.ratio, d = c.d;
    int s = 0, acc = 0;
    for (; s < st.n_seq; s++) {
        int cnt = (st.sn[s] + r - 1) / r;
        if (e < acc + cnt) break;
        acc += cnt;
    }
    const int n_slots = c.overlap ? 2 * r : r;
    float *V = vals + (size_t)e * n_slots * d, *S = scores + (size_t)e * n_slots * d;
    int slot = -1, w = 0;
    if (s < st.n_seq) {
        int P = st.spos0[s], Pend = P + st.sn[s];
        w = P / r + (e - acc);
        if (st.sslot[s] >= 0 && w < Pend / r) slot = st.sslot[s];
    }
    if (threadIdx.x == 0) {
        e_slot[e] = slot;
        e_w[e] = w;
        e_pos[e] = slot >= 0 ? w * r : 0;
    }
    if (slot < 0) {
        for (int i = threadIdx.x; i < n_slots * d; i += blockDim.x) { V[i] = 0.0f; S[i] = -INFINITY; }
        return;
    }
    cmp_src q = cmp_src_of(c, kv, slot, st.spos0[s], st.srow0[s]);
    for (int i = threadIdx.x; i < n_slots * d; i += blockDim.x) {
        int j = i / d, ch = i % d;
        float v, sc;
        if (c.overlap && j < r) {          /* previous window's first half */
            if (w == 0) { v = 0.0f; sc = -INFINITY; }
            else cmp_get(q, (w - 1) * r + j, ch, v, sc);
        } else if (c.overlap) {            /* this window's second half */
            cmp_get(q, w * r + (j - r), d + ch, v, sc);
        } else {
            cmp_get(q, w * r + j, ch, v, sc);
        }
        V[i] = v;
        S[i] = sc;
    }
}

extern "C" dsv4_status dsv4_glue_cmp_gather(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                            const dsv4_glue_cmp *c, int n_emit, float *vals, float *scores,
                                            int32_t *e_slot, int32_t *e_w, int32_t *e_pos, dsv4_err *err) {
    if (!n_emit) return DSV4_OK;
    cmp_gather_kernel<<<n_emit, 256, 0, CST(ctx)>>>(*st, *kv, *c, vals, scores, e_slot, e_w, e_pos);
    GLUE_CHECK(err);
    return DSV4_OK;
}

/* One CTA per (sequence, state row j). A thread owns columns of row j: it reads the old cur value before
 * writing the new one, so the previous-window update (from old cur row j) needs no other thread. */
__global__ void cmp_update_kernel(dsv4_glue_step st, dsv4_glue_kv kv, dsv4_glue_cmp c) {
    const int s = blockIdx.x, j = blockIdx.y, r = c.ratio, W = c.width, d = c.d;
    const int slot = st.sslot[s];
    if (slot < 0) return;
    const int P = st.spos0[s], Pend = P + st.sn[s];
    int tok_last = -1;
    if (Pend - 1 >= j) tok_last = Pend - 1 - ((Pend - 1 - j) % r);
    const bool new_cur = tok_last >= P;
    const bool emitted = c.overlap && Pend / r > P / r;
    const int tokp = (Pend / r - 1) * r + j;
    cmp_src q = cmp_src_of(c, kv, slot, P, st.srow0[s]);
    uint8_t *sb = kv.slots + (size_t)slot * kv.slot_bytes;
    float *kv_cur = (float *)(sb + c.kv_cur_off), *sc_cur = (float *)(sb + c.sc_cur_off);
    float *kv_prev = (float *)(sb + c.kv_prev_off), *sc_prev = (float *)(sb + c.sc_prev_off);
    for (int col = threadIdx.x; col < W; col += blockDim.x) {
        if (emitted && col < d) {
            float v, sc;
            if (tokp >= P) cmp_get(q, tokp, col, v, sc);
            else { v = kv_cur[(size_t)j * W + col]; sc = sc_cur[(size_t)j * W + col]; }
            kv_prev[(size_t)j * d + col] = v;
            sc_prev[(size_t)j * d + col] = sc;
        }
        if (new_cur) {
            float v, sc;
            cmp_get(q, tok_last, col, v, sc);
            kv_cur[(size_t)j * W + col] = v;
            sc_cur[(size_t)j * W + col] = sc;
        }
    }
}

extern "C" dsv4_status dsv4_glue_cmp_update(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                            const dsv4_glue_cmp *c, dsv4_err *err) {
    if (!st->n_seq) return DSV4_OK;
    cmp_update_kernel<<<dim3((unsigned)st->n_seq, (unsigned)c->ratio), 256, 0, CST(ctx)>>>(*st, *kv, *c);
    GLUE_CHECK(err);
    return DSV4_OK;
}

/* ==== compact entries: store and decode ================================================================ */

__device__ __forceinline__ size_t block_of(const dsv4_glue_kv &kv, int slot, int w, int *e_in_block) {
    int b = w / kv.entries_per_block;
    *e_in_block = w % kv.entries_per_block;
    return (size_t)kv.bt[(size_t)slot * kv.bt_ld + b] * kv.block_bytes;
}

/* One warp encodes one main/window record from its fake-quantized bf16 values (kv_codec.h encode rule:
 * the block exponent recomputed from the block max reproduces the values exactly). */
__device__ void encode_entry_warp(const dsv4_glue_kv &kv, const uint16_t *x, uint8_t *dst, int lane) {
    for (int b = 0; b < kv.n_scales; b++) {
        float v0 = bf2f(x[b * 64 + lane]), v1 = bf2f(x[b * 64 + 32 + lane]);
        float amax = warp_max(fmaxf(fabsf(v0), fabsf(v1)));
        int e = pow2_scale_exp(amax, 1e-4f, 1.0f / 448.0f);
        float a = fminf(fmaxf(ldexpf(v0, -e), -448.0f), 448.0f), c = fminf(fmaxf(ldexpf(v1, -e), -448.0f), 448.0f);
        dst[b * 64 + lane] = (uint8_t)__nv_cvt_float_to_fp8(a, __NV_SATFINITE, __NV_E4M3);
        dst[b * 64 + 32 + lane] = (uint8_t)__nv_cvt_float_to_fp8(c, __NV_SATFINITE, __NV_E4M3);
        if (lane == 0) dst[kv.scale_off + b] = (uint8_t)(e + 127);
    }
    uint16_t *rope = (uint16_t *)(dst + kv.rope_off);
    for (int i = lane; i < kv.rope; i += 32) rope[i] = x[kv.nope + i];
    for (int i = kv.nope + lane; i < kv.rope_off; i += 32) dst[i] = 0;
    for (int i = kv.scale_off + kv.n_scales + lane; i < kv.entry_bytes; i += 32) dst[i] = 0;
}

__device__ void decode_entry(const dsv4_glue_kv &kv, const uint8_t *src, uint16_t *y, int t, int nt) {
    for (int i = t; i < kv.nope; i += nt) {
        int e = (int)src[kv.scale_off + i / 64] - 127;
        y[i] = f2bf(ldexpf(e4m3_val(src[i]), e));
    }
    const uint16_t *rope = (const uint16_t *)(src + kv.rope_off);
    for (int i = t; i < kv.rope; i += nt) y[kv.nope + i] = rope[i];
}

__global__ void store_entries_kernel(dsv4_glue_kv kv, const uint16_t *entries, int n_emit, const int32_t *e_slot,
                                     const int32_t *e_w, int is_indexer) {
    const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (warp >= n_emit) return;
    const int slot = e_slot[warp];
    if (slot < 0) return;
    int eb;
    size_t base = block_of(kv, slot, e_w[warp], &eb);
    if (!is_indexer) {
        const uint16_t *x = entries + (size_t)warp * (kv.nope + kv.rope);
        encode_entry_warp(kv, x, kv.blocks + base + kv.main_off + (size_t)eb * kv.entry_bytes, lane);
        return;
    }
    const uint16_t *x = entries + (size_t)warp * kv.ik_dim;
    uint8_t *codes = kv.blocks + base + kv.ikey_off + (size_t)eb * kv.ik_code_bytes;
    uint8_t *scales = kv.blocks + base + kv.ikey_off + kv.ikey_scale_off + (size_t)eb * kv.ik_n_scales;
    for (int b = 0; b < kv.ik_n_scales; b++) {
        float v = bf2f(x[b * 32 + lane]);
        float amax = warp_max(fabsf(v));
        int e = pow2_scale_exp(amax, 6.0f * 0x1p-126f, 1.0f / 6.0f);
        uint8_t code = e2m1_code(e2m1_rne(fminf(fmaxf(ldexpf(v, -e), -6.0f), 6.0f)));
        uint8_t hi = (uint8_t)__shfl_down_sync(0xffffffffu, code, 1);
        if (!(lane & 1)) codes[b * 16 + lane / 2] = (uint8_t)(code | (hi << 4));
        if (lane == 0) scales[b] = (uint8_t)(e + 127);
    }
}

extern "C" dsv4_status dsv4_glue_store_entries(dsv4_cuda_ctx *ctx, const dsv4_glue_kv *kv, const uint16_t *entries,
                                               int n_emit, const int32_t *e_slot, const int32_t *e_w, int is_indexer,
                                               dsv4_err *err) {
    if (!n_emit) return DSV4_OK;
    store_entries_kernel<<<nblk((long)n_emit * 32, 128), 128, 0, CST(ctx)>>>(*kv, entries, n_emit, e_slot, e_w,
                                                                            is_indexer);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void ring_write_kernel(dsv4_glue_step st, dsv4_glue_kv kv, const uint16_t *fresh) {
    const int row = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
    if (row >= st.rows) return;
    const int s = st.rseq[row];
    if (s < 0) return;
    const int slot = st.sslot[s], i = row - st.srow0[s], n = st.sn[s];
    if (slot < 0 || i < n - kv.window) return;
    const int p = st.pos[row];
    uint8_t *dst = kv.slots + (size_t)slot * kv.slot_bytes + kv.ring_off + (size_t)(p % kv.window) * kv.entry_bytes;
    encode_entry_warp(kv, fresh + (size_t)row * (kv.nope + kv.rope), dst, lane);
}

extern "C" dsv4_status dsv4_glue_ring_write(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                            const uint16_t *fresh, dsv4_err *err) {
    if (!st->rows) return DSV4_OK;
    ring_write_kernel<<<nblk((long)st->rows * 32, 128), 128, 0, CST(ctx)>>>(*st, *kv, fresh);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void ring_decode_kernel(dsv4_glue_step st, dsv4_glue_kv kv, uint16_t *out) {
    const int s = blockIdx.y, j = blockIdx.x;
    const int slot = st.sslot[s];
    if (slot < 0) return;
    const uint8_t *src = kv.slots + (size_t)slot * kv.slot_bytes + kv.ring_off + (size_t)j * kv.entry_bytes;
    decode_entry(kv, src, out + ((size_t)s * kv.window + j) * (kv.nope + kv.rope), threadIdx.x, blockDim.x);
}

extern "C" dsv4_status dsv4_glue_ring_decode(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                             uint16_t *out, dsv4_err *err) {
    if (!st->n_seq) return DSV4_OK;
    ring_decode_kernel<<<dim3((unsigned)kv->window, (unsigned)st->n_seq), 128, 0, CST(ctx)>>>(*st, *kv, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__device__ void decode_ikey(const dsv4_glue_kv &kv, int slot, int w, uint16_t *y, int t, int nt) {
    int eb;
    size_t base = block_of(kv, slot, w, &eb);
    const uint8_t *codes = kv.blocks + base + kv.ikey_off + (size_t)eb * kv.ik_code_bytes;
    const uint8_t *scales = kv.blocks + base + kv.ikey_off + kv.ikey_scale_off + (size_t)eb * kv.ik_n_scales;
    for (int i = t; i < kv.ik_dim; i += nt) {
        uint8_t b = codes[i >> 1];
        uint8_t c = (i & 1) ? (uint8_t)(b >> 4) : (uint8_t)(b & 15);
        y[i] = f2bf(ldexpf(e2m1_val(c), (int)scales[i / 32] - 127));
    }
}

__global__ void decode_entries_kernel(dsv4_glue_step st, dsv4_glue_kv kv, int is_indexer, int max_e, uint16_t *out) {
    const int s = blockIdx.y;
    const int slot = st.sslot[s];
    if (slot < 0) return;
    const int n_vis = (st.spos0[s] + st.sn[s]) / kv.ratio;
    const int dim = is_indexer ? kv.ik_dim : kv.nope + kv.rope;
    for (int w = blockIdx.x; w < n_vis && w < max_e; w += gridDim.x) {
        uint16_t *y = out + ((size_t)s * max_e + w) * dim;
        if (is_indexer) {
            decode_ikey(kv, slot, w, y, threadIdx.x, blockDim.x);
        } else {
            int eb;
            size_t base = block_of(kv, slot, w, &eb);
            decode_entry(kv, kv.blocks + base + kv.main_off + (size_t)eb * kv.entry_bytes, y, threadIdx.x, blockDim.x);
        }
    }
}

extern "C" dsv4_status dsv4_glue_decode_entries(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                                int is_indexer, int max_e, uint16_t *out, dsv4_err *err) {
    if (!st->n_seq || !max_e) return DSV4_OK;
    unsigned gx = (unsigned)(max_e < 1024 ? max_e : 1024);
    decode_entries_kernel<<<dim3(gx, (unsigned)st->n_seq), 128, 0, CST(ctx)>>>(*st, *kv, is_indexer, max_e, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void decode_selected_kernel(dsv4_glue_step st, dsv4_glue_kv kv, const int32_t *sel, int topk,
                                       uint16_t *out) {
    const int r = blockIdx.y, j = blockIdx.x;
    const int s = st.rseq[r];
    if (s < 0 || st.sslot[s] < 0) return;
    const int w = sel[(size_t)r * topk + j];
    if (w < 0) return;
    int eb;
    size_t base = block_of(kv, st.sslot[s], w, &eb);
    decode_entry(kv, kv.blocks + base + kv.main_off + (size_t)eb * kv.entry_bytes,
                 out + ((size_t)r * topk + j) * (kv.nope + kv.rope), threadIdx.x, blockDim.x);
}

extern "C" dsv4_status dsv4_glue_decode_selected(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, const dsv4_glue_kv *kv,
                                                 const int32_t *sel, int topk, uint16_t *out, dsv4_err *err) {
    if (!st->rows || !topk) return DSV4_OK;
    decode_selected_kernel<<<dim3((unsigned)topk, (unsigned)st->rows), 128, 0, CST(ctx)>>>(*st, *kv, sel, topk, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

/* ==== attention lists, indexer visibility ============================================================== */

__global__ void build_idx_kernel(dsv4_glue_step st, int window, int ring_base, int kind, int ratio, int comp_base,
                                 int n_comp, const int32_t *sel, int32_t *idx, int32_t *n_live, int full) {
    const int r = blockIdx.x, K = window + n_comp;
    const int s = st.rseq[r];
    const bool live = s >= 0 && st.sslot[s] >= 0;
    const int t = st.pos[r], P = live ? st.spos0[s] : 0, row0 = live ? st.srow0[s] : 0;
    /* Compressed entries this row can see: HCA (t+1)/ratio; CSA the indexer's picks, which are at most
     * (t+1)/ratio and come first (the rest of sel is -1). The list ends there. */
    const int n_vis = kind ? min(n_comp, (t + 1) / ratio) : 0;
    const int L = live ? window + n_vis : 0;
    if (threadIdx.x == 0) n_live[r] = L;
    for (int j = threadIdx.x; j < (full ? K : L); j += blockDim.x) {
        int v = -1;
        if (j >= L) {
        } else if (j < window) {
            int p = t - window + 1 + j;
            if (p >= P) v = row0 + (p - P);
            else if (p >= 0) v = ring_base + s * window + p % window;
        } else {
            int jj = j - window;
            if (kind == 1) v = sel[(size_t)r * n_comp + jj] >= 0 ? comp_base + r * n_comp + jj : -1;
            else v = comp_base + s * n_comp + jj;
        }
        idx[(size_t)r * K + j] = v;
    }
}

extern "C" dsv4_status dsv4_glue_build_idx(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, int window, int ring_base,
                                           int kind, int ratio, int comp_base, int n_comp, const int32_t *sel,
                                           int32_t *idx, int32_t *n_live, int full, dsv4_err *err) {
    if (!st->rows) return DSV4_OK;
    build_idx_kernel<<<st->rows, 256, 0, CST(ctx)>>>(*st, window, ring_base, kind, ratio, comp_base, n_comp, sel, idx,
                                                     n_live, full);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void csa_meta_kernel(dsv4_glue_step st, int ratio, int max_e, int32_t *n_keys, int32_t *key_start) {
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= st.rows) return;
    const int s = st.rseq[r];
    const bool live = s >= 0 && st.sslot[s] >= 0;
    n_keys[r] = live ? (st.pos[r] + 1) / ratio : 0;
    key_start[r] = live ? s * max_e : 0;
}

extern "C" dsv4_status dsv4_glue_csa_meta(dsv4_cuda_ctx *ctx, const dsv4_glue_step *st, int ratio, int max_e,
                                          int32_t *n_keys, int32_t *key_start, dsv4_err *err) {
    if (!st->rows) return DSV4_OK;
    csa_meta_kernel<<<nblk(st->rows, 128), 128, 0, CST(ctx)>>>(*st, ratio, max_e, n_keys, key_start);
    GLUE_CHECK(err);
    return DSV4_OK;
}

/* ==== grouped output projection, MoE ==================================================================== */

__global__ void regroup_kernel(const uint16_t *src, uint16_t *dst, int rows, int G, int cols, int split) {
    long n = (long)rows * G * cols;
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x) {
        int c = (int)(i % cols);
        long t = i / cols;
        int r = (int)(t % rows), g = (int)(t / rows); /* i indexes [g][r][c] */
        size_t flat = ((size_t)r * G + g) * cols + c;  /* [r][g][c] */
        if (split) dst[i] = src[flat];
        else dst[flat] = src[i];
    }
}

extern "C" dsv4_status dsv4_glue_regroup(dsv4_cuda_ctx *ctx, const uint16_t *src, uint16_t *dst, int rows, int G,
                                         int cols, int split, dsv4_err *err) {
    long n = (long)rows * G * cols;
    if (!n) return DSV4_OK;
    regroup_kernel<<<nblk(n < (1L << 22) ? n : (1L << 22), 256), 256, 0, CST(ctx)>>>(src, dst, rows, G, cols, split);
    GLUE_CHECK(err);
    return DSV4_OK;
}

#define MOE_WARPS 8

/* One warp per output n of one pair; lane l takes the K blocks l, l+32, ... (32-wide for FP4, 128 for FP8):
 * per block P = Σ q_x·q_w in FP32 (products exact), C += P·s_x·s_w; then a fixed-order warp sum. */
__global__ void __launch_bounds__(MOE_WARPS * 32) moe_expert_kernel(const uint8_t *xq, const uint8_t *xs, int K,
                                                                    int in_div, const int32_t *experts, int e0,
                                                                    int ne, const uint8_t *w, const uint8_t *s,
                                                                    size_t w_stride, size_t s_stride, int fp4, int N,
                                                                    uint16_t *y) {
    const int p = blockIdx.y, lane = threadIdx.x & 31;
    const int n = blockIdx.x * MOE_WARPS + (threadIdx.x >> 5);
    if (n >= N) return;
    const int e = experts[p] - e0, row = p / in_div;
    if (e < 0 || e >= ne) {              /* another rank's expert: a defined zero, never read by the combine */
        if (lane == 0) y[(size_t)p * N + n] = 0;
        return;
    }
    const uint8_t *x = xq + (size_t)row * K;
    const uint8_t *xsr = xs + (size_t)row * (K / 128);
    float C = 0.0f;
    if (fp4) {
        const uint8_t *wr = w + e * w_stride + (size_t)n * (K / 2);
        const uint8_t *sr = s + e * s_stride + (size_t)n * (K / 32);
        for (int kb = lane; kb < K / 32; kb += 32) {
            uint4 wv = *reinterpret_cast<const uint4 *>(wr + kb * 16);
            uint4 x0 = *reinterpret_cast<const uint4 *>(x + kb * 32);
            uint4 x1 = *reinterpret_cast<const uint4 *>(x + kb * 32 + 16);
            const uint8_t *wb = reinterpret_cast<const uint8_t *>(&wv);
            uint8_t xb[32];
            *reinterpret_cast<uint4 *>(xb) = x0;
            *reinterpret_cast<uint4 *>(xb + 16) = x1;
            float P = 0.0f;
#pragma unroll
            for (int i = 0; i < 16; i++) {
                P = __fadd_rn(P, __fmul_rn(e4m3_val(xb[2 * i]), e2m1_val(wb[i] & 15)));
                P = __fadd_rn(P, __fmul_rn(e4m3_val(xb[2 * i + 1]), e2m1_val(wb[i] >> 4)));
            }
            float sx = ldexpf(1.0f, (int)xsr[kb / 4] - 127), sw = ldexpf(1.0f, (int)sr[kb] - 127);
            C = __fadd_rn(C, __fmul_rn(__fmul_rn(P, sx), sw));
        }
    } else {
        const uint8_t *wr = w + e * w_stride + (size_t)n * K;
        const uint8_t *sr = s + e * s_stride + (size_t)(n / 128) * (K / 128);
        for (int kb = lane; kb < K / 128; kb += 32) {
            float P = 0.0f;
            for (int i = 0; i < 128; i += 16) {
                uint4 wv = *reinterpret_cast<const uint4 *>(wr + kb * 128 + i);
                uint4 xv = *reinterpret_cast<const uint4 *>(x + kb * 128 + i);
                const uint8_t *wb = reinterpret_cast<const uint8_t *>(&wv), *xb = reinterpret_cast<const uint8_t *>(&xv);
#pragma unroll
                for (int q = 0; q < 16; q++) P = __fadd_rn(P, __fmul_rn(e4m3_val(xb[q]), e4m3_val(wb[q])));
            }
            float sx = ldexpf(1.0f, (int)xsr[kb] - 127), sw = ldexpf(1.0f, (int)sr[kb] - 127);
            C = __fadd_rn(C, __fmul_rn(__fmul_rn(P, sx), sw));
        }
    }
    for (int o = 16; o > 0; o >>= 1) C = __fadd_rn(C, __shfl_xor_sync(0xffffffffu, C, o));
    if (lane == 0) y[(size_t)p * N + n] = f2bf(C);
}

extern "C" dsv4_status dsv4_glue_moe_expert(dsv4_cuda_ctx *ctx, const uint8_t *xq, const uint8_t *xs, int K, int in_div,
                                            const int32_t *experts, int e0, int ne, int n_pairs, const uint8_t *w,
                                            const uint8_t *s, size_t w_stride, size_t s_stride, int fp4, int N,
                                            uint16_t *y, dsv4_err *err) {
    if (K % 128 || N < 1 || in_div < 1 || e0 < 0 || ne < 1) return ops_bad(err, "dsv4_glue_moe_expert", "bad shape");
    if (!n_pairs) return DSV4_OK;
    if (n_pairs > 65535) return ops_bad(err, "dsv4_glue_moe_expert", "too many pairs");
    dim3 grid(nblk(N, MOE_WARPS), (unsigned)n_pairs);
    moe_expert_kernel<<<grid, MOE_WARPS * 32, 0, CST(ctx)>>>(xq, xs, K, in_div, experts, e0, ne, w, s, w_stride,
                                                             s_stride, fp4, N, y);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void moe_combine_kernel(const uint16_t *ey, const int32_t *experts, int k, int D, const uint16_t *sy,
                                   uint16_t *out) {
    const int r = blockIdx.x;
    int order[16];
    for (int j = 0; j < k; j++) order[j] = j;
    const int32_t *ex = experts + (size_t)r * k;
    for (int a = 1; a < k; a++)
        for (int b = a; b > 0 && ex[order[b]] < ex[order[b - 1]]; b--) {
            int t = order[b]; order[b] = order[b - 1]; order[b - 1] = t;
        }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) acc = __fadd_rn(acc, bf2f(ey[((size_t)r * k + order[j]) * D + d]));
        acc = __fadd_rn(acc, bf2f(sy[(size_t)r * D + d]));
        out[(size_t)r * D + d] = f2bf(acc);
    }
}

extern "C" dsv4_status dsv4_glue_moe_combine(dsv4_cuda_ctx *ctx, const uint16_t *ey, const int32_t *experts, int rows,
                                             int k, int D, const uint16_t *sy, uint16_t *out, dsv4_err *err) {
    if (k > 16) return ops_bad(err, "dsv4_glue_moe_combine", "k > 16");
    if (!rows) return DSV4_OK;
    moe_combine_kernel<<<rows, 256, 0, CST(ctx)>>>(ey, experts, k, D, sy, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

/* The combine split at the official all-reduce point: the FP32 partial of this rank's experts (same order and
 * additions as moe_combine_kernel, other ranks' experts skipped), then bf16(partial + shared). */
__global__ void moe_partial_kernel(const uint16_t *ey, const int32_t *experts, int k, int D, int e0, int ne,
                                   float *part) {
    const int r = blockIdx.x;
    int order[16];
    for (int j = 0; j < k; j++) order[j] = j;
    const int32_t *ex = experts + (size_t)r * k;
    for (int a = 1; a < k; a++)
        for (int b = a; b > 0 && ex[order[b]] < ex[order[b - 1]]; b--) {
            int t = order[b]; order[b] = order[b - 1]; order[b - 1] = t;
        }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float acc = 0.0f;
        for (int j = 0; j < k; j++) {
            const int e = ex[order[j]] - e0;
            if (e >= 0 && e < ne) acc = __fadd_rn(acc, bf2f(ey[((size_t)r * k + order[j]) * D + d]));
        }
        part[(size_t)r * D + d] = acc;
    }
}

extern "C" dsv4_status dsv4_glue_moe_partial(dsv4_cuda_ctx *ctx, const uint16_t *ey, const int32_t *experts, int rows,
                                             int k, int D, int e0, int ne, float *part, dsv4_err *err) {
    if (k > 16) return ops_bad(err, "dsv4_glue_moe_partial", "k > 16");
    if (!rows) return DSV4_OK;
    moe_partial_kernel<<<rows, 256, 0, CST(ctx)>>>(ey, experts, k, D, e0, ne, part);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void add_bf16_kernel(const float *part, const uint16_t *sy, long n, uint16_t *out) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        out[i] = f2bf(__fadd_rn(part[i], bf2f(sy[i])));
}

extern "C" dsv4_status dsv4_glue_moe_finish(dsv4_cuda_ctx *ctx, const float *part, const uint16_t *sy, long n,
                                            uint16_t *out, dsv4_err *err) {
    if (n <= 0) return DSV4_OK;
    add_bf16_kernel<<<nblk(n < (1L << 22) ? n : (1L << 22), 256), 256, 0, CST(ctx)>>>(part, sy, n, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void embed_part_kernel(const uint16_t *table, int v0, int nv, int D, const int32_t *tokens, float *out) {
    const int r = blockIdx.x, t = tokens[r] - v0;
    const int own = t >= 0 && t < nv;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        out[(size_t)r * D + d] = own ? bf2f(table[(size_t)t * D + d]) : -0.0f;
}

extern "C" dsv4_status dsv4_glue_embed_part(dsv4_cuda_ctx *ctx, const uint16_t *table, int v0, int nv, int D,
                                            const int32_t *tokens, int rows, float *out, dsv4_err *err) {
    if (!rows) return DSV4_OK;
    embed_part_kernel<<<rows, 256, 0, CST(ctx)>>>(table, v0, nv, D, tokens, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void bf16_to_f32_kernel(const uint16_t *x, long n, float *y) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = bf2f(x[i]);
}

__global__ void f32_to_bf16_kernel(const float *x, long n, uint16_t *y) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n; i += (long)gridDim.x * blockDim.x)
        y[i] = f2bf(x[i]);
}

extern "C" dsv4_status dsv4_glue_bf16_to_f32(dsv4_cuda_ctx *ctx, const uint16_t *x, long n, float *y, dsv4_err *err) {
    if (n <= 0) return DSV4_OK;
    bf16_to_f32_kernel<<<nblk(n < (1L << 22) ? n : (1L << 22), 256), 256, 0, CST(ctx)>>>(x, n, y);
    GLUE_CHECK(err);
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_f32_to_bf16(dsv4_cuda_ctx *ctx, const float *x, long n, uint16_t *y, dsv4_err *err) {
    if (n <= 0) return DSV4_OK;
    f32_to_bf16_kernel<<<nblk(n < (1L << 22) ? n : (1L << 22), 256), 256, 0, CST(ctx)>>>(x, n, y);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void vocab_interleave_kernel(const float *all, int world, int n, int nv, float *out) {
    const int i = blockIdx.x;                     /* output row */
    const long V = (long)world * nv;
    for (long v = threadIdx.x; v < V; v += blockDim.x) {
        const int r = (int)(v / nv), j = (int)(v % nv);
        out[(size_t)i * V + v] = all[((size_t)r * n + i) * nv + j];
    }
}

extern "C" dsv4_status dsv4_glue_vocab_interleave(dsv4_cuda_ctx *ctx, const float *all, int world, int n, int nv,
                                                  float *out, dsv4_err *err) {
    if (!n) return DSV4_OK;
    vocab_interleave_kernel<<<n, 256, 0, CST(ctx)>>>(all, world, n, nv, out);
    GLUE_CHECK(err);
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_set_device(dsv4_cuda_ctx *ctx, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaSetDevice(ctx->device));
    return DSV4_OK;
}

__global__ void gather_rows_kernel(const uint16_t *src, int elems, const int32_t *idx, uint16_t *dst) {
    const int i = blockIdx.x;
    const uint16_t *s = src + (size_t)idx[i] * elems;
    for (int c = threadIdx.x; c < elems; c += blockDim.x) dst[(size_t)i * elems + c] = s[c];
}

extern "C" dsv4_status dsv4_glue_gather_rows(dsv4_cuda_ctx *ctx, const uint16_t *src, int elems, const int32_t *idx,
                                             int n, uint16_t *dst, dsv4_err *err) {
    if (!n) return DSV4_OK;
    gather_rows_kernel<<<n, 256, 0, CST(ctx)>>>(src, elems, idx, dst);
    GLUE_CHECK(err);
    return DSV4_OK;
}

__global__ void advance_kernel(const int32_t *argmax, int n, int32_t *tok, int32_t *pos, int32_t *spos0,
                               int32_t *hist, int32_t *ctr, int cap) {
    const int c = *ctr;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        int t = argmax[i];
        if (c < cap) hist[(size_t)c * n + i] = t;
        tok[i] = t;
        pos[i] += 1;
        spos0[i] += 1;
    }
    __syncthreads();
    if (threadIdx.x == 0) *ctr = c + 1;
}

extern "C" dsv4_status dsv4_glue_advance(dsv4_cuda_ctx *ctx, const int32_t *argmax, int n, int32_t *tok, int32_t *pos,
                                         int32_t *spos0, int32_t *hist, int32_t *ctr, int cap, dsv4_err *err) {
    advance_kernel<<<1, 256, 0, CST(ctx)>>>(argmax, n, tok, pos, spos0, hist, ctr, cap);
    GLUE_CHECK(err);
    return DSV4_OK;
}

/* ==== graphs, pinned memory ============================================================================ */

extern "C" dsv4_status dsv4_glue_host_alloc(size_t bytes, void **p, dsv4_err *err) {
    *p = NULL;
    DSV4_CUDA_CHECK(err, cudaMallocHost(p, bytes ? bytes : 1));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_upload_async(dsv4_cuda_ctx *ctx, void *dst, const void *src, size_t bytes,
                                              dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, CST(ctx)));
    return DSV4_OK;
}

extern "C" void dsv4_glue_host_free(void *p) {
    if (p) (void)cudaFreeHost(p);
}

extern "C" dsv4_status dsv4_glue_capture_begin(dsv4_cuda_ctx *ctx, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaStreamBeginCapture(CST(ctx), cudaStreamCaptureModeThreadLocal));
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_capture_end(dsv4_cuda_ctx *ctx, int ok, void **exec, dsv4_err *err) {
    *exec = NULL;
    cudaGraph_t g = NULL;
    cudaError_t e = cudaStreamEndCapture(CST(ctx), &g);
    if (!ok) {
        if (g) cudaGraphDestroy(g);
        (void)cudaGetLastError();
        return DSV4_OK;
    }
    DSV4_CUDA_CHECK(err, e);
    cudaGraphExec_t x = NULL;
    e = cudaGraphInstantiate(&x, g, 0);
    cudaGraphDestroy(g);
    DSV4_CUDA_CHECK(err, e);
    *exec = (void *)x;
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_glue_graph_launch(dsv4_cuda_ctx *ctx, void *exec, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaGraphLaunch((cudaGraphExec_t)exec, CST(ctx)));
    return DSV4_OK;
}

extern "C" void dsv4_glue_graph_destroy(void *exec) {
    if (exec) (void)cudaGraphExecDestroy((cudaGraphExec_t)exec);
}

/* kv_codec.cu — the device twin of src/kv/kv_codec.c (see cuda_kv_codec.h): compact KV entries stored into
 * and decoded from the block arena (main entries, indexer keys) and the window ring of the slot arena.
 * Must not allocate device memory or synchronize. */
#include "backend/cuda/cuda_kv_codec.h"
#include "backend/cuda/kernels/glue_common.cuh"

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


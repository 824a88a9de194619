/* compressor_state.cu — the compressors' tail state on the device (see cuda_compressor_state.h): phase 1
 * gathers each completing window's pooling inputs from this step's projections or the state, phase 2 writes
 * the state the CPU's token-by-token rule (src/kv/kv_cmp_state.c) leaves. Must not allocate device memory or
 * synchronize. */
#include "backend/cuda/cuda_compressor_state.h"
#include "backend/cuda/kernels/glue_common.cuh"

extern "C" int dsv4_glue_n_emit(const int32_t *sn, int n_seq, int ratio) {
    int n = 0;
    for (int s = 0; s < n_seq; s++) n += (sn[s] + ratio - 1) / ratio;
    return n;
}

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

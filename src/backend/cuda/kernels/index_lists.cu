/* index_lists.cu — attention index lists, indexer visibility and the greedy step's position advance, computed
 * on the device from the step's positions (see cuda_index_lists.h). Must not allocate device memory or
 * synchronize. */
#include "backend/cuda/cuda_index_lists.h"
#include "backend/cuda/kernels/glue_common.cuh"

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

/* compressor.cu — the KV compressor's per-entry math (spec §4.5) for many entries per launch: softmax
 * pooling over slots per channel, then the entry finish (bf16, RMSNorm, RoPE at the entry's position, FP8
 * fake-quant of the nope dims or Hadamard + FP4 for the indexer). See ops_cuda.h; CPU twins
 * dsv4_cpu_compress_pool and dsv4_cpu_compress_finish (backend/cpu/compressor.c). Must not allocate or
 * synchronize. Window bookkeeping (which slots, state, ape) is the caller's.
 *
 * One CTA of d threads per entry, thread c owns channel c. The pooling of a channel runs on one thread in
 * the CPU's order (slot order, fp64 sums of the same FP32 terms), so it is bitwise the CPU's; the RMSNorm's
 * Σx² is an fp64 block sum (order differs, FP32 result equal in practice). */
#include "backend/cuda/kernels/ops_common.cuh"

__global__ void compress_kernel(dsv4_cuda_compress_params p) {
    __shared__ double red[33];
    __shared__ float e_sh[1024];
    __shared__ float amax_sh[32];
    const int c = threadIdx.x, d = p.d;
    const size_t base = (size_t)blockIdx.x * p.entry_stride + c;

    /* ---- pooling ---- */
    float m = -INFINITY;
    for (int s = 0; s < p.n_slots; s++) {
        float v = p.scores[base + (size_t)s * p.ld];
        if (v > m) m = v;
    }
    float e = 0.0f;
    if (m != -INFINITY) {
        double z = 0.0;
        for (int s = 0; s < p.n_slots; s++) {
            float v = p.scores[base + (size_t)s * p.ld];
            if (v != -INFINITY) z += (double)exp_f(__fsub_rn(v, m));
        }
        float zf = (float)z;
        double acc = 0.0;
        for (int s = 0; s < p.n_slots; s++) {
            float v = p.scores[base + (size_t)s * p.ld];
            if (v == -INFINITY) continue;
            float pr = __fdiv_rn(exp_f(__fsub_rn(v, m)), zf);
            acc += (double)__fmul_rn(pr, p.values[base + (size_t)s * p.ld]);
        }
        e = (float)acc;
    }

    /* ---- finish: bf16, RMSNorm ---- */
    e = bfr(e);
    double ss = block_sum_d((double)e * (double)e, red);
    float r = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn((float)(ss / d), p.eps)));
    float y = __fmul_rn(e, r);
    if (p.norm_w) y = __fmul_rn(bf2f(p.norm_w[c]), y);
    e_sh[c] = bfr(y);
    __syncthreads();

    /* ---- RoPE on the last rope_dim channels at the entry's position ---- */
    const int rd = p.rope.rope_dim;
    if (c < rd / 2) {
        int i = d - rd + 2 * c;
        float a = e_sh[i], b = e_sh[i + 1];
        rope_pair(a, b, p.positions[blockIdx.x], p.rope.inv_freq[c], 0);
        e_sh[i] = a;
        e_sh[i + 1] = b;
    }
    __syncthreads();

    uint16_t *out = p.out + (size_t)blockIdx.x * p.ld_out;
    if (p.is_indexer) { /* d == 128: warp 0 rotates and quantizes the whole vector */
        if (c < 32) {
            float t[4] = {e_sh[4 * c], e_sh[4 * c + 1], e_sh[4 * c + 2], e_sh[4 * c + 3]};
            hadamard_fp4_warp(t, c);
#pragma unroll
            for (int j = 0; j < 4; j++) out[4 * c + j] = f2bf(t[j]);
        }
        return;
    }
    /* FP8 fake-quant, block 64 (= two warps), on [0, d − rd) */
    float v = e_sh[c];
    float am = warp_max(c < d - rd ? fabsf(v) : 0.0f);
    if ((c & 31) == 0) amax_sh[c >> 5] = am;
    __syncthreads();
    if (c < d - rd) {
        int b = c >> 6;
        float amax = fmaxf(amax_sh[2 * b], amax_sh[2 * b + 1]);
        v = fq_fp8(v, pow2_scale_exp(amax, 1e-4f, 1.0f / 448.0f));
    }
    out[c] = f2bf(v);
}

extern "C" dsv4_status dsv4_cuda_compress(dsv4_cuda_ctx *ctx, const dsv4_cuda_compress_params *p, dsv4_err *err) {
    if (!p || p->d < 64 || p->d > 1024 || p->d % 64 || p->n_slots < 1 || p->n_entries < 0 || p->ld < p->d ||
        p->ld_out < p->d)
        return ops_bad(err, "dsv4_cuda_compress", "bad shape");
    int rd = p->rope.rope_dim;
    if (rd < 2 || (rd & 1) || rd >= p->d || rd > 128) return ops_bad(err, "dsv4_cuda_compress", "bad rope_dim");
    if (p->is_indexer ? p->d != 128 : (p->d - rd) % 64 != 0)
        return ops_bad(err, "dsv4_cuda_compress", "indexer needs d = 128; main needs (d - rope_dim) % 64 == 0");
    if (p->n_entries == 0) return DSV4_OK;
    compress_kernel<<<p->n_entries, p->d, 0, (cudaStream_t)ctx->stream>>>(*p);
    OPS_LAUNCH_CHECK(err);
    return DSV4_OK;
}

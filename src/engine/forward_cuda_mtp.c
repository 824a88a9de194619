/* forward_cuda_mtp.c — the MTP block (spec §4.10) on the CUDA forward: the computation of forward_cpu.c's
 * dsv4_forward_mtp, in the same order and at the same rounding points, on the device (forward_cuda.h).
 *
 * A pass of MTP rows: e = enorm(embed[next]) -> e_proj (FP8, BF16 out); per stream h: hnorm(h[h]) -> h_proj
 * (FP8, BF16 out); Z[h] = bf16(h_proj + e_proj) (FP32 add of the two BF16 values, as the CPU); then the MTP's
 * SWA block, which is layer n_layers of the forward (f->L[n_layers], its window ring = KV layer n_layers, θ of
 * the ratio-0 layers, no YaRN), run by the same dsv4_fcuda_block as the main layers; the head is hc_head with
 * mtp.0.hc_head_*, mtp.0.norm and the shared head. Row positions: the row at p attends positions p-window+1..p,
 * rows of this pass fresh, older ones from the MTP ring (as the main model's window).
 *
 * Two entry points:
 *   dsv4_forward_cuda_mtp       the CPU contract (dsv4_mtp_step, host h rows uploaded as BF16: exact for the
 *                               BF16 values the forward produces), for tests and drafting;
 *   dsv4_forward_cuda_step_mtp  a main step followed, pass by pass, by the MTP rows it made known (the engine's
 *                               dsv4_engine_step_mtp): the main model's final state never leaves the device —
 *                               each pass's X is copied to f->mtp_hl, whose first S rows keep every slot's last
 *                               state (the h of the row that waits for the next token).
 * Passes are eager (no graph) and end with the device idle (the pinned inputs are reused by the next pass).
 * The layer hook and the per-op profiler see main passes only.
 *
 * Speculative decoding (spec.c over this forward, engine.c): dsv4_forward_cuda_step_hidden (a step that also
 * brings every row's final state to the host) and dsv4_forward_cuda_mtp_state (a slot's kept state to / from
 * the host). */
#include "engine/forward_cuda.h"

#include "core/status.h"

#ifndef DSV4_HAVE_CUDA

dsv4_status dsv4_forward_cuda_mtp(dsv4_forward_cuda *f, const dsv4_mtp_step *steps, int n_steps, float *logits,
                                  float *h_out, dsv4_err *err) {
    (void)f; (void)steps; (void)n_steps; (void)logits; (void)h_out;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
}
dsv4_status dsv4_forward_cuda_step_mtp(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                       float *mtp_logits, int *n_mtp_rows, dsv4_err *err) {
    (void)f; (void)steps; (void)n_steps; (void)logits; (void)mtp_logits;
    if (n_mtp_rows) *n_mtp_rows = 0;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
}
dsv4_status dsv4_forward_cuda_step_hidden(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                          float *hidden, dsv4_err *err) {
    (void)f; (void)steps; (void)n_steps; (void)logits; (void)hidden;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
}
dsv4_status dsv4_forward_cuda_mtp_state(dsv4_forward_cuda *f, int slot, float *get, const float *set, dsv4_err *err) {
    (void)f; (void)slot; (void)get; (void)set;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
}

#else /* DSV4_HAVE_CUDA */

#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda_compressor_state.h"
#include "backend/cuda/cuda_elementwise.h"
#include "backend/cuda/cuda_index_lists.h"
#include "backend/cuda/cuda_kv_codec.h"
#include "backend/cuda/cuda_linear.h"
#include "backend/cuda/cuda_moe_pairs.h"
#include "backend/cuda/ops_cuda.h"
#include "core/numfmt.h"
#include "engine/forward_cuda_internal.h"
#include "engine/kv_access.h"

#define T(expr) do { dsv4_status s__ = (expr); if (s__ != DSV4_OK) return s__; } while (0)

static dsv4_status no_mtp(const dsv4_forward_cuda *f, dsv4_err *err) {
    if (!f->m->w.mtp) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "mtp: the checkpoint has no MTP block (mtp.0.*)");
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "mtp: the MTP block runs on one GPU holding the whole model "
                        "(not with --gpus > 1)");
}

/* ==== one pass of MTP rows ============================================================================== */

/* Enqueues the MTP rows described by f->in (already uploaded: tok = the next token of each row, pos, rseq,
 * sslot, spos0 = the first row's position, srow0, sn) over h = f->mtp_hin [rows, hc, D]; leaves the block's
 * final state in f->X [rows, hc, D]. Writes the MTP ring of each slot (last min(n, window) rows). */
static dsv4_status mtp_pass(dsv4_forward_cuda *f, int rows, int n_seq, dsv4_err *err) {
    const dsv4_config *c = f->c;
    const int D = c->dim, hc = c->hc_mult;
    const float eps = (float)c->norm_eps;
    inputs in = dsv4_fcuda_inputs(f, f->in);
    dsv4_glue_step gs = {in.pos, in.rseq, in.sslot, in.spos0, in.srow0, in.sn, rows, n_seq};
    /* e_proj(enorm(embed[next])), widened to FP32 once (exact) for the adds below. */
    T(dsv4_cuda_embed(f->ctx, f->embed, c->vocab_size, D, in.tok, rows, f->x, err));
    T(dsv4_cuda_rmsnorm(f->ctx, f->x, D, f->mtp.enorm, rows, D, eps, f->x, D, err));
    T(dsv4_cuda_act_quant_fp8(f->ctx, f->x, rows, D, f->aq1, f->as1, err));
    T(dsv4_fcuda_lin8(f, f->aq1, f->as1, rows, &f->mtp.e_proj, f->a, err));
    T(dsv4_glue_bf16_to_f32(f->ctx, f->a, (long)rows * D, f->mtp_e32, err));
    /* Stream by stream (stream-major, so that each stream's rows are contiguous for the linear and the add):
     * z_h = hnorm(h[:, h]) -> h_proj -> bf16(h_proj + e_proj). The CPU runs h_proj over all rows*hc rows at
     * once; a linear is row-independent, so only the device GEMM's summation order differs. */
    for (int h = 0; h < hc; h++) {
        uint16_t *zh = f->mtp_z + (size_t)h * rows * D;
        T(dsv4_cuda_rmsnorm(f->ctx, f->mtp_hin + (size_t)h * D, hc * D, f->mtp.hnorm, rows, D, eps, zh, D, err));
        T(dsv4_cuda_act_quant_fp8(f->ctx, zh, rows, D, f->aq1, f->as1, err));
        T(dsv4_fcuda_lin8(f, f->aq1, f->as1, rows, &f->mtp.h_proj, f->mtp_y, err));
        /* out = bf16(part + sy): part = e_proj (FP32), sy = h_proj (BF16); the CPU's bf16(h + e), same sum. */
        T(dsv4_glue_moe_finish(f->ctx, f->mtp_e32, f->mtp_y, (long)rows * D, zh, err));
    }
    T(dsv4_glue_regroup(f->ctx, f->mtp_z, f->X, rows, hc, D, 0, err));   /* [hc][rows][D] -> [rows][hc][D] */
    return dsv4_fcuda_block(f, &gs, &in, rows, c->n_layers, err);
}

/* ==== the CPU contract: host h rows ====================================================================== */

typedef struct mpiece { int step, j0, n; } mpiece;   /* rows j0 .. j0+n-1 of steps[step] */

/* One pass over pieces pc[np] (rows in piece order). out_row[i] / h_row[i]: index of steps[i]'s first row in
 * logits (wanted rows only) and in h_out. */
static dsv4_status mtp_flush(dsv4_forward_cuda *f, const dsv4_mtp_step *steps, const mpiece *pc, int np,
                             const int *out_row, const int *h_row, float *logits, float *h_out, dsv4_err *err) {
    const dsv4_config *c = f->c;
    const int V = c->vocab_size;
    const size_t HD = (size_t)c->hc_mult * c->dim;
    inputs h = dsv4_fcuda_inputs(f, f->h_in);
    int rows = 0, n_out = 0;
    int32_t hrow[f->R];
    float *dst[f->R];
    for (int i = 0; i < np; i++) {
        const dsv4_mtp_step *s = &steps[pc[i].step];
        h.sslot[i] = s->slot;
        h.spos0[i] = (int32_t)(s->pos0 + pc[i].j0);
        h.srow0[i] = rows;
        h.sn[i] = pc[i].n;
        for (int j = pc[i].j0; j < pc[i].j0 + pc[i].n; j++, rows++) {
            h.tok[rows] = s->next[j];
            h.pos[rows] = (int32_t)(s->pos0 + j);
            h.rseq[rows] = i;
            /* h rows hold BF16 values (the forward's final states): the conversion is exact for them. */
            const float *src = s->h + HD * (size_t)j;
            for (size_t k = 0; k < HD; k++) f->h_hbf[HD * (size_t)rows + k] = dsv4_f32_to_bf16(src[k]);
            int want = s->want_logits == DSV4_LOGITS_ALL || (s->want_logits && j == s->n - 1);
            if (want && logits) {
                hrow[n_out] = rows;
                dst[n_out++] = logits + (size_t)V * (size_t)(out_row[pc[i].step] +
                                                            (s->want_logits == DSV4_LOGITS_ALL ? j : 0));
            }
        }
    }
    T(dsv4_cuda_upload(f->ctx, f->mtp_hin, f->h_hbf, sizeof(uint16_t) * HD * (size_t)rows, err));
    T(dsv4_fcuda_upload_inputs(f, err));
    T(mtp_pass(f, rows, np, err));
    if (n_out) T(dsv4_fcuda_head_rows(f, &f->mtp.hc_head, f->mtp.norm, hrow, dst, n_out, err));
    if (h_out) {
        T(dsv4_cuda_download(f->ctx, f->h_hbf, f->X, sizeof(uint16_t) * HD * (size_t)rows, err));
        for (int i = 0, r = 0; i < np; i++)
            for (int j = pc[i].j0; j < pc[i].j0 + pc[i].n; j++, r++) {
                float *o = h_out + HD * (size_t)(h_row[pc[i].step] + j);
                for (size_t k = 0; k < HD; k++) o[k] = dsv4_bf16_to_f32(f->h_hbf[HD * (size_t)r + k]);
            }
    }
    return dsv4_cuda_sync(f->ctx, err);   /* the pinned inputs are rewritten by the next pass */
}

dsv4_status dsv4_forward_cuda_mtp(dsv4_forward_cuda *f, const dsv4_mtp_step *steps, int n_steps, float *logits,
                                  float *h_out, dsv4_err *err) {
    const dsv4_config *c = f->c;
    if (!f->mtp.w) return no_mtp(f, err);
    DSV4_TRY(dsv4_mtp_check_steps(f->kv, steps, n_steps, c->vocab_size, NULL, err));   /* the CPU's checks */
    for (int i = 0; i < n_steps; i++) {
        const dsv4_mtp_step *s = &steps[i];
        if (s->pos0 + s->n > f->msl)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: slot %d: rows up to position %ld, past the longest "
                                "sequence %ld", s->slot, s->pos0 + s->n - 1, f->msl);
    }
    T(dsv4_glue_set_device(f->ctx, err));
    int out_row[n_steps], h_row[n_steps];
    for (int i = 0, o = 0, r = 0; i < n_steps; i++) {
        out_row[i] = o;
        h_row[i] = r;
        o += steps[i].want_logits == DSV4_LOGITS_ALL ? steps[i].n : steps[i].want_logits ? 1 : 0;
        r += steps[i].n;
    }
    dsv4_prof *prof = f->prof;   /* the profiler's passes are main passes */
    f->prof = NULL;
    /* Passes of at most R rows and S sequences; a sequence split over passes continues from its ring (the
     * earlier pass wrote it), as a chunked prefill of the main model does. */
    mpiece pc[f->S];
    int np = 0, rows = 0;
    dsv4_status st = DSV4_OK;
    for (int i = 0; i < n_steps && st == DSV4_OK; i++)
        for (int done = 0; done < steps[i].n && st == DSV4_OK;) {
            if (np == f->S || rows == f->R) {
                st = mtp_flush(f, steps, pc, np, out_row, h_row, logits, h_out, err);
                np = rows = 0;
                continue;
            }
            int n = steps[i].n - done < f->R - rows ? steps[i].n - done : f->R - rows;
            pc[np++] = (mpiece){i, done, n};
            rows += n;
            done += n;
        }
    if (st == DSV4_OK && np) st = mtp_flush(f, steps, pc, np, out_row, h_row, logits, h_out, err);
    f->prof = prof;
    if (st != DSV4_OK) return st;
    for (int i = 0; i < n_steps; i++)
        if (steps[i].commit) {
            st = dsv4_kv_manager_mtp_commit(f->kv, steps[i].slot, steps[i].n, NULL);
            DSV4_ASSERT(st == DSV4_OK);
        }
    return DSV4_OK;
}

/* ==== main step + MTP rows, the final state kept on the device ========================================== */

dsv4_status dsv4_fcuda_mtp_after_pass(dsv4_forward_cuda *f, const piece *pc, int np, dsv4_err *err) {
    const dsv4_config *c = f->c;
    const int V = c->vocab_size;
    const size_t HD = (size_t)c->hc_mult * c->dim;
    inputs h = dsv4_fcuda_inputs(f, f->h_in);
    int main_rows = 0;
    for (int i = 0; i < np; i++) main_rows += pc[i].n;
    /* The pass's final states next to the slots' last states: mtp_hl rows S + r = X row r. */
    T(dsv4_cuda_copy(f->ctx, f->mtp_hl + HD * (size_t)f->S, f->X, sizeof(uint16_t) * HD * (size_t)main_rows, err));
    /* MTP rows: per piece at P with n tokens, the row P-1 (h = the slot's last state, next = tokens[0]) when
     * P > 0, and rows P .. P+n-2 (h = this pass's rows, next = tokens[j+1]). */
    int rows = 0, ns = 0, n_out = 0;
    int32_t hrow[f->R];
    float *dst[f->R];
    int mslot[np], mcount[np];
    for (int i = 0, row0 = 0; i < np; row0 += pc[i].n, i++) {
        const int has_prev = pc[i].pos0 > 0, m = has_prev + pc[i].n - 1;
        if (m == 0) continue;
        const long first = pc[i].pos0 - has_prev;
        h.sslot[ns] = pc[i].slot;
        h.spos0[ns] = (int32_t)first;
        h.srow0[ns] = rows;
        h.sn[ns] = m;
        float *base = f->mtp_dst[pc[i].slot];
        for (int j = 0; j < m; j++, rows++) {
            const int k = j - has_prev;   /* -1: the row before the piece */
            h.tok[rows] = pc[i].tokens[k + 1];
            h.pos[rows] = (int32_t)(first + j);
            h.rseq[rows] = ns;
            f->h_hidx[rows] = k < 0 ? pc[i].slot : f->S + row0 + k;
            if (base) {
                hrow[n_out] = rows;
                dst[n_out++] = base + (size_t)V * (size_t)(first + j - f->mtp_first[pc[i].slot]);
            }
        }
        mslot[ns] = pc[i].slot;
        mcount[ns++] = m;
    }
    if (rows) {
        T(dsv4_glue_upload_async(f->ctx, f->mtp_hidx, f->h_hidx, sizeof(int32_t) * (size_t)rows, err));
        T(dsv4_glue_gather_rows(f->ctx, f->mtp_hl, (int)HD, f->mtp_hidx, rows, f->mtp_hin, err));
    }
    /* Each slot's last state is now its piece's last row (after the gather read the old one: stream order). */
    for (int i = 0, row0 = 0; i < np; row0 += pc[i].n, i++) {
        T(dsv4_cuda_copy(f->ctx, f->mtp_hl + HD * (size_t)pc[i].slot, f->mtp_hl + HD * (size_t)(f->S + row0 + pc[i].n - 1),
                         sizeof(uint16_t) * HD, err));
        f->mtp_hlen[pc[i].slot] = pc[i].pos0 + pc[i].n;
    }
    if (rows) {
        T(dsv4_fcuda_upload_inputs(f, err));
        dsv4_prof *prof = f->prof;
        f->prof = NULL;
        dsv4_status st = mtp_pass(f, rows, ns, err);
        if (st == DSV4_OK && n_out) st = dsv4_fcuda_head_rows(f, &f->mtp.hc_head, f->mtp.norm, hrow, dst, n_out, err);
        f->prof = prof;
        T(st);
    }
    T(dsv4_cuda_sync(f->ctx, err));   /* pinned h_in / h_hidx are rewritten by the next pass */
    for (int i = 0; i < ns; i++) {
        dsv4_status st = dsv4_kv_manager_mtp_commit(f->kv, mslot[i], mcount[i], NULL);
        DSV4_ASSERT(st == DSV4_OK);
    }
    return DSV4_OK;
}

dsv4_status dsv4_forward_cuda_step_mtp(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                       float *mtp_logits, int *n_mtp_rows, dsv4_err *err) {
    const int V = f->c->vocab_size;
    if (n_mtp_rows) *n_mtp_rows = 0;
    if (!f->mtp.w) return no_mtp(f, err);
    if (n_steps <= 0 || !steps) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: empty batch");
    /* Every sequence in sync (spec.h): the MTP has run every row whose next token is known. */
    for (int i = 0; i < n_steps; i++) {
        const int slot = steps[i].slot;
        DSV4_TRY(dsv4_mtp_check_sync(f->kv, slot, err));
        const long len = dsv4_kv_access_seq_len(f->kv, slot);
        /* The kept state must be of position len - 1: this slot's tokens all came through this call. */
        if (len > 0 && f->mtp_hlen[slot] != len)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "spec: slot %d: no kept final state at position %ld (its "
                                "tokens were not fed through the MTP step)", slot, len - 1);
    }
    /* Where each slot's MTP rows go: rows in step order, then position order (the CPU's dsv4_spec_step). */
    long total = 0;
    for (int i = 0; i < n_steps; i++) {
        const int slot = steps[i].slot, n = steps[i].n_tokens > 0 ? steps[i].n_tokens : 0;
        const long len = dsv4_kv_access_seq_len(f->kv, slot);
        f->mtp_first[slot] = len > 0 ? len - 1 : 0;
        f->mtp_dst[slot] = mtp_logits ? mtp_logits + (size_t)V * (size_t)total : NULL;
        total += (len > 0) + n - 1 > 0 ? (len > 0) + n - 1 : 0;
    }
    f->mtp_in_step = 1;
    dsv4_status st = dsv4_forward_cuda_step(f, steps, n_steps, logits, err);
    f->mtp_in_step = 0;
    for (int i = 0; i < n_steps; i++) f->mtp_dst[steps[i].slot] = NULL;
    if (st == DSV4_OK && n_mtp_rows) *n_mtp_rows = (int)total;
    return st;
}

/* ==== speculative decoding support ===================================================================== */

dsv4_status dsv4_forward_cuda_step_hidden(dsv4_forward_cuda *f, const dsv4_seq_step *steps, int n_steps, float *logits,
                                          float *hidden, dsv4_err *err) {
    if (!f->mtp.w) return no_mtp(f, err);   /* the host staging of the states exists with the MTP block */
    f->hid_dst = hidden;
    dsv4_status st = dsv4_forward_cuda_step(f, steps, n_steps, logits, err);
    f->hid_dst = NULL;
    return st;
}

dsv4_status dsv4_forward_cuda_mtp_state(dsv4_forward_cuda *f, int slot, float *get, const float *set, dsv4_err *err) {
    const size_t HD = (size_t)f->c->hc_mult * f->c->dim;
    if (!f->mtp.w) return no_mtp(f, err);
    if (!dsv4_kv_access_slot_valid(f->kv, slot))
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: slot %d is not admitted", slot);
    const long len = dsv4_kv_access_seq_len(f->kv, slot);
    uint16_t *row = f->mtp_hl + HD * (size_t)slot;
    T(dsv4_glue_set_device(f->ctx, err));
    if (get) {
        if (len == 0 || f->mtp_hlen[slot] != len)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "mtp: slot %d: no kept final state at position %ld", slot,
                                len - 1);
        T(dsv4_cuda_download(f->ctx, f->h_hbf, row, sizeof(uint16_t) * HD, err));
        for (size_t k = 0; k < HD; k++) get[k] = dsv4_bf16_to_f32(f->h_hbf[k]);
    }
    if (set) {
        for (size_t k = 0; k < HD; k++) f->h_hbf[k] = dsv4_f32_to_bf16(set[k]);
        T(dsv4_cuda_upload(f->ctx, row, f->h_hbf, sizeof(uint16_t) * HD, err));
        f->mtp_hlen[slot] = len;
    }
    return DSV4_OK;
}

#endif /* DSV4_HAVE_CUDA */

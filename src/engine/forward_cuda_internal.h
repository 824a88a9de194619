/* forward_cuda_internal.h — what forward_cuda.c and forward_cuda_mtp.c share: the device weight types, the
 * forward's state (struct dsv4_forward_cuda), the step-input views and the few pass pieces the MTP block
 * reuses (one transformer block, the linears, the input upload). Internal to src/engine; nothing outside
 * the CUDA forward includes it. Only with DSV4_HAVE_CUDA. */
#ifndef DSV4_ENGINE_FORWARD_CUDA_INTERNAL_H
#define DSV4_ENGINE_FORWARD_CUDA_INTERNAL_H
#ifdef DSV4_HAVE_CUDA

#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"
#include "backend/cuda/cuda_step.h"
#include "engine/forward_cuda.h"
#include "engine/profile.h"
#include "kv/kv_schema.h"

#ifdef __cplusplus
extern "C" {
#endif

#define HIST_CAP 4096   /* greedy steps one decode_greedy call may run */
#define MAX_BUCKETS 16

/* ==== device weights ==================================================================================== */

typedef struct dlin { uint8_t *w, *s; int out, in; } dlin;             /* FP8 [out, in] + [out/128, in/128] */
typedef struct dhc { float *fn, *base, *scale; } dhc;
typedef struct dcmp {
    uint16_t *wkv, *wgate, *norm;    /* [coff*d, D], [coff*d, D], [d] */
    float *ape;                      /* [ratio, coff*d] */
    int ratio, d, coff;
} dcmp;
typedef struct dexp {
    uint8_t *w, *s;                  /* stacked [E][...] */
    size_t w_stride, s_stride;
    int out, in, fp4;
} dexp;

typedef struct dlayer {
    int ratio;
    dsv4_layer_kind kind;
    uint16_t *attn_norm, *ffn_norm, *q_norm, *kv_norm;
    dhc hc_attn, hc_ffn;
    dlin wq_a, wq_b, wkv, wo_b, idx_wq_b, sh1, sh2, sh3;
    uint16_t *wo_a;                  /* [G*R, gin] bf16, dequantized on the device */
    float *sink;                     /* [H] */
    dcmp cmp, icmp;
    uint16_t *idx_wproj;             /* [nIh, D] */
    uint16_t *gate_w;                /* [E, D] */
    float *gate_bias;                /* [E] or NULL */
    int64_t *tid2eid;                /* [vocab, k] or NULL */
    dexp e1, e2, e3;
    int n_comp;                      /* compressed rows in a query's attention list (topk / max entries / 0) */
    int max_e;                       /* most entries one sequence can hold (0 for SWA) */
} dlayer;

/* The MTP block's own input and head (its SWA block is an ordinary dlayer). */
typedef struct dmtp {
    const dsv4_mtp_weights *w;       /* borrowed host weights; NULL: no MTP block on this forward */
    dlin e_proj, h_proj;             /* FP8 [D, D] */
    uint16_t *enorm, *hnorm, *norm;  /* [D] */
    dhc hc_head;                     /* fn [hc, hc*D], base [hc], scale [1] */
} dmtp;

/* ==== the forward ======================================================================================= */

/* exec NULL: seen once but not captured yet (with a communicator a bucket's first pass runs eagerly, so that
 * NCCL sets up its connections for these message sizes outside a capture). */
typedef struct bucket { int n; void *exec; } bucket;

#define MAX_COLL_EVENTS 1024   /* collective timing: event pairs one pass may record */

struct dsv4_forward_cuda {
    const dsv4_model *m;              /* borrowed */
    const dsv4_config *c;             /* view */
    dsv4_cuda_ctx *ctx;               /* owned */
    dsv4_kv_manager *kv;              /* owned (device arenas) */
    dsv4_kv_mem_ops mem;              /* hook handed to the manager (ctx = this forward's context) */
    int R, S;                         /* max rows per pass, max sequences (= KV slots) */
    long msl;                         /* longest sequence */
    int use_graphs;
    int capacity_lists;               /* options.capacity_lists */
    int moe_grouped;                  /* DSV4_CUDA_MOE=grouped: routed experts through cuda_moe.h */
    dsv4_prof *prof;                  /* borrowed; non-NULL: eager passes, an event after every op group */
    double upload_gb, upload_gbps;
    /* weights */
    void *wbuf;                       /* owned device buffer with every weight */
    uint16_t *embed, *head, *norm;
    dhc hc_head;
    dlayer *L;                        /* [n_blocks] host array (owned) of device pointers */
    /* KV geometry */
    const dsv4_kv_schema *schema;     /* borrowed from kv */
    uint8_t *slots_base, *blocks_base;
    int32_t *d_bt;                    /* [max_requests, bt_ld] device mirror of the block tables */
    int32_t *bt_shadow;               /* host copy of what d_bt holds (owned) */
    int64_t bt_ld;
    /* workspace (one device buffer) */
    void *wsbuf;
    int32_t *in;                      /* [3R + 5S] step inputs: tok pos rseq | sslot spos0 srow0 sn head */
    int32_t *h_in;                    /* pinned host twin of `in` (owned) */
    int32_t *h_bt;                    /* pinned staging of block-table rows [S, bt_ld] (owned) */
    int32_t *hist, *ctr;              /* [HIST_CAP, S], [1] greedy history */
    uint16_t *X, *X2, *x, *a, *qa, *qr, *q, *o, *og, *ug, *u, *staging, *qI, *wI, *ent;
    uint16_t *eg, *eu, *ey, *sg, *su, *sy, *Xh, *hin, *ikeys;
    uint8_t *aq1, *as1, *aq2, *as2;
    uint8_t *moe_ws;                  /* [dsv4_cuda_moe_layout_bytes(R·k, ne)] sorted pairs (grouped MoE only) */
    float *post, *comb, *cproj, *gproj, *gv, *gs, *attn_ws, *logits_e, *eweights, *scores, *logits;
    int32_t *idx, *nlive, *e_slot, *e_w, *e_pos, *experts, *sel, *nkeys, *kstart, *amax;
    int staging_ring, staging_comp;   /* row offsets inside staging */
    int Kmax, max_e_csa;
    bucket buckets[MAX_BUCKETS];
    int n_buckets;
    /* layer hook (eager passes only) */
    dsv4_layer_dump_fn hook;
    void *hook_user;
    float *hook_f;                    /* [R, hc, D] host staging (owned) */
    uint16_t *hook_b;                 /* [R, hc, D] host staging (owned) */
    int hook_rows;                    /* real rows of the pass being enqueued (padding rows come after) */
    /* tensor/expert parallelism (options.comm; docs/MULTI_GPU.md) */
    dsv4_comm *comm;                  /* borrowed; NULL: single GPU, no collective */
    dsv4_shard sh;                    /* the model's shard (whole model on one GPU) */
    float *red;                       /* [R, D] FP32 all-reduce buffer (embedding, wo_b, MoE partials) */
    uint16_t *sc16;                   /* [R, max_e_csa] BF16 indexer scores for their all-reduce */
    float *lgath;                     /* [world, S, nv] head slices, all-gathered (rank-major) */
    /* collective timing (eager passes) */
    int time_coll;
    void **coll_ev;                   /* [2 * MAX_COLL_EVENTS] owned events */
    int n_coll;                       /* pairs recorded in the pass being enqueued */
    double coll_ms;                   /* last step: sum over its passes */
    int coll_calls;
    /* MTP block (spec §4.10; forward_cuda_mtp.c). Present when the checkpoint has mtp.0.* and one GPU runs the
     * whole model (n_blocks = n_layers + 1: L[n_layers] is the MTP's SWA block, KV layer n_layers its ring). */
    int n_blocks;                     /* entries of L: n_layers, or n_layers + 1 with the MTP block */
    dmtp mtp;                         /* device weights of the MTP's own input and head (mtp.w NULL: none) */
    uint16_t *mtp_hl;                 /* [S + R, hc, D] bf16: rows 0..S-1 the main model's final HC state at the
                                         last fed position of each slot (step_mtp), rows S.. a copy of the
                                         pass's X (the gather source of the MTP rows) */
    uint16_t *mtp_hin;                /* [R, hc, D] bf16: the h of each MTP row of the pass */
    uint16_t *mtp_z;                  /* [hc, R, D] bf16, stream-major: hnorm(h), then the projections */
    uint16_t *mtp_y;                  /* [R, D] bf16: one stream's h_proj output */
    float *mtp_e32;                   /* [R, D] FP32: e_proj output widened (the exact add operand) */
    int32_t *mtp_hidx;                /* [R] device: mtp_hl row of each MTP row */
    int32_t *h_hidx;                  /* [R] pinned host twin of mtp_hidx (owned) */
    uint16_t *h_hbf;                  /* [R, hc, D] host staging of h / h_out (owned; dsv4_forward_cuda_mtp) */
    /* dsv4_forward_cuda_step_mtp while it runs (NULL otherwise): where MTP logits rows go, per slot */
    float **mtp_dst;                  /* [S] host: logits row of the slot's first MTP row of the step, or NULL */
    long *mtp_first;                  /* [S] host: position of that row */
    long *mtp_hlen;                   /* [S] host: the slot's length when its kept state (mtp_hl row) was written
                                         (its state is that of position mtp_hlen - 1); 0 = none */
    float *hid_dst;                   /* [step rows, hc, D] host, while dsv4_forward_cuda_step_hidden runs */
    int mtp_in_step;                  /* 1 while dsv4_forward_cuda_step_mtp drives dsv4_forward_cuda_step */
};

/* Views of the step inputs inside f->in (device) and f->h_in (host). */
typedef struct inputs {
    int32_t *tok, *pos, *rseq, *sslot, *spos0, *srow0, *sn, *head;
} inputs;

typedef struct piece {
    int slot, n;
    long pos0;
    const int32_t *tokens;
    float *logits;       /* where this piece's last-row logits go (all = 1: its first row's, then every row's), or NULL */
    int all;             /* 1: the logits of every row (DSV4_LOGITS_ALL) */
    float *hidden;       /* [n, hc, D] where the final states of its rows go (dsv4_forward_cuda_step_hidden), or NULL */
} piece;

/* ---- shared pass pieces (forward_cuda.c) ---------------------------------------------------------------- */

/* Views of the step inputs at base (f->in on the device, f->h_in on the host). */
inputs dsv4_fcuda_inputs(const dsv4_forward_cuda *f, int32_t *base);
/* One transformer block (attention + MoE with their hyper-connections) of layer `layer` (< f->n_blocks) over
 * f->X [rows, hc, D], in place, for the step described by gs / in (device inputs). */
dsv4_status dsv4_fcuda_block(dsv4_forward_cuda *f, const dsv4_glue_step *gs, const inputs *in, int rows, int layer,
                             dsv4_err *err);
/* FP8 linear of an act-quantized activation; BF16 linear (cuBLASLt). Enqueued on f's stream. */
dsv4_status dsv4_fcuda_lin8(dsv4_forward_cuda *f, const uint8_t *xq, const uint8_t *xs, int M, const dlin *l,
                            uint16_t *y, dsv4_err *err);
/* The head (hc_head hch, RMSNorm norm, the shared head) on rows hrow[0..n) of f->X, in chunks of S rows;
 * row i's FP32 logits [vocab] are downloaded to dst[i]. Waits for the device. One rank (world 1) only. */
dsv4_status dsv4_fcuda_head_rows(dsv4_forward_cuda *f, const dhc *hch, const uint16_t *norm, const int32_t *hrow,
                                 float *const *dst, int n, dsv4_err *err);
/* Block-table rows of slots that changed since the device saw them; the pinned step inputs to f->in. */
dsv4_status dsv4_fcuda_sync_block_tables(dsv4_forward_cuda *f, const int *slots, int n, dsv4_err *err);
dsv4_status dsv4_fcuda_upload_inputs(dsv4_forward_cuda *f, dsv4_err *err);

/* ---- the MTP block (forward_cuda_mtp.c) ------------------------------------------------------------------ */

/* After a main pass of dsv4_forward_cuda_step_mtp over pieces pc[np] (committed, X still on the device):
 * runs and commits the MTP rows whose next token the pass made known, writes their logits where
 * f->mtp_dst says, and keeps each slot's last final state in f->mtp_hl. */
dsv4_status dsv4_fcuda_mtp_after_pass(dsv4_forward_cuda *f, const piece *pc, int np, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif /* DSV4_HAVE_CUDA */
#endif

/* weights.h — typed views of every tensor of a DeepSeek V4 checkpoint, bound by name from the mmapped
 * safetensors files after validation (spec §2.3). Pointers are borrowed views into the checkpoint's
 * mappings (valid while the dsv4_checkpoint is open); absent optional tensors are NULL.
 * Ownership: dsv4_model_weights owns only its arrays (layers, mtp, expert_storage) and the aligned copies
 * of tensors whose data is not aligned to their element size in the file (safetensors does not align
 * tensors; a misaligned F32/I64/BF16 tensor is copied once at bind time so typed pointers are valid).
 * Everything else points into the checkpoint: close the checkpoint only after dsv4_model_weights_free. */
#ifndef DSV4_MODEL_WEIGHTS_H
#define DSV4_MODEL_WEIGHTS_H

#include <stdint.h>

#include "core/status.h"
#include "dsv4_config.h"

#ifdef __cplusplus
extern "C" {
#endif

/* FP8 block-quantized linear: w [out, in] e4m3, scale [ceil(out/128), ceil(in/128)] e8m0. */
typedef struct dsv4_fp8_linear {
    const uint8_t *w;
    const uint8_t *scale;
    int out, in;
} dsv4_fp8_linear;

/* Routed expert matrix. fp4: w [out, in/2] packed e2m1 (low nibble = even element), scale [out, in/32]
 * e8m0. If the checkpoint stores FP8 experts (expert_dtype fp8), is_fp4 = 0 and the layout is as
 * dsv4_fp8_linear. */
typedef struct dsv4_expert_linear {
    const uint8_t *w;
    const uint8_t *scale;
    int out, in;
    int is_fp4;
} dsv4_expert_linear;

typedef struct dsv4_compressor_weights {
    const uint16_t *wkv;     /* [coff*d, D] bf16 */
    const uint16_t *wgate;   /* [coff*d, D] bf16 */
    const float *ape;        /* [ratio, coff*d] f32 */
    const uint16_t *norm;    /* [d] bf16 */
    int ratio, d, coff;      /* coff = 2 when ratio == 4 (overlap) else 1 */
} dsv4_compressor_weights;

typedef struct dsv4_hc_weights {
    const float *fn;         /* [mix, hc*D] f32; mix = (2+hc)*hc for attn/ffn, hc for the head */
    const float *base;       /* [mix] */
    const float *scale;      /* [3] for attn/ffn, [1] for the head */
} dsv4_hc_weights;

typedef struct dsv4_layer_weights {
    dsv4_layer_kind kind;
    int ratio;
    const uint16_t *attn_norm, *ffn_norm;     /* [D] bf16 */
    dsv4_hc_weights hc_attn, hc_ffn;
    /* attention */
    dsv4_fp8_linear wq_a;                     /* [QL, D] */
    const uint16_t *q_norm;                   /* [QL] */
    dsv4_fp8_linear wq_b;                     /* [H*hd, QL] */
    dsv4_fp8_linear wkv;                      /* [hd, D] */
    const uint16_t *kv_norm;                  /* [hd] */
    dsv4_fp8_linear wo_a;                     /* [G*R, (H/G)*hd]; the official model runs it in BF16 */
    dsv4_fp8_linear wo_b;                     /* [D, G*R] */
    const float *attn_sink;                   /* [H] */
    dsv4_compressor_weights compressor;       /* ratio != 0 only (else all NULL) */
    /* indexer (CSA only; else NULL) */
    dsv4_fp8_linear idx_wq_b;                 /* [nIh*dIh, QL] */
    const uint16_t *idx_weights_proj;         /* [nIh, D] bf16 */
    dsv4_compressor_weights idx_compressor;   /* ratio 4, d = index_head_dim */
    /* MoE */
    const uint16_t *gate_w;                   /* [E, D] bf16 */
    const float *gate_bias;                   /* [E] f32, learned-routing layers; NULL on hash layers */
    const int64_t *tid2eid;                   /* [vocab, k] i64, hash layers; NULL otherwise */
    dsv4_expert_linear *experts_w1, *experts_w2, *experts_w3; /* [E] each (owned by dsv4_model_weights) */
    dsv4_fp8_linear shared_w1, shared_w2, shared_w3;          /* [I, D], [D, I], [I, D] */
} dsv4_layer_weights;

typedef struct dsv4_mtp_weights {
    dsv4_layer_weights block;                 /* SWA block with learned routing */
    dsv4_fp8_linear e_proj, h_proj;           /* [D, D] */
    const uint16_t *enorm, *hnorm, *norm;     /* [D] */
    dsv4_hc_weights hc_head;
} dsv4_mtp_weights;

typedef struct dsv4_model_weights {
    const dsv4_config *cfg;                   /* borrowed */
    const uint16_t *embed;                    /* [vocab, D] bf16 */
    const uint16_t *head;                     /* [vocab, D] bf16 */
    const uint16_t *norm;                     /* [D] */
    dsv4_hc_weights hc_head;                  /* fn [hc, hc*D], base [hc], scale [1] */
    dsv4_layer_weights *layers;               /* [n_layers] (owned) */
    dsv4_mtp_weights *mtp;                    /* NULL when the checkpoint has no MTP block (owned) */
    dsv4_expert_linear *expert_storage;       /* owned backing array for experts_w* */
    void **owned_copies;                      /* [n_owned_copies] aligned copies (owned) */
    int n_owned_copies;
} dsv4_model_weights;

struct dsv4_checkpoint;

/* Fills *w with views of every tensor of an open, validated checkpoint (w->cfg = &ck->cfg). On failure
 * *w is zeroed and nothing is allocated. */
dsv4_status dsv4_model_weights_bind(const struct dsv4_checkpoint *ck, dsv4_model_weights *w, dsv4_err *err);

/* Frees what _bind allocated; safe on a zeroed struct; leaves it zeroed. */
void dsv4_model_weights_free(dsv4_model_weights *w);

#ifdef __cplusplus
}
#endif
#endif

/* dsv4_config.h — the model configuration read from a Hugging Face config.json of DeepSeek V4 (spec §1).
 * Every size the engine uses comes from here; nothing assumes Flash or Pro. Parsed with jansson.
 * Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in src/model/config.c. */
#ifndef DSV4_CONFIG_H
#define DSV4_CONFIG_H

#include "dsv4_status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_MAX_LAYERS 128

typedef enum dsv4_layer_kind {
    DSV4_LAYER_SWA = 0,   /* compress ratio 0: sliding window only */
    DSV4_LAYER_CSA = 1,   /* ratio 4: overlapping compressor + lightning indexer */
    DSV4_LAYER_HCA = 2    /* any other ratio: non-overlapping compressor, all entries visible */
} dsv4_layer_kind;

typedef struct dsv4_config {
    int vocab_size;          /* 129280 */
    int dim;                 /* hidden_size D */
    int n_layers;            /* num_hidden_layers (main layers, MTP excluded) */
    int n_heads;             /* num_attention_heads H */
    int head_dim;            /* 512 */
    int rope_head_dim;       /* 64 */
    int q_lora_rank;         /* QL */
    int o_groups;            /* G */
    int o_lora_rank;         /* R */
    int window_size;         /* sliding_window, 128 */
    int compress_ratios[DSV4_MAX_LAYERS + 1]; /* n_layers + n_mtp entries; [n_layers] = MTP block */
    double rope_theta;       /* 10000, SWA layers, no YaRN */
    double compress_rope_theta; /* 160000, compressed layers, with YaRN */
    double rope_factor;      /* rope_scaling.factor */
    double original_seq_len; /* rope_scaling.original_max_position_embeddings */
    double beta_fast, beta_slow;
    int index_n_heads;       /* 64 */
    int index_head_dim;      /* 128 */
    int index_topk;          /* 512 Flash, 1024 Pro */
    int n_routed_experts;    /* E */
    int n_activated_experts; /* k = 6 */
    int n_shared_experts;    /* 1 */
    int moe_inter_dim;       /* I */
    int n_hash_layers;       /* layers < this are hash-routed via tid2eid */
    double route_scale;      /* routed_scaling_factor */
    double swiglu_limit;     /* 10 */
    int hc_mult;             /* 4 */
    int hc_sinkhorn_iters;   /* 20 */
    double hc_eps;           /* 1e-6 */
    double norm_eps;         /* rms_norm_eps 1e-6 */
    int n_mtp_layers;        /* num_nextn_predict_layers */
    int bos_token_id, eos_token_id;
    long max_position_embeddings;
    int expert_fp4;          /* 1: routed experts are packed FP4 (I8) + per-32 e8m0; 0: FP8 blocks.
                              * Root "expert_dtype"; -1 after dsv4_config_load when the key is absent
                              * (initial release): dsv4_checkpoint_open then decides from the weights. */
} dsv4_config;

/* Parses config.json at path and checks it for internal consistency (positive sizes, head_dim >
 * rope_head_dim, divisibility of heads by groups, compress_ratios length = n_layers + n_mtp_layers,
 * ratios >= 0, dims multiples of 128 where FP8 blocks need it, ...). On error fills err with the file
 * and the key at fault and leaves *cfg unspecified. */
dsv4_status dsv4_config_load(const char *path, dsv4_config *cfg, dsv4_err *err);

/* Kind of layer i (0 <= i <= n_layers; i == n_layers is the MTP block). */
dsv4_layer_kind dsv4_config_layer_kind(const dsv4_config *cfg, int layer);

#ifdef __cplusplus
}
#endif
#endif

/* dsv4_limits.h — every bound dsv4 puts on a value read from a file or given on the command line, in one place
 * (docs/RELIABILITY.md says why each was chosen). Config values that size loops or allocations are checked
 * against these at load (model/config.c), so no product of them overflows 64-bit arithmetic and no kernel
 * scratch array (sized by the same constants) can be overrun. Plain C, included by host code only.
 * Public header (include/, docs/ARCHITECTURE.md "Layering"). */
#ifndef DSV4_LIMITS_H
#define DSV4_LIMITS_H

/* ---- files ----------------------------------------------------------------------------------------- */
#define DSV4_LIMIT_CONFIG_BYTES     (16ull << 20)    /* config.json (the real ones are ~2 KB) */
#define DSV4_LIMIT_INDEX_BYTES      (256ull << 20)   /* model.safetensors.index.json (Pro: ~12 MB) */
#define DSV4_LIMIT_TOKENIZER_BYTES  (256ull << 20)   /* tokenizer.json (DeepSeek V4: ~8 MB) */
#define DSV4_LIMIT_ST_HEADER_BYTES  100000000ull     /* safetensors JSON header (the format's own 100 MB cap) */
#define DSV4_LIMIT_SHARD_BYTES      (1ull << 42)     /* one .safetensors shard (4 TiB; mmapped, not read) */
#define DSV4_LIMIT_TEXT_BYTES       (256ull << 20)   /* `tokenize --file`, a prompt file */
#define DSV4_LIMIT_IDS_FILE_BYTES   (64ull << 20)    /* `--prompt-ids FILE` (~10M ids) */

/* ---- config.json ----------------------------------------------------------------------------------- */
#define DSV4_LIMIT_VOCAB            (1 << 24)        /* vocab_size (V4: 129280) */
#define DSV4_LIMIT_DIM              65536            /* hidden_size, q_lora_rank, o_lora_rank, moe_intermediate_size */
#define DSV4_LIMIT_HEADS            1024             /* num_attention_heads, index_n_heads (V4: 64 / 128, 64) */
#define DSV4_LIMIT_HEAD_DIM         512              /* head_dim: the attention and compressor scratch (V4: 512) */
#define DSV4_LIMIT_ROPE_DIM         128              /* qk_rope_head_dim: the RoPE tables (V4: 64) */
#define DSV4_INDEX_HEAD_DIM         128              /* index_head_dim: the only value the indexer implements */
#define DSV4_LIMIT_WINDOW           65536            /* sliding_window (V4: 128) */
#define DSV4_LIMIT_TOPK             65536            /* index_topk (V4: 512 / 1024) */
#define DSV4_LIMIT_EXPERTS          1024             /* n_routed_experts: router scratch on CPU and GPU (V4: 256 / 384) */
#define DSV4_LIMIT_ACTIVE_EXPERTS   16               /* num_experts_per_tok: the GPU router's top-k list (V4: 6) */
#define DSV4_LIMIT_SHARED_EXPERTS   16               /* n_shared_experts (V4: 1) */
#define DSV4_LIMIT_HC               8                /* hc_mult: hyper-connection scratch (V4: 4) */
#define DSV4_LIMIT_SINKHORN_ITERS   100              /* hc_sinkhorn_iters: per row per sub-layer (V4: 20) */
#define DSV4_LIMIT_COMPRESS_RATIO   1024             /* compress_ratios[i]: compressor state per slot (V4: 4, 128) */
#define DSV4_LIMIT_POSITIONS        (1L << 30)       /* max_position_embeddings (V4: 1048576) */

/* ---- run time ---------------------------------------------------------------------------------------- */
#define DSV4_LIMIT_CTX_TOKENS       (1L << 30)       /* --ctx / max_tokens; the KV arena must also fit in memory */
#define DSV4_LIMIT_SEQS             65536            /* concurrent sequences (KV slots) of one engine */
#define DSV4_THREADS_MAX            1024             /* most threads a pool takes (the CLI's -t range) */

#endif

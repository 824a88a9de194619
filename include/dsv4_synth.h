/* dsv4_synth.h — random-weight DeepSeek V4 checkpoints written by dsv4 itself, in the exact released format
 * (spec §2: config.json with the released keys, official tensor names incl. mtp.0.*, FP8 e4m3 weights with
 * e8m0 128x128 block scales, packed FP4 experts with e8m0 per-32 scales, BF16/F32/I64 elsewhere, sharded
 * safetensors + model.safetensors.index.json). Used by the README's first command (no download needed)
 * and by benchmarks. The tensor list comes from dsv4_checkpoint_expected_visit, so what is written is by
 * construction what the loader expects.
 *
 * Magnitudes are chosen so that a forward stays finite and well-scaled: norms 1, linears with weight std
 * about 1/sqrt(fan_in), and the residual branch outputs (attn.wo_b, shared and routed w2) 20x smaller, so
 * the residual stream dominates. Weights are random, so the "model" outputs noise-like text; it exercises
 * every code path, shape and number format. Deterministic in (cfg, seed).
 * Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in src/model/synth.c. */
#ifndef DSV4_SYNTH_H
#define DSV4_SYNTH_H

#include <stdint.h>

#include "dsv4_status.h"
#include "dsv4_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_synth_options {
    uint64_t shard_max_bytes;    /* a new shard starts before a tensor that would pass this (default 4 GiB);
                                    the MTP block always gets its own last shard, as in the release */
    const char *tokenizer_json;  /* if non-NULL, copied to <dir>/tokenizer.json (borrowed path) */
    int verbose;                 /* 1: one progress line per shard on stderr */
} dsv4_synth_options;

void dsv4_synth_options_default(dsv4_synth_options *o);

/* Fills *cfg with a preset:
 *   "tiny":         dim 256, 4 layers [SWA(hash), CSA 4, HCA 16, CSA 4] + MTP, 4 heads x 512, q_lora 128,
 *                   o_groups 2 x o_lora 128, 8 experts (k 2) x 128, indexer 4 x 128 (top 8), window 128,
 *                   the real vocab 129280 (so the real tokenizer works; embed + head are 2 x 66 MB).
 *   "flash-shapes": the V4-Flash dimensions (spec §1.1) with n_layers main layers (Flash schedule prefix:
 *                   SWA, SWA, then CSA/HCA alternating; hash layers min(3, n)) and n_experts routed experts.
 * n_layers / n_experts <= 0 keep the preset's value (tiny: 4 / 8; flash-shapes: 4 / 16). For "tiny" a
 * different n_layers repeats the CSA/HCA alternation after layer 0. */
dsv4_status dsv4_synth_config_preset(const char *name, int n_layers, int n_experts, dsv4_config *cfg,
                                     dsv4_err *err);

/* Writes config.json, model-0000i-of-0000N.safetensors and model.safetensors.index.json into dir (created
 * if missing; existing files of those names are replaced). Every file is written under a temporary name
 * ("<name>.tmp.<pid>.XXXXXX") and renamed into place, so a process reading or mapping dir meanwhile sees
 * either the old or the new file, whole (never a truncated mapping: SIGBUS). opt may be NULL (defaults).
 * On failure the files already renamed stay (each one complete) and the temporary one is removed; err
 * names the file. */
dsv4_status dsv4_synth_write(const dsv4_config *cfg, const char *dir, uint64_t seed,
                             const dsv4_synth_options *opt, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

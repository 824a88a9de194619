/* test_kv_configs.h — hand-filled dsv4_config values for the KV tests (spec §1.1): Flash, Pro, and tiny
 * configurations with non-default ratios. Only the fields the KV cache reads are set; the rest stay 0.
 * Header-only (static functions) so each test_kv_*.c binary stays one translation unit. */
#ifndef DSV4_TEST_KV_CONFIGS_H
#define DSV4_TEST_KV_CONFIGS_H

#include <string.h>

#include "dsv4_config.h"

static inline void kvtest_config_common(dsv4_config *c, int n_layers, int head_dim, int rope, int window, int index_dim) {
    memset(c, 0, sizeof *c);
    c->n_layers = n_layers;
    c->n_mtp_layers = 1;
    c->head_dim = head_dim;
    c->rope_head_dim = rope;
    c->window_size = window;
    c->index_n_heads = 64;
    c->index_head_dim = index_dim;
}

/* V4-Flash: 43 layers, compress_ratios [0,0] + [4,128]x20 + [4,0] (MTP last). */
static inline void kvtest_config_flash(dsv4_config *c) {
    kvtest_config_common(c, 43, 512, 64, 128, 128);
    c->dim = 4096;
    c->index_topk = 512;
    c->compress_ratios[0] = 0;
    c->compress_ratios[1] = 0;
    for (int i = 2; i < 42; i++) c->compress_ratios[i] = (i % 2 == 0) ? 4 : 128;
    c->compress_ratios[42] = 4;
    c->compress_ratios[43] = 0;
}

/* V4-Pro: 61 layers, compress_ratios [128,128] + [4,128]x29 + [4,0]. */
static inline void kvtest_config_pro(dsv4_config *c) {
    kvtest_config_common(c, 61, 512, 64, 128, 128);
    c->dim = 7168;
    c->index_topk = 1024;
    c->compress_ratios[0] = 128;
    c->compress_ratios[1] = 128;
    for (int i = 2; i < 60; i++) c->compress_ratios[i] = (i % 2 == 0) ? 4 : 128;
    c->compress_ratios[60] = 4;
    c->compress_ratios[61] = 0;
}

/* Tiny: 4 layers [0, 4, 8, 4] + MTP 0, head_dim 192 (nope 128 = two FP8 blocks), rope 64, window 16,
 * index_head_dim 64 (two FP4 blocks). Default block = 128 tokens (lcm 8 -> 128). */
static inline void kvtest_config_tiny(dsv4_config *c) {
    kvtest_config_common(c, 4, 192, 64, 16, 64);
    c->dim = 256;
    c->index_topk = 8;
    c->compress_ratios[0] = 0;
    c->compress_ratios[1] = 4;
    c->compress_ratios[2] = 8;
    c->compress_ratios[3] = 4;
    c->compress_ratios[4] = 0;
}

#endif

/* test_kv_schema.c — schema numbers (kv_schema.h) for V4-Flash, V4-Pro and tiny configs: entry formats,
 * block size, per-layer offsets (disjoint, aligned), blocks-for-tokens, and the KV bytes per token / fixed
 * bytes per request compared with spec §5.2 (adjusted for the padding chosen here). It prints the table
 * that docs/KV_CACHE.md quotes:
 *     make VARIANT=asan build/asan/tests/unit/test_kv_schema && build/asan/tests/unit/test_kv_schema */
#include <math.h>
#include <string.h>

#include "kv/kv_schema.h"
#include "test_kv_configs.h"
#include "test_util.h"

static int near(double a, double b, double tol) { return fabs(a - b) <= tol; }

/* Every region of a block (and of a slot) lies inside the stride, is aligned, and no two overlap. */
static void check_regions(const dsv4_kv_schema *s) {
    typedef struct { size_t off, len; } reg;
    reg b[2 * DSV4_KV_MAX_LAYERS], sl[3 * DSV4_KV_MAX_LAYERS];
    int nb = 0, ns = 0;
    for (int i = 0; i < s->n_layers; i++) {
        const dsv4_kv_layer_schema *L = &s->layer[i];
        sl[ns++] = (reg){L->ring_off, (size_t)s->window * s->entry.bytes};
        if (L->ratio == 0) continue;
        b[nb++] = (reg){L->main_off, L->main_bytes};
        sl[ns++] = (reg){L->cmp.off, L->cmp.bytes};
        if (L->kind == DSV4_LAYER_CSA) {
            b[nb++] = (reg){L->ikey_off, L->ikey_bytes};
            sl[ns++] = (reg){L->icmp.off, L->icmp.bytes};
        }
    }
    for (int pass = 0; pass < 2; pass++) {
        reg *r = pass ? sl : b;
        int n = pass ? ns : nb;
        size_t stride = pass ? s->slot_bytes : s->block_bytes;
        CHECK(stride % DSV4_KV_REGION_ALIGN == 0, "stride %zu aligned", stride);
        for (int i = 0; i < n; i++) {
            CHECK(r[i].off % (pass ? DSV4_KV_REGION_ALIGN : DSV4_KV_BLOCK_ALIGN) == 0, "region %d offset %zu aligned", i,
                  r[i].off);
            CHECK(r[i].off + r[i].len <= stride, "region %d inside the stride", i);
            for (int j = 0; j < i; j++)
                CHECK(r[i].off >= r[j].off + r[j].len || r[j].off >= r[i].off + r[i].len, "regions %d/%d overlap", i, j);
        }
    }
}

static void test_flash(void) {
    dsv4_config c;
    dsv4_kv_schema s;
    dsv4_err err;
    kvtest_config_flash(&c);
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_OK, "%s", err.msg);
    CHECK(s.n_layers == 44 && s.n_swa == 3 && s.n_csa == 21 && s.n_hca == 20, "layer counts %d %d %d %d", s.n_layers,
          s.n_swa, s.n_csa, s.n_hca);
    CHECK(s.block_tokens == 128, "block %d", s.block_tokens);
    CHECK(s.entry.nope == 448 && s.entry.n_scales == 7 && s.entry.rope_off == 448 && s.entry.scale_off == 576 &&
              s.entry.bytes == 592, "entry format %d %d %d %d", s.entry.nope, s.entry.rope_off, s.entry.scale_off,
          s.entry.bytes);
    CHECK(s.ikey.code_bytes == 64 && s.ikey.n_scales == 4, "ikey format");
    CHECK(s.layer[2].kind == DSV4_LAYER_CSA && s.layer[2].entries_per_block == 32, "CSA layer 2");
    CHECK(s.layer[3].kind == DSV4_LAYER_HCA && s.layer[3].entries_per_block == 1, "HCA layer 3");
    CHECK(s.layer[43].kind == DSV4_LAYER_SWA, "MTP is SWA");
    CHECK(s.layer[2].ikey_bytes == 32 * 68 && s.layer[2].ikey_scale_off == 32 * 64, "ikey region");
    /* Per block: 21 x (32*592 main + 32*68 indexer) + 20 x 592 (HCA, padded to 640 for the 64-byte region
     * alignment), stride rounded up to 256. */
    size_t want_block = (21 * (18944 + 2176) + 20 * 640 + 255) / 256 * 256;
    CHECK(s.block_bytes == want_block, "block bytes %zu vs %zu", s.block_bytes, want_block);
    /* Spec §5.2 compact figure before padding: 3509 B/token. */
    CHECK(near(dsv4_kv_schema_bytes_per_token_unpadded(&s), 21 * (583.0 / 4 + 17) + 20 * 583.0 / 128, 1e-9),
          "unpadded %.3f", dsv4_kv_schema_bytes_per_token_unpadded(&s));
    CHECK(near(dsv4_kv_schema_bytes_per_token_unpadded(&s), 3509, 1.0), "spec 3509");
    CHECK(dsv4_kv_schema_blocks_for_tokens(&s, 1) == 0 && dsv4_kv_schema_blocks_for_tokens(&s, 4) == 1 &&
              dsv4_kv_schema_blocks_for_tokens(&s, 128) == 1 && dsv4_kv_schema_blocks_for_tokens(&s, 131) == 1 &&
              dsv4_kv_schema_blocks_for_tokens(&s, 132) == 2 && dsv4_kv_schema_blocks_for_tokens(&s, 1 << 20) == 8192,
          "blocks for tokens");
    /* Fixed: 44 rings x 128 x 592 + 21 x (48 KiB + 12 KiB) + 20 x 512 KiB. */
    size_t want_fixed = 44 * 128 * 592 + 21 * (48 + 12) * 1024 + 20 * 512 * 1024;
    CHECK(s.slot_bytes == want_fixed, "slot bytes %zu vs %zu", s.slot_bytes, want_fixed);
    check_regions(&s);
    dsv4_kv_schema_report(&s, "V4-Flash", stdout);
}

static void test_pro(void) {
    dsv4_config c;
    dsv4_kv_schema s;
    dsv4_err err;
    kvtest_config_pro(&c);
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_OK, "%s", err.msg);
    CHECK(s.n_layers == 62 && s.n_swa == 1 && s.n_csa == 30 && s.n_hca == 31, "layer counts");
    CHECK(s.block_tokens == 128, "block");
    CHECK(near(dsv4_kv_schema_bytes_per_token_unpadded(&s), 5024, 1.0), "spec 5024: %.2f",
          dsv4_kv_schema_bytes_per_token_unpadded(&s));
    size_t want_block = (30 * (18944 + 2176) + 31 * 640 + 255) / 256 * 256;
    CHECK(s.block_bytes == want_block, "block bytes %zu", s.block_bytes);
    size_t want_fixed = 62 * 128 * 592 + 30 * (48 + 12) * 1024 + 31 * 512 * 1024;
    CHECK(s.slot_bytes == want_fixed, "slot bytes %zu vs %zu", s.slot_bytes, want_fixed);
    check_regions(&s);
    dsv4_kv_schema_report(&s, "V4-Pro", stdout);
}

static void test_tiny_and_general_ratios(void) {
    dsv4_config c;
    dsv4_kv_schema s;
    dsv4_err err;
    kvtest_config_tiny(&c);
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_OK, "%s", err.msg);
    CHECK(s.block_tokens == 128 && s.layer[1].entries_per_block == 32 && s.layer[2].entries_per_block == 16,
          "tiny block %d", s.block_tokens);
    CHECK(s.entry.nope == 128 && s.entry.n_scales == 2 && s.entry.rope_off == 128 && s.entry.scale_off == 256 &&
              s.entry.bytes == 272, "tiny entry %d", s.entry.bytes);
    CHECK(s.layer[2].cmp.present && !s.layer[2].cmp.overlap && s.layer[2].cmp.ratio == 8 && !s.layer[2].icmp.present,
          "ratio-8 layer is HCA, no overlap, no indexer");
    CHECK(s.layer[1].cmp.overlap && s.layer[1].icmp.present && s.layer[1].icmp.d == 64, "CSA");
    /* blocks: ratio 4 and 8 both need entries: 8 tokens -> 2 CSA entries, 1 HCA entry -> 1 block. */
    CHECK(dsv4_kv_schema_blocks_for_tokens(&s, 3) == 0 && dsv4_kv_schema_blocks_for_tokens(&s, 4) == 1 &&
              dsv4_kv_schema_blocks_for_tokens(&s, 129) == 1 && dsv4_kv_schema_blocks_for_tokens(&s, 132) == 2,
          "tiny blocks_for_tokens");
    check_regions(&s);
    dsv4_kv_schema_report(&s, "tiny [0,4,8,4|0]", stdout);

    /* Explicit block size; a non-power-of-two ratio. */
    CHECK(dsv4_kv_schema_init(&s, &c, 16, &err) == DSV4_OK, "%s", err.msg);
    CHECK(s.block_tokens == 16 && s.layer[1].entries_per_block == 4 && s.layer[2].entries_per_block == 2, "bt 16");
    CHECK(dsv4_kv_schema_init(&s, &c, 12, &err) == DSV4_ERR_INVALID_ARG, "12 is not a multiple of 8");
    c.compress_ratios[2] = 12;
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_OK, "%s", err.msg);
    CHECK(s.block_tokens == 132 && s.layer[2].entries_per_block == 11 && s.layer[1].entries_per_block == 33,
          "lcm(4,12)=12 -> 132: %d", s.block_tokens);
    /* ratio 12 layer: 11 tokens -> 0 entries; CSA needs 2 entries -> 1 block. */
    CHECK(dsv4_kv_schema_blocks_for_tokens(&s, 11) == 1 && dsv4_kv_schema_blocks_for_tokens(&s, 132) == 1 &&
              dsv4_kv_schema_blocks_for_tokens(&s, 136) == 2, "ratio 12 blocks");
    check_regions(&s);

    /* Only SWA layers: nothing to page. */
    for (int i = 0; i < 5; i++) c.compress_ratios[i] = 0;
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_OK, "%s", err.msg);
    CHECK(s.block_bytes == 0 && dsv4_kv_schema_blocks_for_tokens(&s, 1000) == 0, "SWA-only");
}

static void test_config_errors(void) {
    dsv4_config c;
    dsv4_kv_schema s;
    dsv4_err err;
    kvtest_config_tiny(&c);
    c.rope_head_dim = 32; /* nope 160, not a multiple of 64 */
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_ERR_CONFIG, "nope %% 64");
    kvtest_config_tiny(&c);
    c.index_head_dim = 48;
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_ERR_CONFIG, "index_head_dim %% 32");
    kvtest_config_tiny(&c);
    c.window_size = 0;
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_ERR_CONFIG, "window");
    kvtest_config_tiny(&c);
    c.compress_ratios[1] = -4;
    CHECK(dsv4_kv_schema_init(&s, &c, 0, &err) == DSV4_ERR_CONFIG, "negative ratio");
    printf("  last error: %s\n", err.msg);
}

int main(void) {
    RUN(test_flash);
    RUN(test_pro);
    RUN(test_tiny_and_general_ratios);
    RUN(test_config_errors);
    return test_finish();
}

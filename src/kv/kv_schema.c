/* kv_schema.c — derives the KV storage schema (formats, per-layer offsets, strides) from the config; see
 * kv_schema.h. Pure arithmetic: no allocation, no global state. */
#include "kv/kv_schema.h"

#include <string.h>

#include "core/status.h"

static size_t round_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

static int64_t gcd64(int64_t a, int64_t b) {
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

dsv4_layer_kind dsv4_kv_kind_of_ratio(int ratio) {
    if (ratio == 0) return DSV4_LAYER_SWA;
    if (ratio == 4) return DSV4_LAYER_CSA;
    return DSV4_LAYER_HCA;
}

/* Lays out one compressor state at byte offset *cursor of a slot; advances *cursor. */
static void cmp_layout(dsv4_kv_cmp_schema *c, int ratio, int d, size_t *cursor) {
    memset(c, 0, sizeof *c);
    c->present = 1;
    c->ratio = ratio;
    c->d = d;
    c->overlap = (ratio == 4);
    size_t prev = c->overlap ? (size_t)ratio * d * sizeof(float) : 0;
    size_t cur = (size_t)ratio * (c->overlap ? 2 : 1) * d * sizeof(float);
    c->off = *cursor;
    size_t o = c->off;
    if (c->overlap) {
        c->kv_prev_off = o;
        o = round_up(o + prev, DSV4_KV_REGION_ALIGN);
        c->sc_prev_off = o;
        o = round_up(o + prev, DSV4_KV_REGION_ALIGN);
    }
    c->kv_cur_off = o;
    o = round_up(o + cur, DSV4_KV_REGION_ALIGN);
    c->sc_cur_off = o;
    o = round_up(o + cur, DSV4_KV_REGION_ALIGN);
    c->bytes = o - c->off;
    *cursor = o;
}

dsv4_status dsv4_kv_schema_init(dsv4_kv_schema *s, const dsv4_config *cfg, int block_tokens, dsv4_err *err) {
    if (!s || !cfg) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "kv schema: NULL argument");
    int nl = cfg->n_layers + cfg->n_mtp_layers;
    if (cfg->n_layers <= 0 || cfg->n_mtp_layers < 0 || nl > DSV4_KV_MAX_LAYERS)
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "kv schema: n_layers %d + n_mtp_layers %d out of range [1, %d]",
                            cfg->n_layers, cfg->n_mtp_layers, DSV4_KV_MAX_LAYERS);
    if (cfg->head_dim <= 0 || cfg->rope_head_dim < 0 || cfg->rope_head_dim >= cfg->head_dim ||
        cfg->rope_head_dim % 2 != 0)
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "kv schema: head_dim %d / rope_head_dim %d invalid",
                            cfg->head_dim, cfg->rope_head_dim);
    if ((cfg->head_dim - cfg->rope_head_dim) % DSV4_KV_FP8_BLOCK != 0)
        return dsv4_err_set(err, DSV4_ERR_CONFIG,
                            "kv schema: head_dim - rope_head_dim = %d is not a multiple of the FP8 block %d",
                            cfg->head_dim - cfg->rope_head_dim, DSV4_KV_FP8_BLOCK);
    if (cfg->window_size <= 0)
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "kv schema: window_size %d must be > 0", cfg->window_size);

    /* Kinds and the lcm of the ratios. */
    int64_t lcm = 1;
    int min_ratio = 0, n_csa = 0, n_hca = 0, n_swa = 0;
    for (int i = 0; i < nl; i++) {
        int r = cfg->compress_ratios[i];
        if (r < 0 || r > (1 << 20))
            return dsv4_err_set(err, DSV4_ERR_CONFIG, "kv schema: compress_ratios[%d] = %d out of range", i, r);
        if (r == 0) { n_swa++; continue; }
        if (r == 4) n_csa++;
        else n_hca++;
        if (min_ratio == 0 || r < min_ratio) min_ratio = r;
        lcm = lcm / gcd64(lcm, r) * r;
        if (lcm > (1 << 24))
            return dsv4_err_set(err, DSV4_ERR_CONFIG, "kv schema: lcm of compress_ratios exceeds 2^24");
    }
    if (n_csa && (cfg->index_head_dim <= 0 || cfg->index_head_dim % DSV4_KV_FP4_BLOCK != 0))
        return dsv4_err_set(err, DSV4_ERR_CONFIG, "kv schema: index_head_dim %d must be a positive multiple of %d",
                            cfg->index_head_dim, DSV4_KV_FP4_BLOCK);
    int64_t bt;
    if (block_tokens == 0) {
        bt = (DSV4_KV_MIN_BLOCK_TOKENS + lcm - 1) / lcm * lcm;
    } else {
        if (block_tokens < 0 || block_tokens % lcm != 0)
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG,
                                "kv schema: block_tokens %d is not a positive multiple of lcm(ratios) = %lld",
                                block_tokens, (long long)lcm);
        bt = block_tokens;
    }

    memset(s, 0, sizeof *s);
    s->n_layers = nl;
    s->n_main_layers = cfg->n_layers;
    s->head_dim = cfg->head_dim;
    s->rope_head_dim = cfg->rope_head_dim;
    s->index_head_dim = n_csa ? cfg->index_head_dim : 0;
    s->window = cfg->window_size;
    s->block_tokens = (int)bt;
    s->min_ratio = min_ratio;
    s->n_swa = n_swa;
    s->n_csa = n_csa;
    s->n_hca = n_hca;

    dsv4_kv_entry_fmt *e = &s->entry;
    e->nope = cfg->head_dim - cfg->rope_head_dim;
    e->rope = cfg->rope_head_dim;
    e->n_scales = e->nope / DSV4_KV_FP8_BLOCK;
    e->rope_off = (int)round_up((size_t)e->nope, DSV4_KV_ENTRY_ALIGN);
    e->scale_off = e->rope_off + 2 * e->rope;
    e->bytes = (int)round_up((size_t)(e->scale_off + e->n_scales), DSV4_KV_ENTRY_ALIGN);
    if (n_csa) {
        s->ikey.dim = cfg->index_head_dim;
        s->ikey.code_bytes = cfg->index_head_dim / 2;
        s->ikey.n_scales = cfg->index_head_dim / DSV4_KV_FP4_BLOCK;
    }

    size_t bcur = 0, scur = 0;
    for (int i = 0; i < nl; i++) {
        dsv4_kv_layer_schema *L = &s->layer[i];
        int r = cfg->compress_ratios[i];
        L->kind = dsv4_kv_kind_of_ratio(r);
        L->ratio = r;
        L->ring_off = scur;
        scur = round_up(scur + (size_t)s->window * e->bytes, DSV4_KV_REGION_ALIGN);
        if (r == 0) continue;
        L->entries_per_block = (int)(bt / r);
        L->main_off = bcur;
        L->main_bytes = (size_t)L->entries_per_block * e->bytes;
        bcur = round_up(bcur + L->main_bytes, DSV4_KV_BLOCK_ALIGN);
        cmp_layout(&L->cmp, r, cfg->head_dim, &scur);
        if (L->kind == DSV4_LAYER_CSA) {
            size_t E = (size_t)L->entries_per_block;
            L->ikey_off = bcur;
            L->ikey_scale_off = E * s->ikey.code_bytes;
            L->ikey_bytes = round_up(E * (s->ikey.code_bytes + s->ikey.n_scales), 16);
            bcur = round_up(bcur + L->ikey_bytes, DSV4_KV_BLOCK_ALIGN);
            cmp_layout(&L->icmp, r, cfg->index_head_dim, &scur);
        }
    }
    s->block_bytes = round_up(bcur, DSV4_KV_REGION_ALIGN);
    s->slot_bytes = round_up(scur, DSV4_KV_REGION_ALIGN);
    return DSV4_OK;
}

int64_t dsv4_kv_schema_blocks_for_tokens(const dsv4_kv_schema *s, int64_t n_tokens) {
    int64_t best = 0;
    if (n_tokens <= 0) return 0;
    for (int i = 0; i < s->n_layers; i++) {
        const dsv4_kv_layer_schema *L = &s->layer[i];
        if (L->ratio == 0) continue;
        int64_t entries = n_tokens / L->ratio;
        int64_t blocks = (entries + L->entries_per_block - 1) / L->entries_per_block;
        if (blocks > best) best = blocks;
    }
    return best;
}

double dsv4_kv_schema_bytes_per_token(const dsv4_kv_schema *s) {
    return (double)s->block_bytes / (double)s->block_tokens;
}

double dsv4_kv_schema_bytes_per_token_unpadded(const dsv4_kv_schema *s) {
    double main_entry = s->entry.nope + 2.0 * s->entry.rope + s->entry.n_scales;
    double ikey = s->ikey.code_bytes + s->ikey.n_scales;
    double t = 0;
    for (int i = 0; i < s->n_layers; i++) {
        const dsv4_kv_layer_schema *L = &s->layer[i];
        if (L->ratio == 0) continue;
        t += main_entry / L->ratio;
        if (L->kind == DSV4_LAYER_CSA) t += ikey / L->ratio;
    }
    return t;
}

size_t dsv4_kv_schema_fixed_bytes_per_request(const dsv4_kv_schema *s) { return s->slot_bytes; }

void dsv4_kv_schema_report(const dsv4_kv_schema *s, const char *name, FILE *f) {
    const double KiB = 1024.0, MiB = 1024.0 * 1024.0, GiB = MiB * 1024.0;
    size_t ring = 0, cmp_csa = 0, cmp_hca = 0, blk_csa = 0, blk_hca = 0;
    for (int i = 0; i < s->n_layers; i++) {
        const dsv4_kv_layer_schema *L = &s->layer[i];
        ring += (size_t)s->window * s->entry.bytes;
        if (L->kind == DSV4_LAYER_CSA) {
            cmp_csa += L->cmp.bytes + L->icmp.bytes;
            blk_csa += L->main_bytes + L->ikey_bytes;
        } else if (L->kind == DSV4_LAYER_HCA) {
            cmp_hca += L->cmp.bytes;
            blk_hca += L->main_bytes;
        }
    }
    double bpt = dsv4_kv_schema_bytes_per_token(s), bpt_u = dsv4_kv_schema_bytes_per_token_unpadded(s);
    fprintf(f, "## %s: %d layers (%d SWA, %d CSA, %d HCA; MTP included), window %d, block %d tokens\n", name,
            s->n_layers, s->n_swa, s->n_csa, s->n_hca, s->window, s->block_tokens);
    fprintf(f, "| quantity | value |\n|---|---|\n");
    fprintf(f, "| main/window entry | %d B (%d e4m3 @0, %d BF16 rope @%d, %d e8m0 @%d; %d B unpadded) |\n",
            s->entry.bytes, s->entry.nope, s->entry.rope, s->entry.rope_off, s->entry.n_scales, s->entry.scale_off,
            s->entry.nope + 2 * s->entry.rope + s->entry.n_scales);
    if (s->n_csa)
        fprintf(f, "| indexer key | %d B (%d B packed e2m1 + %d e8m0, SoA per block) |\n",
                s->ikey.code_bytes + s->ikey.n_scales, s->ikey.code_bytes, s->ikey.n_scales);
    fprintf(f, "| block stride (all compressed layers) | %zu B (CSA layers %zu B, HCA layers %zu B, alignment %zu B) |\n",
            s->block_bytes, blk_csa, blk_hca, s->block_bytes - blk_csa - blk_hca);
    fprintf(f, "| KV growth per token | %.2f B (unpadded formats: %.2f B) |\n", bpt, bpt_u);
    fprintf(f, "| KV at 128K tokens | %.1f MiB |\n", bpt * 131072.0 / MiB);
    fprintf(f, "| KV at 1M tokens | %.3f GiB |\n", bpt * 1048576.0 / GiB);
    fprintf(f, "| fixed per request (slot stride) | %zu B = %.2f MiB |\n", s->slot_bytes, s->slot_bytes / MiB);
    fprintf(f, "| - window rings (%d x %d x %d B) | %.1f KiB |\n", s->n_layers, s->window, s->entry.bytes,
            ring / KiB);
    fprintf(f, "| - compressor state CSA (main + indexer) | %.1f KiB |\n", cmp_csa / KiB);
    fprintf(f, "| - compressor state HCA | %.1f KiB |\n", cmp_hca / KiB);
}

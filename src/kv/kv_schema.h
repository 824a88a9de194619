/* kv_schema.h — the KV-cache storage schema derived from a dsv4_config (spec §4.4–§4.7, §5; design §3):
 * per layer, what is cached (window ring, compressed entries, indexer keys, compressor tail state), the
 * byte format of one entry, and where everything sits inside the two memory arenas as byte offsets:
 *
 *   block arena  [n_blocks][block_bytes]   growing storage, paged; block id b covers `block_tokens`
 *                                          original tokens of ONE sequence in EVERY compressed layer
 *   slot arena   [n_slots][slot_bytes]     fixed per-request state (window rings, compressor state)
 *
 * Everything is plain offsets so that a CUDA backend allocates the same arenas on the device and computes
 * the same addresses. This file owns only arithmetic on the config: it allocates nothing and must not
 * assume Flash or Pro sizes (every size is read from dsv4_config; any non-zero ratio other than 4 is an HCA
 * layer with that ratio).
 *
 * Formats (docs/KV_CACHE.md explains the choices):
 *   main / window entry (AoS, one record per entry, `entry.bytes` stride, multiple of 16):
 *     [0, nope)                      e4m3 codes of dims 0..nope-1        (nope = head_dim - rope_head_dim)
 *     [rope_off, rope_off+2*rope)    BF16 of dims nope..head_dim-1, little-endian uint16
 *     [scale_off, scale_off+nope/64) e8m0 exponent byte per 64-block of the nope dims
 *     [.., bytes)                    zero padding
 *   indexer keys (SoA inside one block's indexer region, entries_per_block keys E):
 *     [0, E*dim/2)                   packed e2m1 codes, key e at e*dim/2 (low nibble = even element)
 *     [E*dim/2, E*dim/2 + E*dim/32)  e8m0 scale per 32-block, key e at E*dim/2 + e*dim/32
 *   compressor tail state (FP32, raw per-token values, g includes ape; spec §4.5, §5.1):
 *     overlap (ratio 4):  kv_prev [r, d], sc_prev [r, d]   A-half (channels 0..d-1) of the previous window
 *                         kv_cur [r, 2d], sc_cur [r, 2d]   both halves of the current window, row t mod r
 *     non-overlap:        kv_cur [r, d],  sc_cur [r, d]
 *     empty rows: kv = 0, score = -inf. */
#ifndef DSV4_KV_SCHEMA_H
#define DSV4_KV_SCHEMA_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/status.h"
#include "dsv4_config.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_KV_REGION_ALIGN 256     /* slot regions, the block stride and the slot stride: multiples of this */
#define DSV4_KV_BLOCK_ALIGN 64       /* regions inside a block (a cache line; 256 would waste ~1.4% on Flash) */
#define DSV4_KV_ENTRY_ALIGN 16       /* main/window entry stride alignment (one 16-byte vector load) */
#define DSV4_KV_MIN_BLOCK_TOKENS 128 /* default block: smallest multiple of lcm(ratios) >= this */
#define DSV4_KV_FP8_BLOCK 64         /* nope dims fake-quantized per 64 (spec §4.3 step 2) */
#define DSV4_KV_FP4_BLOCK 32         /* indexer keys fake-quantized per 32 (spec §3.4) */
#define DSV4_KV_MAX_LAYERS (DSV4_MAX_LAYERS + 1)

/* Byte format of one main-compressed or window entry (head_dim values). */
typedef struct dsv4_kv_entry_fmt {
    int nope;       /* head_dim - rope_head_dim; multiple of 64; e4m3 codes at byte 0 */
    int rope;       /* rope_head_dim; BF16 values at rope_off */
    int n_scales;   /* nope / 64 e8m0 bytes at scale_off */
    int rope_off;   /* = nope rounded up to 16 */
    int scale_off;  /* = rope_off + 2*rope */
    int bytes;      /* record stride: scale_off + n_scales rounded up to 16 */
} dsv4_kv_entry_fmt;

/* Byte format of one indexer key (index_head_dim values), stored SoA per block. */
typedef struct dsv4_kv_ikey_fmt {
    int dim;        /* index_head_dim; multiple of 32 */
    int code_bytes; /* dim / 2 packed e2m1 */
    int n_scales;   /* dim / 32 e8m0 */
} dsv4_kv_ikey_fmt;

/* One compressor's tail state inside a slot. Offsets are bytes from the start of the slot. */
typedef struct dsv4_kv_cmp_schema {
    int present;    /* 0: layer has no such compressor; other fields 0 */
    int ratio;      /* r */
    int d;          /* value width (head_dim main, index_head_dim indexer) */
    int overlap;    /* 1 iff r == 4 (coff = 2) */
    size_t kv_prev_off, sc_prev_off; /* overlap only: [r, d] floats each */
    size_t kv_cur_off, sc_cur_off;   /* [r, coff*d] floats each */
    size_t off, bytes;               /* the whole state region [off, off+bytes) */
} dsv4_kv_cmp_schema;

typedef struct dsv4_kv_layer_schema {
    dsv4_layer_kind kind;  /* SWA (ratio 0), CSA (ratio 4), HCA (any other ratio) */
    int ratio;             /* compress ratio r, 0 for SWA */
    int entries_per_block; /* block_tokens / ratio; 0 for SWA */
    /* block arena, relative to the start of a block: */
    size_t main_off;       /* [entries_per_block, entry.bytes] compressed entries (0/unused for SWA) */
    size_t main_bytes;     /* entries_per_block * entry.bytes */
    size_t ikey_off;       /* CSA only: indexer region, see file header */
    size_t ikey_scale_off; /* CSA only: offset of the scales inside the indexer region = E * code_bytes */
    size_t ikey_bytes;     /* CSA only: E*(code_bytes + n_scales) rounded up to 16 */
    /* slot arena, relative to the start of a slot: */
    size_t ring_off;       /* [window, entry.bytes] window ring, slot(t) = t mod window */
    dsv4_kv_cmp_schema cmp;  /* main compressor (CSA, HCA) */
    dsv4_kv_cmp_schema icmp; /* indexer compressor (CSA only) */
} dsv4_kv_layer_schema;

typedef struct dsv4_kv_schema {
    int n_layers;          /* cfg n_layers + n_mtp_layers (every layer with a window ring, MTP included) */
    int n_main_layers;     /* cfg n_layers */
    int head_dim, rope_head_dim, index_head_dim, window;
    int block_tokens;      /* original tokens per block, a multiple of every non-zero ratio */
    int min_ratio;         /* smallest non-zero ratio (0 if no compressed layer) */
    int n_swa, n_csa, n_hca;
    dsv4_kv_entry_fmt entry;
    dsv4_kv_ikey_fmt ikey;
    size_t block_bytes;    /* block arena stride (0 if no compressed layer) */
    size_t slot_bytes;     /* slot arena stride */
    dsv4_kv_layer_schema layer[DSV4_KV_MAX_LAYERS]; /* [n_layers] */
} dsv4_kv_schema;

/* Derives the schema from cfg. block_tokens: 0 = default (smallest multiple of lcm(non-zero ratios) that
 * is >= DSV4_KV_MIN_BLOCK_TOKENS; 128 for Flash and Pro), otherwise it must be a positive multiple of every
 * non-zero ratio. Checks what the storage needs: head_dim > rope_head_dim, (head_dim - rope_head_dim) % 64
 * == 0, index_head_dim % 32 == 0 when a CSA layer exists, window_size > 0, ratios >= 0, layer count in
 * range. On error returns DSV4_ERR_CONFIG (or INVALID_ARG for a bad block_tokens) naming the field. */
dsv4_status dsv4_kv_schema_init(dsv4_kv_schema *s, const dsv4_config *cfg, int block_tokens, dsv4_err *err);

/* Kind of a layer by its ratio (same rule as dsv4_config.h: 0 SWA, 4 CSA, anything else HCA). */
dsv4_layer_kind dsv4_kv_kind_of_ratio(int ratio);

/* Blocks a sequence needs so that every compressed entry completed by its first n_tokens tokens has a
 * home: max over compressed layers of ceil(floor(n_tokens / r) / (block_tokens / r)). 0 for n_tokens <
 * min_ratio or when no layer is compressed. Entries are what need storage (spec §4.5 emission rule), so
 * 1..3 tokens need no block on a model whose smallest ratio is 4. */
int64_t dsv4_kv_schema_blocks_for_tokens(const dsv4_kv_schema *s, int64_t n_tokens);

/* Growth of KV storage per original token, bytes: block_bytes / block_tokens (includes entry and region
 * padding; excludes block-granularity slack of at most one block per sequence). */
double dsv4_kv_schema_bytes_per_token(const dsv4_kv_schema *s);

/* Same quantity with unpadded formats (583 B main entries, 68 B indexer keys for Flash/Pro), to compare
 * with spec §5.2's "compact, before padding" figures. */
double dsv4_kv_schema_bytes_per_token_unpadded(const dsv4_kv_schema *s);

/* Fixed bytes per request: the slot stride (window rings of every layer incl. MTP + compressor states).
 * The host-side block table (4 bytes per block of max_seq_len) is the manager's and not counted. */
size_t dsv4_kv_schema_fixed_bytes_per_request(const dsv4_kv_schema *s);

/* Writes a human-readable table of the schema (formats, per-kind sizes, growth, fixed bytes, totals at
 * 128K and 1M tokens) to f, titled with name. Used by tests/unit/test_kv_schema.c for docs/KV_CACHE.md. */
void dsv4_kv_schema_report(const dsv4_kv_schema *s, const char *name, FILE *f);

#ifdef __cplusplus
}
#endif
#endif

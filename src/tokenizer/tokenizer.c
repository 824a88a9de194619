/* tokenizer.c — load tokenizer.json, encode (added tokens -> regex splits -> byte-level BPE), decode and
 * token lookups (see dsv4_tokenizer.h). Owns the vocab, merge table, added-token tries and the BPE cache.
 * Must match Hugging Face `tokenizers` id for id; every deviation found is a bug (tests/unit/test_tokenizer.c
 * compares a committed corpus). Why not a whole-word vocab shortcut: the file does not set ignore_merges,
 * so HF always runs the merges, and a word in the vocab need not be reachable by them. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4_files.h"
#include "core/status.h"
#include "dsv4_limits.h"
#include "tokenizer/pretok.h"
#include "dsv4_tokenizer.h"

/* ================================================================================================
 * Hashing and tables
 * ================================================================================================ */

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    return h;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

/* String -> id map over byte strings stored in the token table (open addressing, power-of-two size). */
typedef struct {
    int32_t *slot; /* owned, [mask+1], -1 = empty; holds ids whose bytes live in the token table */
    size_t mask;
} str_map;

/* Pair -> merge map: key (left << 32 | right), value rank and merged id. */
typedef struct {
    uint64_t key;
    int32_t rank; /* -1 = empty */
    int32_t id;
} merge_slot;

/* One node of a byte trie for added-token matching (first-child / next-sibling lists). */
typedef struct {
    int32_t child, sibling, id; /* id = token ending here or -1 */
    unsigned char byte;
} trie_node;

typedef struct {
    trie_node *node; /* owned, node[0] is the root */
    size_t n, cap;
    unsigned char first[256]; /* bytes that start some token */
} trie;

typedef struct {
    uint32_t off;     /* into bytes */
    uint32_t len;
    unsigned char added, special, in_vocab;
} token_info;

/* BPE cache: piece bytes -> ids. Cleared wholesale when full (simple and bounded). */
typedef struct {
    uint64_t hash;
    uint32_t key_off, ids_off; /* into cache_keys / cache_ids */
    uint16_t key_len, n_ids;   /* key_len == 0 means empty slot */
} cache_slot;

#define CACHE_SLOTS (1u << 16)
#define CACHE_MAX_KEY 128
#define CACHE_KEY_ARENA (CACHE_SLOTS * 16u)
#define CACHE_ID_ARENA (CACHE_SLOTS * 4u)

typedef struct { int32_t rank, pos, id; } heap_item;
typedef struct { int32_t id, prev, next; } bpe_sym;

struct dsv4_tokenizer {
    size_t n_ids;          /* max id + 1 */
    token_info *tok;       /* owned, [n_ids] */
    char *bytes;           /* owned: raw bytes of every token */
    size_t bytes_len;
    str_map vocab;         /* BPE vocab (raw bytes -> id) */
    str_map added;         /* added-token content -> id */
    merge_slot *merge;     /* owned, [merge_mask+1] */
    size_t merge_mask;
    int32_t byte_id[256];  /* id of each single byte */
    trie tries[2];         /* [0] = normalized:false tokens, [1] = normalized:true (split in this order) */
    dsv4_pretok *pretok;   /* owned */
    /* BPE scratch + cache: mutated by encode */
    bpe_sym *sym;
    heap_item *heap;
    size_t scratch_cap;
    cache_slot *cache;
    char *cache_keys;
    int32_t *cache_ids;
    size_t cache_count, cache_keys_used, cache_ids_used;
};

static dsv4_status str_map_init(str_map *m, size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return DSV4_ERR_NOMEM;
    memset(m->slot, 0xff, cap * sizeof *m->slot);
    m->mask = cap - 1;
    return DSV4_OK;
}

static int32_t str_map_get(const dsv4_tokenizer *t, const str_map *m, const char *s, size_t n) {
    if (!m->slot) return -1;
    for (size_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (t->tok[id].len == n && !memcmp(t->bytes + t->tok[id].off, s, n)) return id;
    }
}

/* Inserts id (its bytes already in the table); a duplicate string keeps the first id. */
static void str_map_put(const dsv4_tokenizer *t, str_map *m, int32_t id) {
    const char *s = t->bytes + t->tok[id].off;
    size_t n = t->tok[id].len;
    for (size_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t o = m->slot[i];
        if (o < 0) { m->slot[i] = id; return; }
        if (t->tok[o].len == n && !memcmp(t->bytes + t->tok[o].off, s, n)) return;
    }
}

static const merge_slot *merge_get(const dsv4_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const merge_slot *s = &t->merge[i];
        if (s->rank < 0) return NULL;
        if (s->key == key) return s;
    }
}

/* ================================================================================================
 * Byte-level mapping (GPT-2): printable bytes stand for themselves, the other 68 map to U+0100..
 * ================================================================================================ */

static void byte_level_tables(int byte_to_cp[256], int cp_to_byte[324]) {
    int extra = 0;
    for (int i = 0; i < 324; i++) cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_cp[b] = printable ? b : 256 + extra++;
        cp_to_byte[byte_to_cp[b]] = b;
    }
}

/* Decodes one code point of valid UTF-8 at s (n > 0); returns its length. */
static int utf8_cp(const unsigned char *s, size_t n, int *cp) {
    if (s[0] < 0x80 || n < 2) { *cp = s[0]; return 1; }
    if (s[0] < 0xE0) { *cp = (s[0] & 0x1F) << 6 | (s[1] & 0x3F); return 2; }
    if (s[0] < 0xF0 || n < 4) { *cp = (s[0] & 0x0F) << 12 | (s[1] & 0x3F) << 6 | (s[2] & 0x3F); return 3; }
    *cp = (s[0] & 0x07) << 18 | (s[1] & 0x3F) << 12 | (s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    return 4;
}

/* Maps a byte-level token string to raw bytes in out (capacity >= n). Returns the length, or -1 when a
 * character is outside the byte-level alphabet (such tokens are not byte-level strings). */
static long byte_level_decode(const int cp_to_byte[324], const char *s, size_t n, char *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        int cp;
        i += utf8_cp((const unsigned char *)s + i, n - i, &cp);
        if (cp >= 324 || cp_to_byte[cp] < 0) return -1;
        out[o++] = (char)cp_to_byte[cp];
    }
    return (long)o;
}

/* ================================================================================================
 * Loading
 * ================================================================================================ */

static dsv4_status trie_add(trie *tr, const char *s, size_t n, int32_t id) {
    if (!tr->node) {
        tr->cap = 256;
        tr->node = malloc(tr->cap * sizeof *tr->node);
        if (!tr->node) return DSV4_ERR_NOMEM;
        tr->node[0] = (trie_node){-1, -1, -1, 0};
        tr->n = 1;
    }
    int32_t cur = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t ch = tr->node[cur].child;
        while (ch >= 0 && tr->node[ch].byte != c) ch = tr->node[ch].sibling;
        if (ch < 0) {
            if (tr->n == tr->cap) {
                trie_node *p = realloc(tr->node, tr->cap * 2 * sizeof *p);
                if (!p) return DSV4_ERR_NOMEM;
                tr->node = p;
                tr->cap *= 2;
            }
            ch = (int32_t)tr->n++;
            tr->node[ch] = (trie_node){-1, tr->node[cur].child, -1, c};
            tr->node[cur].child = ch;
        }
        cur = ch;
    }
    if (tr->node[cur].id < 0) tr->node[cur].id = id;
    tr->first[(unsigned char)s[0]] = 1;
    return DSV4_OK;
}

/* Longest token of tr that starts at s[0]; returns its length (0 if none) and id. */
static size_t trie_longest(const trie *tr, const char *s, size_t n, int32_t *id) {
    int32_t cur = 0;
    size_t best = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int32_t ch = tr->node[cur].child;
        while (ch >= 0 && tr->node[ch].byte != c) ch = tr->node[ch].sibling;
        if (ch < 0) break;
        cur = ch;
        if (tr->node[cur].id >= 0) { best = i + 1; *id = tr->node[cur].id; }
    }
    return best;
}

typedef struct { const char *s; size_t n; int32_t id; int special, normalized; } added_def;

static dsv4_status load_fail(dsv4_tokenizer *t, json_t *root, dsv4_err *err, dsv4_status st, const char *what,
                             const char *path) {
    dsv4_tokenizer_destroy(t);
    json_decref(root);
    return dsv4_err_set(err, st, "%s: %s", path, what);
}

static dsv4_status check_layout(json_t *root, const char **pats, int *n_pats, const char **why) {
    json_t *norm = json_object_get(root, "normalizer");
    if (norm && !json_is_null(norm)) {
        json_t *list = json_object_get(norm, "normalizers");
        if (!json_is_array(list) || json_array_size(list) != 0) { *why = "normalizer is not supported"; return DSV4_ERR_UNSUPPORTED; }
    }
    json_t *pre = json_object_get(root, "pre_tokenizer");
    json_t *list = json_object_get(pre, "pretokenizers");
    if (!json_is_array(list) || json_array_size(list) < 1) { *why = "pre_tokenizer must be a Sequence"; return DSV4_ERR_UNSUPPORTED; }
    size_t n = json_array_size(list);
    *n_pats = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *p = json_array_get(list, i);
        const char *type = json_string_value(json_object_get(p, "type"));
        if (!type) { *why = "pre_tokenizer entry without type"; return DSV4_ERR_FORMAT; }
        if (i + 1 == n) {
            if (strcmp(type, "ByteLevel") || json_is_true(json_object_get(p, "add_prefix_space")) ||
                json_is_true(json_object_get(p, "use_regex"))) {
                *why = "last pre_tokenizer must be ByteLevel without prefix space or regex";
                return DSV4_ERR_UNSUPPORTED;
            }
            break;
        }
        const char *behavior = json_string_value(json_object_get(p, "behavior"));
        const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
        if (strcmp(type, "Split") || !behavior || strcmp(behavior, "Isolated") || !re ||
            json_is_true(json_object_get(p, "invert")) || *n_pats == DSV4_PRETOK_MAX_STAGES) {
            *why = "only Split(Regex, Isolated) pre-tokenizers are supported";
            return DSV4_ERR_UNSUPPORTED;
        }
        pats[(*n_pats)++] = re;
    }
    json_t *model = json_object_get(root, "model");
    const char *mt = json_string_value(json_object_get(model, "type"));
    if (!mt || strcmp(mt, "BPE")) { *why = "model is not BPE"; return DSV4_ERR_UNSUPPORTED; }
    if (json_is_true(json_object_get(model, "byte_fallback")) || json_is_true(json_object_get(model, "ignore_merges")) ||
        json_is_string(json_object_get(model, "continuing_subword_prefix")) ||
        json_is_string(json_object_get(model, "end_of_word_suffix"))) {
        *why = "BPE options (byte_fallback/ignore_merges/prefix/suffix) are not supported";
        return DSV4_ERR_UNSUPPORTED;
    }
    return DSV4_OK;
}

dsv4_status dsv4_tokenizer_load(const char *path, dsv4_tokenizer **out, dsv4_err *err) {
    char *text;
    size_t len;
    DSV4_TRY(dsv4_file_read_all(path, DSV4_LIMIT_TOKENIZER_BYTES, &text, &len, err));
    json_error_t je;
    json_t *root = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    free(text);
    if (!root) return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: line %d: %s", path, je.line, je.text);
    const char *pats[DSV4_PRETOK_MAX_STAGES];
    int n_pats = 0;
    const char *why = NULL;
    dsv4_status st = check_layout(root, pats, &n_pats, &why);
    if (st) return load_fail(NULL, root, err, st, why, path);

    dsv4_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return load_fail(NULL, root, err, DSV4_ERR_NOMEM, "out of memory", path);
    json_t *model = json_object_get(root, "model");
    json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(vocab) || !json_is_array(merges) || (added && !json_is_array(added)))
        return load_fail(t, root, err, DSV4_ERR_FORMAT, "model.vocab / model.merges / added_tokens malformed", path);

    /* ids and byte storage */
    size_t max_id = 0, total = 0;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val) {
        json_int_t id = json_integer_value(val);
        if (!json_is_integer(val) || id < 0 || id > 0x7fffffff)
            return load_fail(t, root, err, DSV4_ERR_FORMAT, "vocab id out of range", path);
        if ((size_t)id > max_id) max_id = (size_t)id;
        total += strlen(key);
    }
    size_t n_added = json_array_size(added);
    for (size_t i = 0; i < n_added; i++) {
        json_t *a = json_array_get(added, i);
        json_t *idv = json_object_get(a, "id");
        const char *c = json_string_value(json_object_get(a, "content"));
        if (!json_is_integer(idv) || json_integer_value(idv) < 0 || json_integer_value(idv) > 0x7fffffff || !c || !*c)
            return load_fail(t, root, err, DSV4_ERR_FORMAT, "added token without id/content", path);
        if (json_is_true(json_object_get(a, "lstrip")) || json_is_true(json_object_get(a, "rstrip")) ||
            json_is_true(json_object_get(a, "single_word")))
            return load_fail(t, root, err, DSV4_ERR_UNSUPPORTED, "added tokens with lstrip/rstrip/single_word", path);
        if ((size_t)json_integer_value(idv) > max_id) max_id = (size_t)json_integer_value(idv);
        total += strlen(c);
    }
    t->n_ids = max_id + 1;
    t->tok = calloc(t->n_ids, sizeof *t->tok);
    t->bytes = malloc(total + 1);
    if (!t->tok || !t->bytes) return load_fail(t, root, err, DSV4_ERR_NOMEM, "out of memory", path);

    int byte_to_cp[256], cp_to_byte[324];
    byte_level_tables(byte_to_cp, cp_to_byte);
    if (str_map_init(&t->vocab, json_object_size(vocab)) || str_map_init(&t->added, n_added + 1))
        return load_fail(t, root, err, DSV4_ERR_NOMEM, "out of memory", path);

    /* added tokens first: their content is what an id decodes to (HF looks them up before the model) */
    for (size_t i = 0; i < n_added; i++) {
        json_t *a = json_array_get(added, i);
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
        const char *c = json_string_value(json_object_get(a, "content"));
        size_t n = strlen(c);
        if (dsv4_utf8_valid_prefix(c, n) != n)
            return load_fail(t, root, err, DSV4_ERR_FORMAT, "added token is not UTF-8", path);
        token_info *ti = &t->tok[id];
        if (ti->added) continue; /* first definition wins */
        /* HF's ByteLevel decoder maps a token through the byte table when every character is in it,
         * otherwise it keeps the token's own UTF-8 bytes */
        long m = byte_level_decode(cp_to_byte, c, n, t->bytes + t->bytes_len);
        if (m < 0) { memcpy(t->bytes + t->bytes_len, c, n); m = (long)n; }
        ti->off = (uint32_t)t->bytes_len;
        ti->len = (uint32_t)m;
        t->bytes_len += (size_t)m;
        ti->added = 1;
        ti->special = json_is_true(json_object_get(a, "special"));
        /* the match key is the raw content, which may differ from the decoded bytes: store it apart */
        int normalized = json_is_true(json_object_get(a, "normalized"));
        if (trie_add(&t->tries[normalized ? 1 : 0], c, n, id))
            return load_fail(t, root, err, DSV4_ERR_NOMEM, "out of memory", path);
    }
    json_object_foreach(vocab, key, val) {
        int32_t id = (int32_t)json_integer_value(val);
        size_t n = strlen(key);
        token_info *ti = &t->tok[id];
        long m = byte_level_decode(cp_to_byte, key, n, t->bytes + t->bytes_len);
        if (m < 0) { /* not a byte-level string (ids 0-2 duplicate added tokens): unreachable by BPE */
            if (!ti->added) {
                memcpy(t->bytes + t->bytes_len, key, n);
                ti->off = (uint32_t)t->bytes_len;
                ti->len = (uint32_t)n;
                t->bytes_len += n;
                ti->in_vocab = 1;
            }
            continue;
        }
        if (ti->added) {
            /* keep the added token's bytes for decoding; index the vocab string through a private copy */
            return load_fail(t, root, err, DSV4_ERR_UNSUPPORTED, "byte-level vocab entry shares an added token id", path);
        }
        ti->off = (uint32_t)t->bytes_len;
        ti->len = (uint32_t)m;
        t->bytes_len += (size_t)m;
        ti->in_vocab = 1;
        str_map_put(t, &t->vocab, id);
    }
    for (size_t i = 0; i < t->n_ids; i++)
        if (t->tok[i].added) {
            /* added-content lookup uses the raw content: only identical to bytes when not byte-mapped */
            str_map_put(t, &t->added, (int32_t)i);
        }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = str_map_get(t, &t->vocab, &c, 1);
        if (t->byte_id[b] < 0) return load_fail(t, root, err, DSV4_ERR_FORMAT, "vocab lacks a single-byte token", path);
    }

    /* merges: "left right" strings or [left, right] pairs, ranked by position */
    size_t n_merges = json_array_size(merges), cap = 16;
    while (cap < n_merges * 2) cap *= 2;
    t->merge = malloc(cap * sizeof *t->merge);
    if (!t->merge) return load_fail(t, root, err, DSV4_ERR_NOMEM, "out of memory", path);
    for (size_t i = 0; i < cap; i++) t->merge[i].rank = -1;
    t->merge_mask = cap - 1;
    char *buf = malloc(1024);
    if (!buf) return load_fail(t, root, err, DSV4_ERR_NOMEM, "out of memory", path);
    for (size_t r = 0; r < n_merges; r++) {
        json_t *m = json_array_get(merges, r);
        const char *l, *rt;
        size_t ln, rn;
        if (json_is_string(m)) {
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' ')) { free(buf); return load_fail(t, root, err, DSV4_ERR_FORMAT, "malformed merge", path); }
            l = s; ln = (size_t)(sp - s); rt = sp + 1; rn = strlen(rt);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            l = json_string_value(json_array_get(m, 0)); ln = strlen(l);
            rt = json_string_value(json_array_get(m, 1)); rn = strlen(rt);
        } else {
            free(buf);
            return load_fail(t, root, err, DSV4_ERR_FORMAT, "malformed merge", path);
        }
        if (ln + rn > 1000) { free(buf); return load_fail(t, root, err, DSV4_ERR_FORMAT, "merge too long", path); }
        long a = byte_level_decode(cp_to_byte, l, ln, buf), b = a < 0 ? -1 : byte_level_decode(cp_to_byte, rt, rn, buf + a);
        int32_t ia = a < 0 ? -1 : str_map_get(t, &t->vocab, buf, (size_t)a);
        int32_t ib = b < 0 ? -1 : str_map_get(t, &t->vocab, buf + a, (size_t)b);
        int32_t ic = (a < 0 || b < 0) ? -1 : str_map_get(t, &t->vocab, buf, (size_t)(a + b));
        if (ia < 0 || ib < 0 || ic < 0) { free(buf); return load_fail(t, root, err, DSV4_ERR_FORMAT, "merge refers to a token missing from the vocab", path); }
        uint64_t k = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
        for (size_t i = mix64(k) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
            if (t->merge[i].rank < 0) { t->merge[i] = (merge_slot){k, (int32_t)r, ic}; break; }
            if (t->merge[i].key == k) break; /* duplicate merge: the first (lower) rank wins, as in HF */
        }
    }
    free(buf);

    st = dsv4_pretok_create(pats, n_pats, &t->pretok, err);
    if (st) {
        dsv4_err_prefix(err, "%s", path);
        dsv4_tokenizer_destroy(t);
        json_decref(root);
        return st;
    }
    t->cache = calloc(CACHE_SLOTS, sizeof *t->cache);
    t->cache_keys = malloc(CACHE_KEY_ARENA);
    t->cache_ids = malloc(CACHE_ID_ARENA * sizeof *t->cache_ids);
    if (!t->cache || !t->cache_keys || !t->cache_ids) return load_fail(t, root, err, DSV4_ERR_NOMEM, "out of memory", path);
    json_decref(root);
    *out = t;
    return DSV4_OK;
}

void dsv4_tokenizer_destroy(dsv4_tokenizer *t) {
    if (!t) return;
    free(t->tok);
    free(t->bytes);
    free(t->vocab.slot);
    free(t->added.slot);
    free(t->merge);
    free(t->tries[0].node);
    free(t->tries[1].node);
    dsv4_pretok_destroy(t->pretok);
    free(t->sym);
    free(t->heap);
    free(t->cache);
    free(t->cache_keys);
    free(t->cache_ids);
    free(t);
}

/* ================================================================================================
 * BPE
 * ================================================================================================ */

static dsv4_status scratch_reserve(dsv4_tokenizer *t, size_t n) {
    if (n <= t->scratch_cap) return DSV4_OK;
    size_t cap = t->scratch_cap ? t->scratch_cap : 256;
    while (cap < n) cap *= 2;
    bpe_sym *s = realloc(t->sym, cap * sizeof *s);
    if (!s) return DSV4_ERR_NOMEM;
    t->sym = s;
    heap_item *h = realloc(t->heap, cap * 3 * sizeof *h); /* n initial pairs + 2 per merge */
    if (!h) return DSV4_ERR_NOMEM;
    t->heap = h;
    t->scratch_cap = cap;
    return DSV4_OK;
}

static int heap_less(heap_item a, heap_item b) { return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos); }

static void heap_push(heap_item *h, size_t *n, heap_item x) {
    size_t i = (*n)++;
    while (i) {
        size_t p = (i - 1) / 2;
        if (!heap_less(x, h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static heap_item heap_pop(heap_item *h, size_t *n) {
    heap_item top = h[0], x = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c])) c++;
        if (!heap_less(h[c], x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
    return top;
}

static void push_pair(const dsv4_tokenizer *t, heap_item *h, size_t *nh, int32_t pos, int32_t a, int32_t b) {
    const merge_slot *m = merge_get(t, a, b);
    if (m) heap_push(h, nh, (heap_item){m->rank, pos, m->id});
}

/* Merges the bytes of one piece by rank (lowest rank first, leftmost on ties: HF's queue order) and
 * appends the resulting ids. */
static dsv4_status bpe_piece(dsv4_tokenizer *t, const unsigned char *s, size_t n, dsv4_token_list *out) {
    DSV4_TRY(scratch_reserve(t, n));
    bpe_sym *sym = t->sym;
    heap_item *h = t->heap;
    size_t nh = 0;
    for (size_t i = 0; i < n; i++)
        sym[i] = (bpe_sym){t->byte_id[s[i]], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    for (size_t i = 0; i + 1 < n; i++) push_pair(t, h, &nh, (int32_t)i, sym[i].id, sym[i + 1].id);
    while (nh) {
        heap_item m = heap_pop(h, &nh);
        bpe_sym *l = &sym[m.pos];
        if (l->id < 0 || l->next < 0) continue;
        const merge_slot *cur = merge_get(t, l->id, sym[l->next].id);
        if (!cur || cur->id != m.id) continue; /* stale entry */
        int32_t r = l->next;
        l->id = m.id;
        l->next = sym[r].next;
        if (l->next >= 0) sym[l->next].prev = m.pos;
        sym[r].id = -1;
        if (l->prev >= 0) push_pair(t, h, &nh, l->prev, sym[l->prev].id, l->id);
        if (l->next >= 0) push_pair(t, h, &nh, m.pos, l->id, sym[l->next].id);
    }
    for (int32_t i = 0; i >= 0; i = sym[i].next) DSV4_TRY(dsv4_token_list_push(out, sym[i].id));
    return DSV4_OK;
}

static void cache_clear(dsv4_tokenizer *t) {
    memset(t->cache, 0, CACHE_SLOTS * sizeof *t->cache);
    t->cache_count = t->cache_keys_used = t->cache_ids_used = 0;
}

typedef struct { dsv4_tokenizer *t; dsv4_token_list *out; } encode_ctx;

/* Pre-tokenizer callback: one piece -> ids, through the cache. */
static dsv4_status encode_piece(void *ud, const char *p, size_t n) {
    encode_ctx *c = ud;
    dsv4_tokenizer *t = c->t;
    const unsigned char *s = (const unsigned char *)p;
    if (n == 1) return dsv4_token_list_push(c->out, t->byte_id[s[0]]);
    if (n > CACHE_MAX_KEY) return bpe_piece(t, s, n, c->out);
    uint64_t h = hash_bytes(p, n);
    size_t i = h & (CACHE_SLOTS - 1);
    for (;; i = (i + 1) & (CACHE_SLOTS - 1)) {
        cache_slot *e = &t->cache[i];
        if (!e->key_len) break;
        if (e->hash == h && e->key_len == n && !memcmp(t->cache_keys + e->key_off, p, n)) {
            const int32_t *ids = t->cache_ids + e->ids_off;
            dsv4_token_list *o = c->out;
            if (o->n + e->n_ids > o->cap) {
                size_t cap = o->cap ? o->cap : 64;
                while (cap < o->n + e->n_ids) cap *= 2;
                int32_t *q = realloc(o->ids, cap * sizeof *q);
                if (!q) return DSV4_ERR_NOMEM;
                o->ids = q;
                o->cap = cap;
            }
            memcpy(o->ids + o->n, ids, e->n_ids * sizeof *ids);
            o->n += e->n_ids;
            return DSV4_OK;
        }
    }
    size_t before = c->out->n;
    DSV4_TRY(bpe_piece(t, s, n, c->out));
    size_t k = c->out->n - before;
    if (t->cache_count * 2 >= CACHE_SLOTS || t->cache_keys_used + n > CACHE_KEY_ARENA ||
        t->cache_ids_used + k > CACHE_ID_ARENA) {
        cache_clear(t);
        for (i = h & (CACHE_SLOTS - 1); t->cache[i].key_len; i = (i + 1) & (CACHE_SLOTS - 1)) {}
    }
    cache_slot *e = &t->cache[i];
    e->hash = h;
    e->key_off = (uint32_t)t->cache_keys_used;
    e->key_len = (uint16_t)n;
    e->ids_off = (uint32_t)t->cache_ids_used;
    e->n_ids = (uint16_t)k;
    memcpy(t->cache_keys + t->cache_keys_used, p, n);
    memcpy(t->cache_ids + t->cache_ids_used, c->out->ids + before, k * sizeof(int32_t));
    t->cache_keys_used += n;
    t->cache_ids_used += k;
    t->cache_count++;
    return DSV4_OK;
}

/* Splits s on the tokens of trie level (leftmost-longest), recursing into the next level for the gaps
 * and into the regex pre-tokenizer after the last level. */
static dsv4_status encode_level(encode_ctx *c, int level, const char *s, size_t n) {
    if (n == 0) return DSV4_OK;
    if (level == 2) return dsv4_pretok_run(c->t->pretok, s, n, encode_piece, c);
    const trie *tr = &c->t->tries[level];
    if (!tr->node) return encode_level(c, level + 1, s, n);
    size_t gap = 0;
    for (size_t i = 0; i < n;) {
        if (!tr->first[(unsigned char)s[i]]) { i++; continue; }
        int32_t id;
        size_t m = trie_longest(tr, s + i, n - i, &id);
        if (!m) { i++; continue; }
        DSV4_TRY(encode_level(c, level + 1, s + gap, i - gap));
        DSV4_TRY(dsv4_token_list_push(c->out, id));
        i += m;
        gap = i;
    }
    return encode_level(c, level + 1, s + gap, n - gap);
}

dsv4_status dsv4_tokenizer_encode(dsv4_tokenizer *t, const char *text, size_t len, dsv4_token_list *out,
                                  dsv4_err *err) {
    size_t bad = dsv4_utf8_valid_prefix(text, len);
    if (bad != len)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "encode: invalid UTF-8 at byte offset %zu (byte 0x%02x)", bad,
                            (unsigned char)text[bad]);
    size_t before = out->n;
    encode_ctx c = {t, out};
    dsv4_status st = encode_level(&c, 0, text, len);
    if (st) {
        out->n = before;
        return dsv4_err_set(err, st, "encode: %s", dsv4_status_name(st));
    }
    return DSV4_OK;
}

/* ================================================================================================
 * Decode and lookups
 * ================================================================================================ */

const char *dsv4_tokenizer_token_bytes(const dsv4_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || (size_t)id >= t->n_ids || !(t->tok[id].added || t->tok[id].in_vocab)) return NULL;
    *len = t->tok[id].len;
    return t->bytes + t->tok[id].off;
}

dsv4_status dsv4_tokenizer_decode(const dsv4_tokenizer *t, const int32_t *ids, size_t n, dsv4_tok_buf *out,
                                  dsv4_err *err) {
    dsv4_tok_buf raw = {0};
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *b = dsv4_tokenizer_token_bytes(t, ids[i], &len);
        if (!b) {
            dsv4_tok_buf_free(&raw);
            return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "decode: unknown token id %d at position %zu", (int)ids[i], i);
        }
        if (dsv4_tok_buf_append(&raw, b, len)) { dsv4_tok_buf_free(&raw); return dsv4_err_set(err, DSV4_ERR_NOMEM, "decode: out of memory"); }
    }
    dsv4_status st = dsv4_utf8_append_lossy(out, raw.data ? raw.data : "", raw.len);
    dsv4_tok_buf_free(&raw);
    return st ? dsv4_err_set(err, st, "decode: out of memory") : DSV4_OK;
}

int32_t dsv4_tokenizer_token_id(const dsv4_tokenizer *t, const char *s, size_t len) {
    int32_t id = str_map_get(t, &t->added, s, len);
    return id >= 0 ? id : str_map_get(t, &t->vocab, s, len);
}

bool dsv4_tokenizer_is_special(const dsv4_tokenizer *t, int32_t id) {
    return id >= 0 && (size_t)id < t->n_ids && t->tok[id].special;
}

size_t dsv4_tokenizer_vocab_size(const dsv4_tokenizer *t) { return t->n_ids; }

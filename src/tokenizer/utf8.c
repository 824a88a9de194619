/* utf8.c — byte buffers, id lists, strict UTF-8 validation, lossy (U+FFFD) conversion and the streaming
 * detokenizer of tokenizer.h. Owns no global state. The replacement rule is Unicode's "maximal subpart"
 * practice (one U+FFFD per maximal prefix of a well-formed sequence), the rule of Rust's
 * String::from_utf8_lossy, which Hugging Face's ByteLevel decoder applies. */
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "dsv4_tokenizer.h"

/* ================================================================================================
 * Growable buffers
 * ================================================================================================ */

void dsv4_token_list_free(dsv4_token_list *l) {
    free(l->ids);
    l->ids = NULL;
    l->n = l->cap = 0;
}

dsv4_status dsv4_token_list_push(dsv4_token_list *l, int32_t id) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        int32_t *p = realloc(l->ids, cap * sizeof *p);
        if (!p) return DSV4_ERR_NOMEM;
        l->ids = p;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
    return DSV4_OK;
}

void dsv4_tok_buf_free(dsv4_tok_buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

dsv4_status dsv4_tok_buf_append(dsv4_tok_buf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return DSV4_ERR_NOMEM;
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return DSV4_OK;
}

/* ================================================================================================
 * UTF-8 scanning
 * ================================================================================================ */

enum { SCAN_VALID, SCAN_INCOMPLETE, SCAN_INVALID };

/* Classifies the sequence starting at s[0] (n >= 1). *k receives: VALID -> its length; INCOMPLETE -> n
 * (all bytes are a proper prefix of a well-formed sequence); INVALID -> the maximal subpart length. */
static int utf8_scan(const unsigned char *s, size_t n, size_t *k) {
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c < 0x80) { *k = 1; return SCAN_VALID; }
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        *k = 1;
        return SCAN_INVALID;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= n) { *k = n; return SCAN_INCOMPLETE; }
        unsigned b = s[i];
        unsigned l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
        if (b < l || b > h) { *k = i; return SCAN_INVALID; }
    }
    *k = need;
    return SCAN_VALID;
}

size_t dsv4_utf8_valid_prefix(const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        size_t k;
        if (utf8_scan(u + i, n - i, &k) != SCAN_VALID) return i;
        i += k;
    }
    return n;
}

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* Appends data[0..n) after a held-back prefix pend[0..*npend), replacing invalid subparts with U+FFFD.
 * An incomplete sequence at the very end is left in pend (when hold is true) or replaced (when false). */
static dsv4_status lossy_feed(dsv4_tok_buf *out, unsigned char pend[4], int *npend, const unsigned char *data,
                              size_t n, bool hold) {
    size_t i = 0;
    if (*npend) {
        unsigned char tmp[8];
        size_t m = (size_t)*npend, take = n < 4 ? n : 4;
        memcpy(tmp, pend, m);
        memcpy(tmp + m, data, take);
        size_t k;
        int r = utf8_scan(tmp, m + take, &k);
        if (r == SCAN_INCOMPLETE) {
            if (hold) {
                memcpy(pend, tmp, m + take);
                *npend = (int)(m + take);
                return DSV4_OK;
            }
            *npend = 0;
            return dsv4_tok_buf_append(out, REPLACEMENT, 3);
        }
        *npend = 0;
        DSV4_TRY(dsv4_tok_buf_append(out, r == SCAN_VALID ? (const char *)tmp : REPLACEMENT,
                                     r == SCAN_VALID ? k : 3));
        i = k - m; /* k >= m: the held bytes were a valid proper prefix */
    }
    size_t run = i;
    while (i < n) {
        if (data[i] < 0x80) { i++; continue; }
        size_t k;
        int r = utf8_scan(data + i, n - i, &k);
        if (r == SCAN_VALID) { i += k; continue; }
        DSV4_TRY(dsv4_tok_buf_append(out, data + run, i - run));
        if (r == SCAN_INCOMPLETE && hold) {
            memcpy(pend, data + i, k);
            *npend = (int)k;
            return DSV4_OK;
        }
        DSV4_TRY(dsv4_tok_buf_append(out, REPLACEMENT, 3));
        i += k;
        run = i;
    }
    return dsv4_tok_buf_append(out, data + run, n - run);
}

dsv4_status dsv4_utf8_append_lossy(dsv4_tok_buf *out, const char *s, size_t n) {
    unsigned char pend[4];
    int npend = 0;
    return lossy_feed(out, pend, &npend, (const unsigned char *)s, n, false);
}

/* ================================================================================================
 * Streaming detokenizer
 * ================================================================================================ */

void dsv4_detok_init(dsv4_detok *d, const dsv4_tokenizer *tok) {
    memset(d, 0, sizeof *d);
    d->tok = tok;
}

dsv4_status dsv4_detok_push(dsv4_detok *d, int32_t id, dsv4_tok_buf *out, dsv4_err *err) {
    size_t n;
    const char *b = dsv4_tokenizer_token_bytes(d->tok, id, &n);
    if (!b) return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "detok: unknown token id %d", (int)id);
    dsv4_status st = lossy_feed(out, d->pend, &d->npend, (const unsigned char *)b, n, true);
    if (st) return dsv4_err_set(err, st, "detok: out of memory");
    return DSV4_OK;
}

dsv4_status dsv4_detok_finish(dsv4_detok *d, dsv4_tok_buf *out) {
    dsv4_status st = DSV4_OK;
    if (d->npend) st = dsv4_tok_buf_append(out, REPLACEMENT, 3);
    d->npend = 0;
    return st;
}

/* pretok.c — PCRE2 implementation of the Split("Isolated") pre-tokenizer sequence (see pretok.h).
 * Owns the compiled patterns and one match-data block per stage (stages recurse into each other, so
 * they cannot share one). Must not allocate per call: the encode hot path runs through here. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "tokenizer/pretok.h"
#include "dsv4_tokenizer.h"
#include "tokenizer/unicode_classes.h"

struct dsv4_pretok {
    int n;                                         /* stages */
    pcre2_code *re[DSV4_PRETOK_MAX_STAGES];        /* owned */
    pcre2_match_data *md[DSV4_PRETOK_MAX_STAGES];  /* owned, one per stage */
};

/* Appends the class-body spelling (ranges, no brackets) of class cls to b. */
static dsv4_status append_class_body(dsv4_tok_buf *b, char cls) {
    size_t n;
    const dsv4_uc_range *r = dsv4_unicode_class_ranges(cls, &n);
    char tmp[48];
    for (size_t i = 0; i < n; i++) {
        int k = r[i].lo == r[i].hi ? snprintf(tmp, sizeof tmp, "\\x{%X}", (unsigned)r[i].lo)
                                   : snprintf(tmp, sizeof tmp, "\\x{%X}-\\x{%X}", (unsigned)r[i].lo, (unsigned)r[i].hi);
        DSV4_TRY(dsv4_tok_buf_append(b, tmp, (size_t)k));
    }
    return DSV4_OK;
}

/* Rewrites \p{L|M|N|P|S}, \P{..}, \s and \S into explicit code-point classes measured from HF tokenizers
 * (unicode_classes.c): outside a bracket class as [..] or [^..], inside one as bare ranges. A negated
 * class escape inside brackets has no bare spelling and is refused. Other syntax passes through. */
static dsv4_status rewrite_pattern(const char *pat, dsv4_tok_buf *o, dsv4_err *err) {
    size_t n = strlen(pat);
    int in_class = 0;
    for (size_t i = 0; i < n; i++) {
        char c = pat[i];
        if (c == '\\' && i + 1 < n) {
            char d = pat[i + 1], cls = 0;
            int neg = 0;
            size_t skip = 2;
            if (d == 's' || d == 'S') { cls = 's'; neg = d == 'S'; }
            else if ((d == 'p' || d == 'P') && i + 4 < n && pat[i + 2] == '{' && pat[i + 4] == '}' &&
                     strchr("LMNPS", pat[i + 3])) {
                cls = pat[i + 3];
                neg = d == 'P';
                skip = 5;
            }
            if (!cls) {
                DSV4_TRY(dsv4_tok_buf_append(o, pat + i, 2));
                i++;
                continue;
            }
            if (in_class && neg)
                return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "pre-tokenizer pattern: negated class escape inside []");
            if (!in_class) DSV4_TRY(dsv4_tok_buf_append(o, neg ? "[^" : "[", neg ? 2 : 1));
            DSV4_TRY(append_class_body(o, cls));
            if (!in_class) DSV4_TRY(dsv4_tok_buf_append(o, "]", 1));
            i += skip - 1;
            continue;
        }
        if (c == '[' && !in_class) {
            in_class = 1;
            DSV4_TRY(dsv4_tok_buf_append(o, "[", 1));
            /* a ']' right after '[' or '[^' is a literal */
            if (i + 1 < n && pat[i + 1] == '^') { DSV4_TRY(dsv4_tok_buf_append(o, "^", 1)); i++; }
            if (i + 1 < n && pat[i + 1] == ']') { DSV4_TRY(dsv4_tok_buf_append(o, "]", 1)); i++; }
            continue;
        }
        if (c == ']' && in_class) in_class = 0;
        DSV4_TRY(dsv4_tok_buf_append(o, &c, 1));
    }
    return DSV4_OK;
}

dsv4_status dsv4_pretok_create(const char *const *patterns, int n, dsv4_pretok **out, dsv4_err *err) {
    if (n < 0 || n > DSV4_PRETOK_MAX_STAGES)
        return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "pre-tokenizer: %d split stages (max %d)", n,
                            DSV4_PRETOK_MAX_STAGES);
    dsv4_pretok *p = calloc(1, sizeof *p);
    if (!p) return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory");
    for (int i = 0; i < n; i++) {
        dsv4_tok_buf pat = {0};
        dsv4_status st = rewrite_pattern(patterns[i], &pat, err);
        if (st) {
            dsv4_tok_buf_free(&pat);
            dsv4_pretok_destroy(p);
            return st == DSV4_ERR_NOMEM ? dsv4_err_set(err, st, "out of memory") : st;
        }
        int ec;
        PCRE2_SIZE eo;
        /* UCP stays on for any property the rewrite leaves to PCRE2 (none in the V4 patterns) */
        p->re[i] = pcre2_compile((PCRE2_SPTR)pat.data, pat.len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
        dsv4_tok_buf_free(&pat);
        if (!p->re[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(ec, msg, sizeof msg);
            dsv4_pretok_destroy(p);
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "pre-tokenizer pattern %d: %s at offset %zu", i,
                                (const char *)msg, (size_t)eo);
        }
        p->n = i + 1;
        (void)pcre2_jit_compile(p->re[i], PCRE2_JIT_COMPLETE); /* no JIT: the interpreter still works */
        p->md[i] = pcre2_match_data_create_from_pattern(p->re[i], NULL);
        if (!p->md[i]) { dsv4_pretok_destroy(p); return dsv4_err_set(err, DSV4_ERR_NOMEM, "out of memory"); }
    }
    *out = p;
    return DSV4_OK;
}

void dsv4_pretok_destroy(dsv4_pretok *p) {
    if (!p) return;
    for (int i = 0; i < DSV4_PRETOK_MAX_STAGES; i++) {
        if (p->md[i]) pcre2_match_data_free(p->md[i]);
        if (p->re[i]) pcre2_code_free(p->re[i]);
    }
    free(p);
}

/* Runs stage k on s[0..n): every match and every non-empty gap goes on to stage k+1 (or to fn). */
static dsv4_status run_stage(dsv4_pretok *p, int k, const char *s, size_t n, dsv4_pretok_piece_fn fn, void *ud) {
    if (n == 0) return DSV4_OK;
    if (k == p->n) return fn(ud, s, n);
    size_t pos = 0, gap = 0;
    while (pos < n) {
        int rc = pcre2_match(p->re[k], (PCRE2_SPTR)s, n, pos, PCRE2_NO_UTF_CHECK, p->md[k], NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) return DSV4_ERR_INTERNAL;
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(p->md[k]);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* empty match: not a piece; step one character */
            pos = ms + 1;
            while (pos < n && ((unsigned char)s[pos] & 0xC0) == 0x80) pos++;
            continue;
        }
        DSV4_TRY(run_stage(p, k + 1, s + gap, ms - gap, fn, ud));
        DSV4_TRY(run_stage(p, k + 1, s + ms, me - ms, fn, ud));
        pos = gap = me;
    }
    return run_stage(p, k + 1, s + gap, n - gap, fn, ud);
}

dsv4_status dsv4_pretok_run(dsv4_pretok *p, const char *s, size_t n, dsv4_pretok_piece_fn fn, void *ud) {
    return run_stage(p, 0, s, n, fn, ud);
}

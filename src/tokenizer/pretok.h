/* pretok.h — the regex pre-tokenizer of tokenizer.json (internal to src/tokenizer): a sequence of Split
 * stages with "Isolated" behaviour, each applied to every piece the previous stage produced, matches and
 * the gaps between them becoming separate pieces (HF tokenizers semantics; a regex never sees past the
 * piece it runs on). Patterns are compiled with PCRE2 (UTF, JIT when available) after the Unicode class
 * escapes are spelled out as code-point ranges measured from HF tokenizers (unicode_classes.h). */
#ifndef DSV4_TOKENIZER_PRETOK_H
#define DSV4_TOKENIZER_PRETOK_H

#include <stddef.h>

#include "core/status.h"

#define DSV4_PRETOK_MAX_STAGES 8

typedef struct dsv4_pretok dsv4_pretok;

/* Called once per final piece, in text order; a non-OK return stops the run and is returned. */
typedef dsv4_status (*dsv4_pretok_piece_fn)(void *ud, const char *piece, size_t len);

/* Compiles n patterns written in the Oniguruma dialect tokenizers uses. \p{L,M,N,P,S}, \P{..}, \s and \S
 * become explicit code-point classes (PCRE2 10.42 knows Unicode 14 only, and its UCP \s adds U+180E). */
dsv4_status dsv4_pretok_create(const char *const *patterns, int n, dsv4_pretok **out, dsv4_err *err);
void dsv4_pretok_destroy(dsv4_pretok *p);

/* Splits s[0..n) (valid UTF-8) and calls fn for each piece. Not thread-safe (shared match data). */
dsv4_status dsv4_pretok_run(dsv4_pretok *p, const char *s, size_t n, dsv4_pretok_piece_fn fn, void *ud);

#endif

/* dsv4_tokenizer.h — the DeepSeek V4 byte-level BPE tokenizer (spec §7.1): load tokenizer.json, encode text to
 * ids exactly like Hugging Face `tokenizers` (added tokens matched on the raw text first, the three
 * "Isolated" regex splits, ByteLevel, BPE by merge rank), decode ids to bytes, and a streaming
 * detokenizer that never emits a broken UTF-8 sequence. Decisions are written down in docs/TOKENIZER.md.
 *
 * Threading: a loaded tokenizer is read-only except for its BPE cache, which encode updates. So encode
 * must be called by one thread at a time per tokenizer; decode, lookups and detok may run concurrently.
 * Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in src/tokenizer/tokenizer.c,
 * pretok.c, utf8.c. */
#ifndef DSV4_TOKENIZER_H
#define DSV4_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dsv4_status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_tokenizer dsv4_tokenizer;

/* A growable list of token ids. Zero-initialize; the list owns ids; free with dsv4_token_list_free. */
typedef struct dsv4_token_list {
    int32_t *ids; /* owned, [cap] */
    size_t n;     /* ids in use */
    size_t cap;
} dsv4_token_list;

/* A growable byte buffer, always NUL-terminated after data[len] once non-empty. Zero-initialize. */
typedef struct dsv4_tok_buf {
    char *data; /* owned, [cap] */
    size_t len;
    size_t cap;
} dsv4_tok_buf;

void dsv4_token_list_free(dsv4_token_list *l);
dsv4_status dsv4_token_list_push(dsv4_token_list *l, int32_t id);
void dsv4_tok_buf_free(dsv4_tok_buf *b);
dsv4_status dsv4_tok_buf_append(dsv4_tok_buf *b, const void *p, size_t n);

/* Loads a Hugging Face tokenizer.json holding the DeepSeek V4 layout (BPE model, Sequence of Split
 * pre-tokenizers then ByteLevel). Fails with DSV4_ERR_IO / DSV4_ERR_FORMAT / DSV4_ERR_UNSUPPORTED (a
 * layout this code does not implement, e.g. a normalizer or byte fallback) and leaves *out untouched. */
dsv4_status dsv4_tokenizer_load(const char *path, dsv4_tokenizer **out, dsv4_err *err);
void dsv4_tokenizer_destroy(dsv4_tokenizer *tok);

/* Appends the ids of text[0..len) to out (nothing is added: no BOS/EOS). Added tokens, special or not,
 * are recognised anywhere in the text. text must be valid UTF-8 (Python str cannot hold anything else);
 * otherwise DSV4_ERR_INVALID_ARG names the byte offset and out is left as it was. */
dsv4_status dsv4_tokenizer_encode(dsv4_tokenizer *tok, const char *text, size_t len, dsv4_token_list *out,
                                  dsv4_err *err);

/* Appends the decoded text of ids[0..n) to out, as HF decode(skip_special_tokens=False) does: the bytes
 * of all tokens concatenated, then invalid UTF-8 replaced by U+FFFD (one per maximal invalid subpart).
 * Unknown ids are DSV4_ERR_INVALID_ARG. */
dsv4_status dsv4_tokenizer_decode(const dsv4_tokenizer *tok, const int32_t *ids, size_t n, dsv4_tok_buf *out,
                                  dsv4_err *err);

/* The raw bytes of one token (a view into the tokenizer; NULL if id is unknown). */
const char *dsv4_tokenizer_token_bytes(const dsv4_tokenizer *tok, int32_t id, size_t *len);
/* Id of the token whose text is s[0..len): added tokens first, then the BPE vocab; -1 if none. */
int32_t dsv4_tokenizer_token_id(const dsv4_tokenizer *tok, const char *s, size_t len);
/* True for added tokens marked special (BOS, EOS, pad, place-holders, ...). */
bool dsv4_tokenizer_is_special(const dsv4_tokenizer *tok, int32_t id);
/* One more than the largest id (129280 for V4: the embedding's row count). */
size_t dsv4_tokenizer_vocab_size(const dsv4_tokenizer *tok);

/* ---- streaming detokenizer ----------------------------------------------------------------------
 * Feeds ids one at a time and appends only complete UTF-8 text: an incomplete trailing sequence is held
 * back until the bytes that finish it arrive. Bytes that can never become valid UTF-8 are replaced by
 * U+FFFD exactly as dsv4_tokenizer_decode does, so the concatenation of everything appended by push and
 * finish equals dsv4_tokenizer_decode of the whole id sequence. */
typedef struct dsv4_detok {
    const dsv4_tokenizer *tok; /* borrowed */
    unsigned char pend[4];     /* held-back prefix of an incomplete UTF-8 sequence */
    int npend;
} dsv4_detok;

void dsv4_detok_init(dsv4_detok *d, const dsv4_tokenizer *tok);
dsv4_status dsv4_detok_push(dsv4_detok *d, int32_t id, dsv4_tok_buf *out, dsv4_err *err);
/* Flushes a held-back incomplete sequence as U+FFFD and resets d for reuse. */
dsv4_status dsv4_detok_finish(dsv4_detok *d, dsv4_tok_buf *out);

/* ---- UTF-8 helpers shared by the tokenizer module ---------------------------------------------- */
/* Offset of the first invalid byte of s[0..n) (strict: no overlongs, surrogates or > U+10FFFF), or n. */
size_t dsv4_utf8_valid_prefix(const char *s, size_t n);
/* Appends s[0..n) to out replacing invalid subparts with U+FFFD (Unicode "maximal subpart" practice,
 * the rule of Rust's String::from_utf8_lossy and Python's errors="replace"). */
dsv4_status dsv4_utf8_append_lossy(dsv4_tok_buf *out, const char *s, size_t n);

#ifdef __cplusplus
}
#endif
#endif

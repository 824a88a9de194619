/* fuzz_tokenizer.c — libFuzzer target for the tokenizer (tokenizer/tokenizer.c, pretok.c, utf8.c) with the
 * real tokenizer.json, and for the token-id list parser of the CLI (tools/dsv4/cli_util.c). Every input is
 * used three ways:
 *   1. as text for encode: invalid UTF-8 must be DSV4_ERR_INVALID_ARG with a message and the output list
 *      untouched; valid text must encode, decode back to the same bytes, and stream through the detokenizer
 *      to the same bytes;
 *   2. as a sequence of ids (3 bytes each, spread over [-128, vocab + 128)) for decode and the streaming
 *      detokenizer: unknown ids are errors with a message, known ones give valid UTF-8, and the streamed
 *      chunks (each valid UTF-8) concatenate to the one-shot decode of the known ids;
 *   3. as a NUL-terminated id list for cli_parse_ids (ids it accepts are in [0, INT32_MAX]).
 * tokenizer.json: $DSV4_TOKENIZER, else tools/tokenizer/find_tokenizer.py (run from the repository root).
 * Build: make fuzz; run: build/fuzz/fuzz_tokenizer -max_total_time=60 -close_fd_mask=2 DIR tests/fuzz/corpus_tokenizer */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../tools/dsv4/cli_util.h"
#include "dsv4_tokenizer.h"
#include "fuzz_util.h"

static dsv4_tokenizer *tok;

/* Strict UTF-8 check written independently of utf8.c (the oracle must not share the code under test). */

static char *find_tokenizer(void) {
    const char *env = getenv("DSV4_TOKENIZER");
    if (env && *env) return strdup(env);
    FILE *p = popen("python3 tools/tokenizer/find_tokenizer.py 2>/dev/null", "r");
    if (!p) return NULL;
    char line[4096] = {0};
    char *r = fgets(line, sizeof line, p);
    pclose(p);
    if (!r) return NULL;
    line[strcspn(line, "\r\n")] = 0;
    return line[0] ? strdup(line) : NULL;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    char *path = find_tokenizer();
    dsv4_err err = {{0}};
    if (!path || dsv4_tokenizer_load(path, &tok, &err) != DSV4_OK) {
        fprintf(stderr, "fuzz_tokenizer: cannot load tokenizer.json (%s): set DSV4_TOKENIZER\n",
                path ? err.msg : "not found");
        abort();
    }
    free(path);
    return 0;
}

/* Streams ids through a detokenizer, skipping unknown ones (which must fail with a message and leave the
 * output and the held-back state alone); checks each chunk is valid UTF-8 and returns the concatenation. */
static void stream(const int32_t *ids, size_t n, dsv4_tok_buf *all) {
    dsv4_detok d;
    dsv4_detok_init(&d, tok);
    for (size_t i = 0; i < n; i++) {
        dsv4_tok_buf chunk = {0};
        dsv4_err err = {{0}};
        dsv4_status st = dsv4_detok_push(&d, ids[i], &chunk, &err);
        size_t len;
        if (dsv4_tokenizer_token_bytes(tok, ids[i], &len) == NULL) {
            if (st != DSV4_ERR_INVALID_ARG || !err.msg[0] || chunk.len) abort();
        } else if (st != DSV4_OK) {
            abort();
        }
        if (!utf8_ok((const unsigned char *)chunk.data, chunk.len)) abort();
        if (chunk.len && dsv4_tok_buf_append(all, chunk.data, chunk.len)) abort();
        dsv4_tok_buf_free(&chunk);
    }
    dsv4_tok_buf tail = {0};
    if (dsv4_detok_finish(&d, &tail) != DSV4_OK) abort();
    if (tail.len && dsv4_tok_buf_append(all, tail.data, tail.len)) abort();
    dsv4_tok_buf_free(&tail);
}

static void fuzz_encode(const char *text, size_t size) {
    dsv4_token_list ids = {0};
    dsv4_err err = {{0}};
    if (dsv4_token_list_push(&ids, 7)) abort(); /* a sentinel the call must keep */
    dsv4_status st = dsv4_tokenizer_encode(tok, text, size, &ids, &err);
    if (!utf8_ok((const unsigned char *)text, size)) {
        if (st != DSV4_ERR_INVALID_ARG || !err.msg[0] || ids.n != 1 || ids.ids[0] != 7) abort();
    } else {
        if (st != DSV4_OK) abort();
        if ((ids.n == 1) != (size == 0)) abort();
        dsv4_tok_buf dec = {0}, streamed = {0};
        if (dsv4_tokenizer_decode(tok, ids.ids + 1, ids.n - 1, &dec, &err) != DSV4_OK) abort();
        if (dec.len != size || (size && memcmp(dec.data, text, size))) abort(); /* byte-exact round trip */
        stream(ids.ids + 1, ids.n - 1, &streamed);
        if (streamed.len != size || (size && memcmp(streamed.data, text, size))) abort();
        dsv4_tok_buf_free(&dec);
        dsv4_tok_buf_free(&streamed);
    }
    dsv4_token_list_free(&ids);
}

static void fuzz_decode(const uint8_t *data, size_t size) {
    size_t n = size / 3, span = dsv4_tokenizer_vocab_size(tok) + 256, n_known = 0;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids), *known = malloc((n ? n : 1) * sizeof *known);
    if (!ids || !known) abort();
    int any_unknown = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)data[3 * i] | (uint32_t)data[3 * i + 1] << 8 | (uint32_t)data[3 * i + 2] << 16;
        ids[i] = (int32_t)(v % span) - 128;
        size_t len;
        if (dsv4_tokenizer_token_bytes(tok, ids[i], &len)) known[n_known++] = ids[i];
        else any_unknown = 1;
    }
    dsv4_tok_buf out = {0};
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_tokenizer_decode(tok, ids, n, &out, &err);
    if (any_unknown) {
        if (st != DSV4_ERR_INVALID_ARG || !err.msg[0] || out.len) abort();
    } else if (st != DSV4_OK) {
        abort();
    }
    dsv4_tok_buf one = {0}, streamed = {0};
    if (dsv4_tokenizer_decode(tok, known, n_known, &one, &err) != DSV4_OK) abort();
    if (!utf8_ok((const unsigned char *)one.data, one.len)) abort();
    stream(ids, n, &streamed);
    if (streamed.len != one.len || (one.len && memcmp(streamed.data, one.data, one.len))) abort();
    dsv4_tok_buf_free(&out);
    dsv4_tok_buf_free(&one);
    dsv4_tok_buf_free(&streamed);
    free(ids);
    free(known);
}

static void fuzz_id_list(const char *s) {
    int32_t *ids = NULL;
    int n = 0;
    /* Only strings cli_parse_ids takes as lists: anything else is opened as a file name. */
    for (const char *p = s; *p; p++)
        if (!strchr("0123456789, \t\n\v\f\r", *p)) return;
    if (cli_parse_ids("fuzz", s, &ids, &n) == 0) {
        if (n <= 0 || !ids) abort();
        for (int i = 0; i < n; i++)
            if (ids[i] < 0) abort();
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* Private copies sized exactly, so an overread hits the ASan redzone. */
    char *text = malloc(size ? size : 1);
    char *str = malloc(size + 1);
    if (!text || !str) abort();
    memcpy(text, data, size);
    memcpy(str, data, size);
    str[size] = 0;
    fuzz_encode(text, size);
    fuzz_decode((const uint8_t *)text, size);
    fuzz_id_list(str);
    free(text);
    free(str);
    return 0;
}

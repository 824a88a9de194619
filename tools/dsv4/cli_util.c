/* cli_util.c — token-list parsing for the dsv4 subcommands (see cli_util.h); options: cli_opts.c. */
#include "cli_util.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4_files.h"
#include "dsv4_limits.h"

/* Separators between ids: whitespace, commas, and the brackets of a JSON list ("[1, 2, 3]"). */
static int is_sep(char c) { return isspace((unsigned char)c) || c == ',' || c == '[' || c == ']'; }

static int parse_list(const char *cmd, const char *s, int32_t **ids, int *n) {
    size_t cap = 64, cnt = 0;
    int32_t *out = malloc(cap * sizeof *out);
    if (!out) return -1;
    const char *p = s;
    while (*p) {
        while (*p && is_sep(*p)) p++;
        if (!*p) break;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "dsv4 %s: bad token id near '%.16s'\n", cmd, p);
            free(out);
            return -1;
        }
        if (cnt == cap) {
            int32_t *t = realloc(out, (cap *= 2) * sizeof *out);
            if (!t) { free(out); return -1; }
            out = t;
        }
        out[cnt++] = (int32_t)v;
        p = end;
        if (*p && !is_sep(*p)) {
            fprintf(stderr, "dsv4 %s: bad token id near '%.16s'\n", cmd, p);
            free(out);
            return -1;
        }
    }
    if (!cnt) {
        fprintf(stderr, "dsv4 %s: empty token list\n", cmd);
        free(out);
        return -1;
    }
    *ids = out;
    *n = (int)cnt;
    return 0;
}

int cli_parse_ids(const char *cmd, const char *spec, int32_t **ids, int *n) {
    int looks_like_list = 1;
    for (const char *p = spec; *p; p++)
        if (!isdigit((unsigned char)*p) && !is_sep(*p)) looks_like_list = 0;
    if (looks_like_list) return parse_list(cmd, spec, ids, n);
    /* A file: read with the bounded reader (a directory or FIFO fails at once; no ftell on a non-file). */
    char *buf;
    size_t len;
    dsv4_err err = {{0}};
    if (dsv4_file_read_text(spec, DSV4_LIMIT_IDS_FILE_BYTES, &buf, &len, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 %s: '%s' is neither a comma-separated id list nor a readable file (%s)\n", cmd, spec,
                err.msg);
        return -1;
    }
    if (memchr(buf, 0, len)) {
        fprintf(stderr, "dsv4 %s: %s: contains a NUL byte\n", cmd, spec);
        free(buf);
        return -1;
    }
    int rc = parse_list(cmd, buf, ids, n);
    free(buf);
    return rc;
}

dsv4_status cli_read_text(const char *path, uint64_t max_bytes, char **data, size_t *len, dsv4_err *err) {
    return strcmp(path, "-") ? dsv4_file_read_text(path, max_bytes, data, len, err)
                             : dsv4_fd_read_all(0, "stdin", max_bytes, data, len, err);
}

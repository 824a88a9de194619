/* cli_opts.c — option tables of the dsv4 subcommands: parsing, --help and did-you-mean (see cli_opts.h). */
#include "cli_opts.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"   /* dsv4_engine_cuda_devices */

#define MAX_NAMES 8          /* spellings of one option */
#define NAME_LEN 64
#define HELP_COL 30          /* help text starts in this column */

/* ---- names ----------------------------------------------------------------------------------------- */

/* Splits o->names at '|' into out (each NUL-terminated, truncated to NAME_LEN-1); returns the count. */
static int split_names(const char *names, char out[MAX_NAMES][NAME_LEN]) {
    int k = 0;
    for (const char *p = names; *p && k < MAX_NAMES;) {
        size_t len = strcspn(p, "|");
        size_t c = len < NAME_LEN - 1 ? len : NAME_LEN - 1;
        memcpy(out[k], p, c);
        out[k++][c] = 0;
        p += len;
        if (*p == '|') p++;
    }
    return k;
}

/* The name used in messages: the first "--" spelling, else the first one. */
static const char *main_name(const cli_option *o, char buf[NAME_LEN]) {
    char names[MAX_NAMES][NAME_LEN];
    int k = split_names(o->names, names);
    int pick = 0;
    for (int i = 0; i < k; i++)
        if (!strncmp(names[i], "--", 2)) { pick = i; break; }
    snprintf(buf, NAME_LEN, "%s", k ? names[pick] : "?");
    return buf;
}

static int has_name(const cli_option *o, const char *s, size_t len) {
    char names[MAX_NAMES][NAME_LEN];
    int k = split_names(o->names, names);
    for (int i = 0; i < k; i++)
        if (strlen(names[i]) == len && !strncmp(names[i], s, len)) return 1;
    return 0;
}

int cli_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 62 || lb > 62) return 99;
    int prev[64], cur[64];
    for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        cur[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int sub = prev[j - 1] + (a[i - 1] != b[j - 1]);
            int del = prev[j] + 1, ins = cur[j - 1] + 1;
            cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
        }
        memcpy(prev, cur, sizeof(int) * (lb + 1));
    }
    return prev[lb] > 99 ? 99 : prev[lb];
}

const char *cli_did_you_mean(const char *s, const char *const *candidates, int n) {
    const char *best = NULL;
    int best_d = 99;
    for (int i = 0; i < n; i++) {
        int d = cli_edit_distance(s, candidates[i]);
        if (d < best_d) { best_d = d; best = candidates[i]; }
    }
    size_t len = strlen(s);
    /* a prefix of a long name ("--temp" for "--temperature") is also a likely typo */
    if (best_d > 2) {
        for (int i = 0; i < n; i++)
            if (len >= 4 && !strncmp(candidates[i], s, len)) return candidates[i];
        return NULL;
    }
    return best_d > 0 && (size_t)best_d * 2 < len ? best : NULL;
}

/* The option spelled s (len bytes), or NULL. */
static const cli_option *find(const cli_option *opts, int n, const char *s, size_t len) {
    for (int i = 0; i < n; i++)
        if (has_name(&opts[i], s, len)) return &opts[i];
    return NULL;
}

static void unknown_option(const cli_command_help *h, const cli_option *opts, int n, const char *arg) {
    static char names[64][MAX_NAMES][NAME_LEN];
    const char *cand[64 * MAX_NAMES + 1];
    int nc = 0;
    for (int i = 0; i < n && i < 64; i++) {
        int k = split_names(opts[i].names, names[i]);
        for (int j = 0; j < k; j++) cand[nc++] = names[i][j];
    }
    cand[nc++] = "--help";
    char key[NAME_LEN];
    snprintf(key, sizeof key, "%.*s", !strncmp(arg, "--", 2) ? (int)strcspn(arg, "=") : (int)strlen(arg), arg);
    const char *s = cli_did_you_mean(key, cand, nc);
    if (s)
        fprintf(stderr, "dsv4 %s: unknown option '%s'; did you mean '%s'? (see dsv4 %s --help)\n", h->cmd, key, s,
                h->cmd);
    else
        fprintf(stderr, "dsv4 %s: unknown option '%s' (see dsv4 %s --help)\n", h->cmd, key, h->cmd);
}

/* ---- values ---------------------------------------------------------------------------------------- */

static int in_choices(const char *choices, const char *v) {
    size_t len = strlen(v);
    for (const char *p = choices; *p;) {
        size_t l = strcspn(p, "|");
        if (l == len && !strncmp(p, v, len)) return 1;
        p += l;
        if (*p == '|') p++;
    }
    return 0;
}

static int has_range(const cli_option *o) { return o->lo != 0 || o->hi != 0; }

/* Stores value v of option o (named name); 0, or -1 after printing what is wrong. */
static int store(const cli_command_help *h, const cli_option *o, const char *name, const char *v) {
    char *end;
    errno = 0;
    switch (o->kind) {
    case CLI_OPT_FLAG:
        *(int *)o->dest = 1;
        return 0;
    case CLI_OPT_STR:
        if (o->choices && !in_choices(o->choices, v)) {
            fprintf(stderr, "dsv4 %s: %s must be one of %s, got '%s'\n", h->cmd, name, o->choices, v);
            return -1;
        }
        *(const char **)o->dest = v;
        return 0;
    case CLI_OPT_STRS: {
        int *cnt = o->count;
        if (*cnt >= o->max) {
            fprintf(stderr, "dsv4 %s: at most %d %s values\n", h->cmd, o->max, name);
            return -1;
        }
        ((const char **)o->dest)[(*cnt)++] = v;
        return 0;
    }
    case CLI_OPT_INT:
    case CLI_OPT_LONG: {
        long long x = strtoll(v, &end, 10);
        if (end == v || *end || errno || (has_range(o) && (x < (long long)o->lo || x > (long long)o->hi))) {
            if (has_range(o))
                fprintf(stderr, "dsv4 %s: %s needs an integer in [%lld, %lld], got '%s'\n", h->cmd, name,
                        (long long)o->lo, (long long)o->hi, v);
            else
                fprintf(stderr, "dsv4 %s: %s needs an integer, got '%s'\n", h->cmd, name, v);
            return -1;
        }
        if (o->kind == CLI_OPT_INT) *(int *)o->dest = (int)x;
        else *(long *)o->dest = (long)x;
        return 0;
    }
    case CLI_OPT_U64: {
        const char *s = v;
        while (*s == ' ') s++;
        unsigned long long x = strtoull(v, &end, 10);
        if (end == v || *end || errno || *s == '-' || *s == '+') {
            fprintf(stderr, "dsv4 %s: %s needs a non-negative integer, got '%s'\n", h->cmd, name, v);
            return -1;
        }
        *(uint64_t *)o->dest = (uint64_t)x;
        return 0;
    }
    case CLI_OPT_DOUBLE:
    case CLI_OPT_FLOAT: {
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x)) {
            fprintf(stderr, "dsv4 %s: %s needs a number, got '%s'\n", h->cmd, name, v);
            return -1;
        }
        if (has_range(o) && (x < o->lo || x > o->hi)) {
            fprintf(stderr, "dsv4 %s: %s needs a number in [%g, %g], got '%s'\n", h->cmd, name, o->lo, o->hi, v);
            return -1;
        }
        if (o->kind == CLI_OPT_DOUBLE) *(double *)o->dest = x;
        else *(float *)o->dest = (float)x;
        return 0;
    }
    }
    return -1;
}

/* ---- parse and help -------------------------------------------------------------------------------- */

int cli_opts_parse(const cli_command_help *h, const cli_option *opts, int n, int argc, char **argv) {
    /* -h/--help anywhere an option can stand (not as the value of one: "-p --help" is a prompt) */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            cli_opts_help(stdout, h, opts, n);
            return CLI_HELP_SHOWN;
        }
        const cli_option *o = find(opts, n, a, strlen(a));
        if (o && o->kind != CLI_OPT_FLAG) i++;
    }
    unsigned char seen[256] = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            fprintf(stderr, "dsv4 %s: unexpected argument '%s' (options start with '-'; see dsv4 %s --help)\n",
                    h->cmd, a, h->cmd);
            return CLI_USAGE_ERROR;
        }
        const char *eq = !strncmp(a, "--", 2) ? strchr(a, '=') : NULL;
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const cli_option *o = find(opts, n, a, len);
        if (!o) {
            unknown_option(h, opts, n, a);
            return CLI_USAGE_ERROR;
        }
        char name[NAME_LEN];
        snprintf(name, sizeof name, "%.*s", (int)len, a);
        int idx = (int)(o - opts);
        if (o->kind != CLI_OPT_STRS && idx < 256 && seen[idx]++) {
            char mn[NAME_LEN];
            fprintf(stderr, "dsv4 %s: %s given twice (each option once; see dsv4 %s --help)\n", h->cmd,
                    main_name(o, mn), h->cmd);
            return CLI_USAGE_ERROR;
        }
        const char *v = NULL;
        if (o->kind == CLI_OPT_FLAG) {
            if (eq) {
                fprintf(stderr, "dsv4 %s: %s takes no value\n", h->cmd, name);
                return CLI_USAGE_ERROR;
            }
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            fprintf(stderr, "dsv4 %s: option %s needs a value (%s)\n", h->cmd, name, o->metavar ? o->metavar : "");
            return CLI_USAGE_ERROR;
        }
        if (store(h, o, name, v)) return CLI_USAGE_ERROR;
        if (o->count && o->kind != CLI_OPT_STRS) (*o->count)++;
    }
    return CLI_PARSED;
}

/* Writes text with continuation lines indented to HELP_COL; the default after the last line. */
static void help_text(FILE *f, const char *text, const char *def, int col) {
    const char *p = text ? text : "";
    for (int first = 1;; first = 0) {
        size_t l = strcspn(p, "\n");
        if (!first) fprintf(f, "%*s", HELP_COL, "");
        fwrite(p, 1, l, f);
        col = HELP_COL + (int)l;
        p += l;
        if (!*p) break;
        p++;
        fputc('\n', f);
    }
    if (def) {
        int pad = col < 90 ? 90 - col : 2;
        fprintf(f, "%*s[%s]", pad, "", def);
    }
    fputc('\n', f);
}

void cli_opts_help(FILE *f, const cli_command_help *h, const cli_option *opts, int n) {
    if (h->usage) fputs(h->usage, f);
    for (int i = 0; i < n; i++) {
        const cli_option *o = &opts[i];
        char names[MAX_NAMES][NAME_LEN], left[256];
        int k = split_names(o->names, names), len = snprintf(left, sizeof left, "  ");
        for (int j = 0; j < k && len < (int)sizeof left; j++)
            len += snprintf(left + len, sizeof left - (size_t)len, "%s%s", j ? ", " : "", names[j]);
        if (o->metavar && len < (int)sizeof left)
            len += snprintf(left + len, sizeof left - (size_t)len, " %s", o->metavar);
        if (len > (int)sizeof left - 1) len = (int)sizeof left - 1;
        fputs(left, f);
        if (len + 1 >= HELP_COL) fprintf(f, "\n%*s", HELP_COL, "");
        else fprintf(f, "%*s", HELP_COL - len, "");
        help_text(f, o->help, o->def, HELP_COL);
    }
    fprintf(f, "  -h, --help%*sthis help\n", HELP_COL - 12, "");
    if (h->footer) fputs(h->footer, f);
}

const char *cli_auto_backend(void) {
    return dsv4_engine_cuda_devices() > 0 ? "cuda" : "cpu";
}

/* progress.c — stderr progress bars of the dsv4 CLI (see progress.h). */
#include "progress.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

void cli_progress_init(cli_progress *p, int force) {
    memset(p, 0, sizeof *p);
    p->enabled = force || isatty(STDERR_FILENO);
}

void cli_progress_begin(cli_progress *p, const char *label, int bytes) {
    if (!p->enabled) return;
    if (p->active) cli_progress_end(p);
    snprintf(p->label, sizeof p->label, "%s", label);
    p->bytes = bytes;
    p->t_start = now_s();
    p->t_last = 0;
    p->active = 1;
}

static void fmt_amount(char *s, size_t n, uint64_t v, int bytes) {
    if (!bytes) snprintf(s, n, "%llu", (unsigned long long)v);
    else if (v >= (1ull << 30)) snprintf(s, n, "%.2f GB", v / 1073741824.0);
    else snprintf(s, n, "%.1f MB", v / 1048576.0);
}

static void draw(cli_progress *p, uint64_t done, uint64_t total) {
    enum { W = 30 };
    double f = total ? (double)done / (double)total : 1.0;
    if (f > 1) f = 1;
    int fill = (int)(f * W + 0.5);
    char bar[W + 1], a[32], b[32];
    for (int i = 0; i < W; i++) bar[i] = i < fill ? '#' : '.';
    bar[W] = 0;
    fmt_amount(a, sizeof a, done, p->bytes);
    fmt_amount(b, sizeof b, total, p->bytes);
    /* \r + clear to end of line: a shorter redraw leaves no trailing characters */
    fprintf(stderr, "\r\033[K%s [%s] %3d%% %s / %s  %.1fs", p->label, bar, (int)(f * 100), a, b,
            now_s() - p->t_start);
    fflush(stderr);
}

void cli_progress_update(cli_progress *p, uint64_t done, uint64_t total) {
    if (!p->enabled || !p->active) return;
    double t = now_s();
    if (done < total && t - p->t_last < 0.05) return;
    p->t_last = t;
    draw(p, done, total);
}

void cli_progress_end(cli_progress *p) {
    if (!p->enabled || !p->active) return;
    fputc('\n', stderr);
    fflush(stderr);
    p->active = 0;
}

void cli_progress_engine_cb(void *user, const char *stage, uint64_t done, uint64_t total) {
    cli_progress *p = user;
    if (strcmp(stage, "weights") != 0) return;
    if (!p->active) cli_progress_begin(p, "loading weights", 1);
    cli_progress_update(p, done, total);
    if (done >= total) cli_progress_end(p);
}

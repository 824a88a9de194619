/* progress.h — one-line progress bars on stderr for the dsv4 CLI (weight loading, long prefills).
 * A bar draws only when enabled (stderr is a TTY, or forced with --progress); otherwise every call is a
 * no-op, so callers never test. Redraws are rate-limited (at most ~20 per second, plus the final one). */
#ifndef DSV4_TOOLS_PROGRESS_H
#define DSV4_TOOLS_PROGRESS_H

#include <stdint.h>

typedef struct cli_progress {
    int enabled;          /* 1: draw on stderr */
    int active;           /* a bar line is on screen (not yet ended with a newline) */
    int bytes;            /* 1: show done/total as sizes (GB/MB), else as counts */
    char label[48];       /* text before the bar */
    double t_start, t_last;
} cli_progress;

/* enabled = force || isatty(stderr). */
void cli_progress_init(cli_progress *p, int force);
/* Starts a bar labelled label (ends a bar still on screen first). */
void cli_progress_begin(cli_progress *p, const char *label, int bytes);
void cli_progress_update(cli_progress *p, uint64_t done, uint64_t total);
/* Draws the final state and ends the line. */
void cli_progress_end(cli_progress *p);

/* dsv4_progress_fn for dsv4_engine_options.progress (user = cli_progress *): draws the "weights" stage. */
void cli_progress_engine_cb(void *user, const char *stage, uint64_t done, uint64_t total);

#endif

/* cli_util.h — token-list parsing shared by the dsv4 subcommands, and legacy argv scanning (options: cli_opts.h). */
#ifndef DSV4_TOOLS_CLI_UTIL_H
#define DSV4_TOOLS_CLI_UTIL_H

#include <stdint.h>

/* Legacy argv scanning, kept only so that a command written before cli_opts.h (the `serve` command of the
 * http branch) still builds; new code uses an option table (cli_opts.h). Known flaws, which the tables fix:
 * cli_opt scans all of argv, so a value equal to an option name is read as that option (`-p --model`), and
 * a repeated option silently keeps the first. */
const char *cli_opt(int argc, char **argv, const char *name);
int cli_flag(int argc, char **argv, const char *name);
int cli_check_options(const char *cmd, int argc, char **argv, const char *const *known, const char *const *flags);
int cli_parse_ll(const char *s, long long lo, long long hi, long long *out);

/* Parses "1,2,3" (or "[1, 2, 3]") or, if spec names a readable file, the ids in it separated by commas,
 * whitespace or JSON list brackets.
 * *ids malloc'ed. Returns 0 on success, prints an error and returns -1 otherwise. */
int cli_parse_ids(const char *cmd, const char *spec, int32_t **ids, int *n);

#endif

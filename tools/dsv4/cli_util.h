/* cli_util.h — small helpers shared by the dsv4 subcommands: option lookup and token-list parsing. */
#ifndef DSV4_TOOLS_CLI_UTIL_H
#define DSV4_TOOLS_CLI_UTIL_H

#include <stdint.h>

/* Returns the value following option name in argv (e.g. "--model"), or NULL. */
const char *cli_opt(int argc, char **argv, const char *name);
int cli_flag(int argc, char **argv, const char *name);
/* Checks every argv entry starting with "--" is in known (NULL-terminated, names with values) or
 * flags (NULL-terminated, names without). Prints the offender and returns 0 if not. */
int cli_check_options(const char *cmd, int argc, char **argv, const char *const *known, const char *const *flags);

/* Parses an integer (decimal, 0x hex or 0 octal) in [lo, hi] filling the whole of s. 0 on success, -1
 * otherwise (nothing written). */
int cli_parse_ll(const char *s, long long lo, long long hi, long long *out);

/* Parses "1,2,3" (or "[1, 2, 3]") or, if spec names a readable file, the ids in it separated by commas,
 * whitespace or JSON list brackets.
 * *ids malloc'ed. Returns 0 on success, prints an error and returns -1 otherwise. */
int cli_parse_ids(const char *cmd, const char *spec, int32_t **ids, int *n);

#endif

/* cli_util.h — token-list parsing shared by the dsv4 subcommands (options: cli_opts.h). */
#ifndef DSV4_TOOLS_CLI_UTIL_H
#define DSV4_TOOLS_CLI_UTIL_H

#include <stdint.h>

/* Parses "1,2,3" (or "[1, 2, 3]") or, if spec names a readable file, the ids in it separated by commas,
 * whitespace or JSON list brackets.
 * *ids malloc'ed. Returns 0 on success, prints an error and returns -1 otherwise. */
int cli_parse_ids(const char *cmd, const char *spec, int32_t **ids, int *n);

#endif

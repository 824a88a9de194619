/* cli_util.h — token-list parsing shared by the dsv4 subcommands (options: cli_opts.h). */
#ifndef DSV4_TOOLS_CLI_UTIL_H
#define DSV4_TOOLS_CLI_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"

/* Parses "1,2,3" (or "[1, 2, 3]") or, if spec names a readable file, the ids in it separated by commas,
 * whitespace or JSON list brackets.
 * *ids malloc'ed. Returns 0 on success, prints an error and returns -1 otherwise. */
int cli_parse_ids(const char *cmd, const char *spec, int32_t **ids, int *n);

/* The text of path, or of stdin when path is "-" (a pipe or FIFO is read to its end), through the bounded
 * reader of include/dsv4_files.h: at most max_bytes, a directory or device refused at once (named in err).
 * *data is malloc'ed and NUL-terminated (*len excludes the NUL). */
dsv4_status cli_read_text(const char *path, uint64_t max_bytes, char **data, size_t *len, dsv4_err *err);

#endif

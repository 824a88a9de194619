/* cmd_logits.c — placeholder for the 'logits' subcommand until its issue lands. */
#include <stdio.h>

#include "cli.h"

int dsv4_cmd_logits(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "dsv4 %s: not implemented yet\n", argv[0]);
    return 1;
}

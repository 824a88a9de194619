/* cmd_generate.c — placeholder for the 'generate' subcommand until its issue lands. */
#include <stdio.h>

#include "cli.h"

int dsv4_cmd_generate(int argc, char **argv) {
    (void)argc;
    fprintf(stderr, "dsv4 %s: not implemented yet\n", argv[0]);
    return 1;
}

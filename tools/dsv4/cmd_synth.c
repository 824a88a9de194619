/* cmd_synth.c — `dsv4 synth --out DIR [--preset tiny|flash-shapes] [--layers N] [--experts N] [--seed S]
 * [--tokenizer FILE] [--shard-mb N]`: writes a random-weight DeepSeek V4 checkpoint in the released format
 * (include/dsv4_synth.h), so that the engine runs on a fresh machine without downloading anything. Exit 0 on
 * success, 1 on failure (one error line), 2 on a usage error. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_opts.h"
#include "textgen.h"
#include "dsv4_synth.h"

static const cli_command_help help = {
    .cmd = "synth",
    .usage = "usage: dsv4 synth --out DIR [options]   write a random-weight DeepSeek V4 checkpoint\n",
    .footer = NULL,
};

int dsv4_cmd_synth(int argc, char **argv) {
    const char *out = NULL, *preset = "tiny";
    int layers = 0, experts = 0;
    uint64_t seed = 0;
    long shard_mb = 4096;
    dsv4_synth_options opt;
    dsv4_synth_options_default(&opt);
    const cli_option opts[] = {
        {.names = "--out", .metavar = "DIR", .kind = CLI_OPT_STR, .dest = &out,
         .help = "output directory (created if missing)"},
        {.names = "--preset", .metavar = "NAME", .kind = CLI_OPT_STR, .dest = &preset, .choices = "tiny|flash-shapes",
         .help = "tiny (dim 256, 4 layers, 8 experts; ~140 MB) or flash-shapes\n"
                 "(V4-Flash dims; default 4 layers, 16 experts)", .def = "tiny"},
        {.names = "--layers", .metavar = "N", .kind = CLI_OPT_INT, .dest = &layers, .lo = 0, .hi = 128,
         .help = "main layers (0 = preset default)", .def = "0"},
        {.names = "--experts", .metavar = "N", .kind = CLI_OPT_INT, .dest = &experts, .lo = 0, .hi = 1024,
         .help = "routed experts (0 = preset default)", .def = "0"},
        {.names = "--seed", .metavar = "S", .kind = CLI_OPT_U64, .dest = &seed,
         .help = "RNG seed (same seed, same bytes)", .def = "0"},
        {.names = "--tokenizer", .metavar = "FILE", .kind = CLI_OPT_STR, .dest = &opt.tokenizer_json,
         .help = "copy this tokenizer.json into DIR"},
        {.names = "--shard-mb", .metavar = "N", .kind = CLI_OPT_LONG, .dest = &shard_mb, .lo = 1, .hi = 1L << 24,
         .help = "largest shard in MB before starting a new one", .def = "4096"},
    };
    int rc = cli_opts_parse(&help, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (!out) {
        fprintf(stderr, "dsv4 synth: --out DIR is required (see dsv4 synth --help)\n");
        return 2;
    }
    opt.shard_max_bytes = (uint64_t)shard_mb << 20;
    opt.verbose = 1;
    dsv4_config cfg;
    dsv4_err err = {{0}};
    if (dsv4_synth_config_preset(preset, layers, experts, &cfg, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 synth: %s\n", err.msg);
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (dsv4_synth_write(&cfg, out, seed, &opt, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 synth: %s\n", err.msg);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("wrote %s checkpoint (%d layers + MTP, %d experts, seed %llu) to %s in %.1f s\n", preset, cfg.n_layers,
           cfg.n_routed_experts, (unsigned long long)seed, out, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    cli_model_notice_if_random(out);   /* says what the checkpoint is not, and where the real ones are */
    return 0;
}

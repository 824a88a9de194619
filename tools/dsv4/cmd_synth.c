/* cmd_synth.c — `dsv4 synth --out DIR [--preset tiny|flash-shapes] [--layers N] [--experts N] [--seed S]
 * [--tokenizer FILE] [--shard-mb N]`: writes a random-weight DeepSeek V4 checkpoint in the released format
 * (model/synth.h), so that the engine runs on a fresh machine without downloading anything. Exit 0 on
 * success, 1 on failure (one error line), 2 on a usage error. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cli_util.h"
#include "core/status.h"
#include "model/synth.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: dsv4 synth --out DIR [options]   write a random-weight DeepSeek V4 checkpoint\n"
            "  --out DIR          output directory (created if missing)\n"
            "  --preset NAME      tiny (dim 256, 4 layers, 8 experts; ~140 MB) or flash-shapes\n"
            "                     (V4-Flash dims; default 4 layers, 16 experts)   [tiny]\n"
            "  --layers N         main layers (0 = preset default)\n"
            "  --experts N        routed experts (0 = preset default)\n"
            "  --seed S           RNG seed (same seed, same bytes)                  [0]\n"
            "  --tokenizer FILE   copy this tokenizer.json into DIR\n"
            "  --shard-mb N       largest shard in MB before starting a new one     [4096]\n");
}

int dsv4_cmd_synth(int argc, char **argv) {
    const char *out = NULL, *preset = "tiny";
    long long layers = 0, experts = 0, seed = 0, shard_mb = 4096;
    dsv4_synth_options opt;
    dsv4_synth_options_default(&opt);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        if (i + 1 >= argc) {
            fprintf(stderr, "dsv4 synth: %s needs a value (or is unknown)\n", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--preset")) preset = v;
        else if (!strcmp(a, "--layers")) bad = cli_parse_ll(v, 0, 128, &layers);
        else if (!strcmp(a, "--experts")) bad = cli_parse_ll(v, 0, 1024, &experts);
        else if (!strcmp(a, "--seed")) bad = cli_parse_ll(v, 0, INT64_MAX, &seed);
        else if (!strcmp(a, "--tokenizer")) opt.tokenizer_json = v;
        else if (!strcmp(a, "--shard-mb")) bad = cli_parse_ll(v, 1, 1 << 24, &shard_mb);
        else {
            fprintf(stderr, "dsv4 synth: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "dsv4 synth: bad value '%s' for %s\n", v, a);
            return 2;
        }
    }
    if (!out) {
        fprintf(stderr, "dsv4 synth: --out DIR is required\n");
        usage(stderr);
        return 2;
    }
    opt.shard_max_bytes = (uint64_t)shard_mb << 20;
    opt.verbose = 1;
    dsv4_config cfg;
    dsv4_err err = {{0}};
    if (dsv4_synth_config_preset(preset, (int)layers, (int)experts, &cfg, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 synth: %s\n", err.msg);
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (dsv4_synth_write(&cfg, out, (uint64_t)seed, &opt, &err) != DSV4_OK) {
        fprintf(stderr, "dsv4 synth: %s\n", err.msg);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    printf("wrote %s checkpoint (%d layers + MTP, %d experts, seed %lld) to %s in %.1f s\n", preset, cfg.n_layers,
           cfg.n_routed_experts, seed, out, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    return 0;
}

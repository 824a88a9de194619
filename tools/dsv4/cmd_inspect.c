/* cmd_inspect.c — `dsv4 inspect --model DIR | --config FILE`: the options of the command; the work is
 * dsv4_inspect (include/dsv4_inspect.h, src/engine/inspect.c), which validates a checkpoint (every tensor the
 * config implies, nothing else) and prints a readable summary: layer schedule, routing, parameter counts
 * and bytes by dtype, KV-cache bytes per token and per request. Exit 0 when valid; one error line and
 * exit 1 otherwise. --config alone prints the config-derived part (counts computed from shapes).
 * --gpus N [--gpu-mem GB] adds the tensor/expert-parallel plan (docs/MULTI_GPU.md): weight bytes resident
 * per GPU and the KV capacity left on each, or the error "needs at least K GPUs of G GB" when N GPUs cannot
 * hold the model (checked from the config before any weight file is opened). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_opts.h"
#include "dsv4_inspect.h"
#include "textgen.h"

static const cli_command_help help = {
    .cmd = "inspect",
    .usage = "usage: dsv4 inspect [--model DIR]    validate a checkpoint directory and summarize it\n"
             "                                      (default: the embedded random-weight default)\n"
             "       dsv4 inspect --config FILE     summarize a config.json alone (no weights)\n",
    .footer = NULL,
};

/* dsv4_inspect's before_open with --model DIR --gpus N: the directory check that was left until the GPU-count
 * decision, then the random-weight notice. */
static int check_model_dir(void *user, const char *dir) {
    (void)user;
    if (cli_model_check_dir("inspect", dir)) return 1;
    cli_model_notice_if_random(dir);
    return 0;
}

int dsv4_cmd_inspect(int argc, char **argv) {
    const char *model = NULL, *config = NULL;
    int gpus = 0, json = 0;
    double gpu_gb = 80.0;
    const cli_option opts[] = {
        CLI_OPT_ENTRY_MODEL(&model, "checkpoint directory to validate and summarize"),
        {.names = "--config", .metavar = "FILE", .kind = CLI_OPT_STR, .dest = &config,
         .help = "summarize a config.json alone (counts computed from shapes)"},
        {.names = "--gpus", .metavar = "N", .kind = CLI_OPT_INT, .dest = &gpus, .lo = 1, .hi = 1024,
         .help = "also plan N-GPU tensor/expert parallelism: weights per GPU, KV capacity left"},
        {.names = "--gpu-mem", .metavar = "GB", .kind = CLI_OPT_DOUBLE, .dest = &gpu_gb, .lo = 1e-3, .hi = 1e6,
         .help = "memory per GPU in GB (10^9 bytes)", .def = "80"},
        {.names = "--json", .kind = CLI_OPT_FLAG, .dest = &json, .help = "one JSON object instead of the text summary"},
    };
    int rc = cli_opts_parse(&help, opts, (int)(sizeof opts / sizeof opts[0]), argc, argv);
    if (rc) return rc == CLI_HELP_SHOWN ? 0 : rc;
    if (model && config) {
        fprintf(stderr, "dsv4 inspect: give one of --model DIR or --config FILE\n");
        return 2;
    }
    char *model_dir = NULL;
    int check_dir = 0;
    if (!config) {
        /* --gpus decides "too few GPUs" from config.json alone, so only the directory's existence is checked
           here and the rest after that decision (inspect()); otherwise the full check, or the default model */
        if (model && gpus) {
            struct stat sb;
            if (stat(model, &sb) != 0 || !S_ISDIR(sb.st_mode)) return cli_model_check_dir("inspect", model);
            model_dir = strdup(model);
            check_dir = 1;
        } else if (cli_model_resolve("inspect", model, NULL, 0, &model_dir)) {
            return 1;
        }
        if (!model_dir) return 1;
        model = model_dir;
    }
    dsv4_inspect_options io = {.model_dir = config ? NULL : model, .config_file = config, .gpus = gpus,
                               .gpu_mem_gb = gpu_gb, .json = json, .before_open = check_dir ? check_model_dir : NULL};
    rc = dsv4_inspect(&io);
    free(model_dir);
    return rc;
}

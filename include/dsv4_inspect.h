/* dsv4_inspect.h — the entry point of `dsv4 inspect`: validate a checkpoint (or read a config.json alone)
 * and print its summary -- layer schedule, routing, parameters and bytes by dtype, KV-cache bytes, and on
 * request the tensor/expert-parallel plan for N GPUs (docs/MULTI_GPU.md). Public header (include/,
 * docs/ARCHITECTURE.md "Layering"); implemented in src/engine/inspect.c. Plain C11. */
#ifndef DSV4_INSPECT_H
#define DSV4_INSPECT_H

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_inspect_options {
    const char *model_dir;     /* checkpoint directory to validate and summarize; or NULL with config_file */
    const char *config_file;   /* a config.json alone (counts computed from shapes); or NULL with model_dir */
    int gpus;                  /* > 0: also the plan for this many GPUs (weights per GPU, KV capacity left) */
    double gpu_mem_gb;         /* memory per GPU in GB (10^9 bytes), used with gpus */
    int json;                  /* 1: one JSON object on stdout instead of the text summary */
    /* Optional, model_dir only: called after the GPU-count decision (made from config.json alone, so "too
     * few GPUs" comes before any check of the weight files) and before the checkpoint is opened; a non-zero
     * return ends dsv4_inspect with that value (the callback printed why). */
    int (*before_open)(void *user, const char *model_dir);
    void *before_open_user;    /* passed to before_open (borrowed) */
} dsv4_inspect_options;

/* Exactly one of model_dir and config_file. Prints the summary to stdout and returns 0 when the checkpoint
 * (or config) is valid and, with gpus, the model fits; otherwise prints one error line on stderr
 * ("dsv4 inspect: ...") and returns 1 (or before_open's value). */
int dsv4_inspect(const dsv4_inspect_options *o);

#ifdef __cplusplus
}
#endif
#endif

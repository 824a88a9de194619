/* checkpoint.h — a DeepSeek V4 checkpoint directory opened for reading: config.json, the safetensors
 * shards (via model.safetensors.index.json, else model.safetensors, else every *.safetensors), a
 * name-sorted tensor index, and the validation of every tensor the config implies (spec §2.3: names,
 * dtypes, shapes of weights and scales, MTP block, hash vs learned routing, CSA vs HCA compressors).
 * Unexpected extra tensors are an error too. Binding typed views is done by model/weights.c. */
#ifndef DSV4_MODEL_CHECKPOINT_H
#define DSV4_MODEL_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4_config.h"
#include "model/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Parameter and byte counts, computed from the shapes the config implies (equal to the checkpoint's own
 * after validation, since nothing else is allowed in it). FP4 bytes count two parameters each. */
typedef struct dsv4_checkpoint_stats {
    uint64_t n_tensors;
    uint64_t params_total;       /* main model + MTP */
    uint64_t params_mtp;         /* mtp.* only */
    uint64_t params_routed;      /* routed experts of the main layers */
    uint64_t params_active;      /* per token in the main model: total - mtp - routed * (E - k) / E */
    uint64_t bytes_total;
    uint64_t bytes_by_dtype[DSV4_DTYPE_COUNT];
    uint64_t params_by_dtype[DSV4_DTYPE_COUNT];
} dsv4_checkpoint_stats;

typedef struct dsv4_ckpt_entry {
    const dsv4_st_tensor *t;     /* view into files[file] */
    int file;
} dsv4_ckpt_entry;

typedef struct dsv4_checkpoint {
    char *dir;                   /* owned copy */
    dsv4_config cfg;             /* expert_fp4 resolved to 0/1 */
    dsv4_st_file *files;         /* [n_files] (owned, mmapped) */
    int n_files;
    dsv4_ckpt_entry *index;      /* [n_index] sorted by tensor name (owned) */
    size_t n_index;
    dsv4_checkpoint_stats stats;
} dsv4_checkpoint;

/* Opens dir: loads and checks config.json, maps the shards, builds the index and validates every tensor
 * against the config. On failure *ck is zeroed and nothing stays open; err names the file and tensor
 * (e.g. "<file>: tensor <name>: expected F8_E4M3 [1024, 4096], got BF16 [1024, 4096]"). */
dsv4_status dsv4_checkpoint_open(const char *dir, dsv4_checkpoint *ck, dsv4_err *err);

/* For a checkpoint built in memory (model/synth_ckpt.h): with ck->dir (a label), ck->cfg, ck->files and
 * ck->n_files set by the caller (owned by ck from now on), builds the name index, validates names, dtypes
 * and shapes against ck->cfg (not the values: there may be no host bytes) and computes the stats. On
 * failure closes ck (everything it owned is freed) and err says why. */
dsv4_status dsv4_checkpoint_finish_in_memory(dsv4_checkpoint *ck, dsv4_err *err);

/* Unmaps and frees everything; safe on a zeroed struct. Views bound from it become invalid. */
void dsv4_checkpoint_close(dsv4_checkpoint *ck);

/* Tensor by exact name (binary search), or NULL. */
const dsv4_st_tensor *dsv4_checkpoint_tensor_find(const dsv4_checkpoint *ck, const char *name);

/* Validates the open tensor set against ck->cfg (called by _open; exposed for tests and tools). */
dsv4_status dsv4_checkpoint_validate(const dsv4_checkpoint *ck, dsv4_err *err);

/* Counts computed from the config alone (cfg->expert_fp4 < 0 is counted as FP4). */
void dsv4_checkpoint_stats_compute(const dsv4_config *cfg, dsv4_checkpoint_stats *st);

/* Calls fn once per tensor the config implies, in a fixed order, stopping at the first non-OK return.
 * is_mtp: tensor of the MTP block; is_routed: a routed-expert weight or scale. */
typedef dsv4_status (*dsv4_checkpoint_visit_fn)(void *ctx, const char *name, dsv4_dtype dt, int ndim,
                                                const int64_t *shape, int is_mtp, int is_routed);
dsv4_status dsv4_checkpoint_expected_visit(const dsv4_config *cfg, dsv4_checkpoint_visit_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif
#endif

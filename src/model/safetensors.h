/* safetensors.h — reader for one safetensors file (8-byte little-endian header length, JSON header,
 * raw data). Owns the file mapping and the parsed tensor table; never reads outside the mapping.
 * Knows nothing of DeepSeek V4: names, shapes and dtypes are checked against the model elsewhere
 * (model/checkpoint.c). Dtypes accepted: BF16, F32, F8_E4M3, F8_E8M0, I8, I64; others are rejected. */
#ifndef DSV4_MODEL_SAFETENSORS_H
#define DSV4_MODEL_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dsv4_dtype {
    DSV4_DTYPE_BF16 = 0,
    DSV4_DTYPE_F32,
    DSV4_DTYPE_F8_E4M3,
    DSV4_DTYPE_F8_E8M0,
    DSV4_DTYPE_I8,       /* packed FP4 (two e2m1 codes per byte) in the released checkpoints */
    DSV4_DTYPE_I64,
    DSV4_DTYPE_COUNT
} dsv4_dtype;

const char *dsv4_dtype_name(dsv4_dtype dt);   /* the safetensors spelling, e.g. "F8_E4M3" */
size_t dsv4_dtype_size(dsv4_dtype dt);        /* bytes per element */

#define DSV4_ST_MAX_DIMS 8

typedef struct dsv4_st_tensor {
    char *name;                       /* owned, NUL-terminated */
    dsv4_dtype dtype;
    int ndim;                         /* 0..DSV4_ST_MAX_DIMS (0 = scalar, 1 element) */
    int64_t shape[DSV4_ST_MAX_DIMS];
    uint64_t nbytes;                  /* = numel * dtype size (checked against data_offsets) */
    const uint8_t *data;              /* view into the file buffer; valid while the file is open */
} dsv4_st_tensor;

typedef struct dsv4_st_file {
    char *path;                       /* owned copy (or the label given to _parse) */
    const uint8_t *base;              /* whole file: mapping (owned when mapped) or caller's buffer */
    size_t size;
    int mapped;                       /* 1: base is an mmap owned by this struct */
    uint64_t header_len;
    dsv4_st_tensor *tensors;          /* [n_tensors] (owned), in header order */
    size_t n_tensors;
} dsv4_st_file;

/* Parses a complete safetensors image buf[size] (header length + header + data) without copying the
 * data: tensor .data pointers point into buf, which must outlive st. label names the file in errors.
 * Checks: size >= 8, header length <= size - 8, header is a JSON object of tensor entries (plus an
 * ignored "__metadata__"), known dtypes, non-negative shapes, data_offsets in range and equal to
 * numel * dtype size, no duplicate names, no two tensors sharing a byte (overlapping data_offsets), a
 * header of at most DSV4_LIMIT_ST_HEADER_BYTES. On failure fills err ("<label>: ...") and leaves *st zeroed. */
dsv4_status dsv4_st_file_parse(const uint8_t *buf, size_t size, const char *label, dsv4_st_file *st,
                               dsv4_err *err);

/* mmaps path read-only and parses it as above. On failure nothing stays mapped or allocated. */
dsv4_status dsv4_st_file_open(const char *path, dsv4_st_file *st, dsv4_err *err);

/* Frees the table and unmaps the file (if mapped). Safe on a zeroed struct; leaves it zeroed. */
void dsv4_st_file_close(dsv4_st_file *st);

/* Linear lookup by name (files are small tables; the checkpoint keeps its own sorted index). */
const dsv4_st_tensor *dsv4_st_file_find(const dsv4_st_file *st, const char *name);

/* Formats "DTYPE [d0, d1, ...]" into buf (used by every shape/dtype error message). */
void dsv4_st_describe(dsv4_dtype dt, int ndim, const int64_t *shape, char *buf, size_t cap);

#ifdef __cplusplus
}
#endif
#endif

/* dsv4_npy.h — writing and reading float32 arrays in NumPy's .npy format (version 1.0, little-endian,
 * C order). Used by `dsv4 logits` (logits and per-layer dumps) and by tests reading goldens.
 * Public header (include/, docs/ARCHITECTURE.md "Layering"); implemented in src/core/npy.c. */
#ifndef DSV4_NPY_H
#define DSV4_NPY_H

#include <stddef.h>

#include "dsv4_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes data (float32, C order) with the given shape to path. */
dsv4_status dsv4_npy_write_f32(const char *path, const float *data, const long *shape, int ndim, dsv4_err *err);

/* Reads a float32 little-endian C-order .npy file. *data is malloc'ed (caller frees); shape gets up to
 * max_dims entries and *ndim their count. */
dsv4_status dsv4_npy_read_f32(const char *path, float **data, long *shape, int max_dims, int *ndim, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

/* contents.h — the validation layer for the *values* inside a checkpoint's tensors, run once at load after
 * the names, dtypes and shapes are known to match the config (model/checkpoint.c). It checks what is cheap
 * and would otherwise make the engine assert or compute garbage: hash-routing tables (tid2eid) hold expert
 * ids in [0, n_routed_experts); e8m0 scale tensors hold no 0xFF code (NaN in the OCP MX format); F32
 * tensors and 1-D BF16 tensors (norm weights, sinks, biases, hyper-connection parameters) are finite.
 * Large weight matrices (FP8 / FP4 / BF16 embeddings and head) are not scanned here: a NaN there surfaces
 * as a non-finite activation, which the forward pass reports with the layer and op (docs/RELIABILITY.md). */
#ifndef DSV4_MODEL_CONTENTS_H
#define DSV4_MODEL_CONTENTS_H

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct dsv4_checkpoint;

/* Checks the values of every tensor of an open checkpoint whose structure is already validated. On failure
 * err names the file, the tensor, the element index and the bad value. Changes nothing. */
dsv4_status dsv4_checkpoint_validate_contents(const struct dsv4_checkpoint *ck, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

/* synth_ckpt.h — a random-weight checkpoint built in memory, never written to disk: the tensor table the
 * config implies (dsv4_checkpoint_expected_visit), laid out in one address range, with every value from the
 * counter-based generator of synth_hash.h. Two kinds:
 *
 *   host values: the range is anonymous memory filled on the host, then made read-only — an ordinary
 *     checkpoint for every consumer (cpu and cuda backends);
 *   device only: the range is reserved address space with no access and no memory behind it (PROT_NONE),
 *     so the table has names, dtypes, shapes and distinct addresses but no host bytes. The CUDA forward's
 *     weight placement finds, for each address range it would upload, the tensor and first element
 *     (dsv4_synth_checkpoint_locate) and generates those elements on the device instead — the same bytes
 *     the host kind holds. Any host read of such a tensor faults at once instead of reading garbage.
 *
 * Why addresses rather than a flag per tensor: every existing binding and slicing (weights.c views,
 * shard.c row ranges) works unchanged, and the placement code only has to turn (pointer, bytes) back into
 * (tensor, elements). A tensor starts at a multiple of 256 bytes of the range. */
#ifndef DSV4_MODEL_SYNTH_CKPT_H
#define DSV4_MODEL_SYNTH_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "model/checkpoint.h"
#include "model/synth_hash.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Builds *ck for cfg (expert_fp4 must be 0 or 1) with values from seed. host_values: 1 = filled host memory,
 * 0 = device only (reserved addresses). ck->dir is a label ("synthetic (seed S, host|device-only)"); closing
 * it (dsv4_checkpoint_close) unmaps the range. On failure *ck is zeroed. */
dsv4_status dsv4_synth_checkpoint_create(const dsv4_config *cfg, uint64_t seed, int host_values, dsv4_checkpoint *ck,
                                         dsv4_err *err);

/* The tensor of ck (made by dsv4_synth_checkpoint_create with this seed) that holds [p, p + bytes): its fill
 * and the index of the element at p. INTERNAL when the range is not inside one tensor or does not start on an
 * element boundary (a bug in the caller's slicing). */
dsv4_status dsv4_synth_checkpoint_locate(const dsv4_checkpoint *ck, uint64_t seed, const void *p, size_t bytes,
                                         dsv4_synth_fill *fill, uint64_t *first_elem, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

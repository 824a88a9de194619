/* cuda_synth.h — random weights generated directly in device memory with the counter-based generator of
 * model/synth_hash.h (the kernel runs the same dsv4_synth_value as the host fill, so the bytes are identical
 * to dsv4_synth_hash_fill's), and the device's free memory (for sizing a synthetic model to the GPU).
 * Plain C; the kernel is in kernels/synth_fill.cu. */
#ifndef DSV4_BACKEND_CUDA_CUDA_SYNTH_H
#define DSV4_BACKEND_CUDA_CUDA_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "backend/cuda/cuda_ctx.h"
#include "model/synth_hash.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Writes elements [first, first + n) of the tensor described by f into dst (device, n · f->elem_bytes bytes,
 * aligned to f->elem_bytes), enqueued on ctx->stream. Element i goes to dst[i - first] whatever the grid:
 * the result does not depend on the launch shape. INTERNAL for a misaligned dst or an unknown element size. */
dsv4_status dsv4_cuda_synth_fill(dsv4_cuda_ctx *ctx, const dsv4_synth_fill *f, uint64_t first, uint64_t n,
                                 void *dst, dsv4_err *err);

/* Free and total memory of `device` (cudaMemGetInfo), bytes. */
dsv4_status dsv4_cuda_mem_info(int device, size_t *free_bytes, size_t *total_bytes, dsv4_err *err);

#ifdef __cplusplus
}
#endif
#endif

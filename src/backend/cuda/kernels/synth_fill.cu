/* synth_fill.cu — the device side of model/synth_hash.h: one grid-stride kernel per element size that stores
 * dsv4_synth_value(f, first + i) at dst[i]. The value arithmetic is the header's, compiled for the device
 * (see synth_hash.h for why host and device round alike), so the bytes equal the host fill's. */
#include "backend/cuda/cuda_synth.h"

#include <cuda_runtime.h>

template <typename T>
__global__ void synth_fill_kernel(dsv4_synth_fill f, uint64_t first, uint64_t n, T *dst) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dst[i] = (T)dsv4_synth_value(&f, first + i);
}

extern "C" dsv4_status dsv4_cuda_synth_fill(dsv4_cuda_ctx *ctx, const dsv4_synth_fill *f, uint64_t first,
                                            uint64_t n, void *dst, dsv4_err *err) {
    const int z = f->elem_bytes;
    if ((z != 1 && z != 2 && z != 4 && z != 8) || (uintptr_t)dst % (uintptr_t)(z > 0 ? z : 1))
        return dsv4_err_set(err, DSV4_ERR_INTERNAL, "synth fill: element size %d at %p", z, dst);
    if (n == 0) return DSV4_OK;
    const int threads = 256;
    uint64_t want = (n + threads - 1) / threads, cap = (uint64_t)ctx->sm_count * 16;
    const unsigned blocks = (unsigned)(want < cap ? want : cap);
    cudaStream_t s = (cudaStream_t)ctx->stream;
    switch (z) {
    case 1: synth_fill_kernel<uint8_t><<<blocks, threads, 0, s>>>(*f, first, n, (uint8_t *)dst); break;
    case 2: synth_fill_kernel<uint16_t><<<blocks, threads, 0, s>>>(*f, first, n, (uint16_t *)dst); break;
    case 4: synth_fill_kernel<uint32_t><<<blocks, threads, 0, s>>>(*f, first, n, (uint32_t *)dst); break;
    default: synth_fill_kernel<uint64_t><<<blocks, threads, 0, s>>>(*f, first, n, (uint64_t *)dst); break;
    }
    DSV4_CUDA_CHECK_LAUNCH(err);
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_mem_info(int device, size_t *free_bytes, size_t *total_bytes, dsv4_err *err) {
    DSV4_CUDA_CHECK(err, cudaSetDevice(device));
    DSV4_CUDA_CHECK(err, cudaMemGetInfo(free_bytes, total_bytes));
    return DSV4_OK;
}

/* synth_hash.h — random weights from a counter-based hash, one definition for the host and the device: the
 * value of element i of a tensor is a pure function of (seed, tensor id, i) — splitmix64 of the three —
 * so a tensor can be generated in any order, in chunks of any size, on the CPU (dsv4_synth_hash_fill) or by
 * a CUDA kernel (backend/cuda/cuda_synth.h), and the bytes are the same. Used for models whose weights are
 * never written to disk (model/synth_ckpt.h; `dsv4 bench --on-device`).
 *
 * Value rules per tensor (dsv4_synth_fill_for_tensor; the magnitudes follow src/model/synth.c so that a forward
 * stays finite and well scaled):
 *   BF16 "*norm.weight": 1; other BF16: a·u with u uniform in [-1, 1) (resolution 2^-23) and a = √3·std,
 *     std 1 for embed.weight, 1/√cols otherwise; F32 (hc_*, compressor ape, attn_sink, gate bias):
 *     mean + a·u (one fmaf), std/mean by name suffix as synth.c;
 *   F8_E4M3 weights: any of the 254 codes but the NaNs 0x7f/0xff, uniformly; I8 (packed FP4): any byte;
 *   F8_E8M0 scales: 127 + e0 + (0..2) for FP8 blocks, 127 + e0 + (0..1) for FP4 blocks, e0 from the weight's
 *     fan-in as synth.c (the residual-branch outputs wo_b and w2 20x smaller);
 *   I64 tid2eid [vocab, k]: row t holds (a_t·j + b_t) mod E for j < k, a_t coprime to E: k distinct experts,
 *     each expert equally likely in every row (routing spread over all experts).
 *
 * The header part below `dsv4_synth_value` is plain C that nvcc compiles as __host__ __device__ code: the
 * only float operations are an exact int->float conversion, one multiply (BF16, __fmul_rn on the device)
 * or one fmaf (F32), all correctly rounded IEEE operations on both sides (the host build compiles with
 * -ffp-contract=off, the device side uses the intrinsics), and the BF16 round-to-nearest-even in integers. */
#ifndef DSV4_MODEL_SYNTH_HASH_H
#define DSV4_MODEL_SYNTH_HASH_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "core/status.h"
#include "dsv4_config.h"
#include "model/safetensors.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __CUDACC__
#define DSV4_SYNTH_HD __host__ __device__
#else
#define DSV4_SYNTH_HD
#endif

typedef enum dsv4_synth_kind {
    DSV4_SYNTH_BF16_ONE = 0,   /* 1.0 */
    DSV4_SYNTH_BF16_UNIFORM,   /* bf16(a·u) */
    DSV4_SYNTH_F32_UNIFORM,    /* fmaf(a, u, mean) */
    DSV4_SYNTH_E4M3_ANY,       /* one of the 254 non-NaN e4m3 codes */
    DSV4_SYNTH_BYTE_ANY,       /* any byte (two packed e2m1 codes) */
    DSV4_SYNTH_E8M0_RANGE,     /* lo + (h mod span) */
    DSV4_SYNTH_I64_EXPERTS     /* tid2eid: span = E experts, lo = k per row */
} dsv4_synth_kind;

/* How one tensor's elements are generated (made on the host, passed by value to the kernel). */
typedef struct dsv4_synth_fill {
    int32_t kind;              /* dsv4_synth_kind */
    int32_t elem_bytes;        /* 1, 2, 4 or 8 */
    uint64_t key;              /* splitmix64(seed, tensor id) */
    float a, mean;             /* uniform kinds: mean ± a */
    int32_t lo, span;          /* E8M0: codes [lo, lo + span); I64: k = lo per row of span experts */
} dsv4_synth_fill;

DSV4_SYNTH_HD static inline uint64_t dsv4_synth_mix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* Output i of the splitmix64 stream whose state starts at key. */
DSV4_SYNTH_HD static inline uint64_t dsv4_synth_hash(uint64_t key, uint64_t i) {
    return dsv4_synth_mix64(key + i * 0x9E3779B97F4A7C15ull);
}

/* Uniform in [-1, 1) with resolution 2^-23 from the top 24 bits of h (exact in float). */
DSV4_SYNTH_HD static inline float dsv4_synth_sym(uint64_t h) {
    return (float)((int32_t)(h >> 40) - (1 << 23)) * 0x1p-23f;
}

DSV4_SYNTH_HD static inline uint32_t dsv4_synth_f32_bits(float x) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
#endif
}

/* Round to nearest even BF16 of a finite float (every value generated here is finite). */
DSV4_SYNTH_HD static inline uint16_t dsv4_synth_bf16(float x) {
    uint32_t u = dsv4_synth_f32_bits(x);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

DSV4_SYNTH_HD static inline uint64_t dsv4_synth_gcd(uint64_t a, uint64_t b) {
    while (b) {
        uint64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* The bits of element i (little-endian: the low elem_bytes bytes are the element). */
DSV4_SYNTH_HD static inline uint64_t dsv4_synth_value(const dsv4_synth_fill *f, uint64_t i) {
    uint64_t h = dsv4_synth_hash(f->key, i);
    switch (f->kind) {
    case DSV4_SYNTH_BF16_ONE:
        return 0x3f80u;
    case DSV4_SYNTH_BF16_UNIFORM: {
#ifdef __CUDA_ARCH__
        float v = __fmul_rn(f->a, dsv4_synth_sym(h));
#else
        float v = f->a * dsv4_synth_sym(h);
#endif
        return dsv4_synth_bf16(v);
    }
    case DSV4_SYNTH_F32_UNIFORM:
        return dsv4_synth_f32_bits(fmaf(f->a, dsv4_synth_sym(h), f->mean));
    case DSV4_SYNTH_E4M3_ANY: {
        uint32_t c = (uint32_t)(h >> 32) % 254u;   /* 0..253 -> 0x00..0x7e, 0x80..0xfe (32-bit: cheap on GPUs) */
        return (uint64_t)(c + (c >= 0x7fu));
    }
    case DSV4_SYNTH_BYTE_ANY:
        return h >> 56;
    case DSV4_SYNTH_E8M0_RANGE:
        return (uint64_t)((uint32_t)f->lo + (uint32_t)(h >> 32) % (uint32_t)f->span);
    case DSV4_SYNTH_I64_EXPERTS: {
        const uint64_t E = (uint64_t)(uint32_t)f->span, k = (uint64_t)(uint32_t)f->lo;
        const uint64_t row = i / k, j = i % k;
        if (E <= 1) return 0;
        const uint64_t hb = dsv4_synth_hash(f->key ^ 0xB7E151628AED2A6Bull, row);
        const uint64_t ha = dsv4_synth_hash(f->key ^ 0x243F6A8885A308D3ull, row);
        uint64_t a = 1 + ha % (E - 1);                 /* 1..E-1; 1 is coprime, so the walk ends */
        while (dsv4_synth_gcd(a, E) != 1) a = a % (E - 1) + 1;
        return (a * j + hb % E) % E;
    }
    default:
        return 0;
    }
}

/* ---- host side (synth_hash.c) ------------------------------------------------------------------------ */

/* Tensor id: FNV-1a of the tensor's name, so a tensor's values depend on its name and the seed only (not on
 * its place in the table, nor on which other tensors exist). */
uint64_t dsv4_synth_tensor_id(const char *name);

/* The magnitude rules shared with model/synth.c: std of a linear weight (1/sqrt(fan_in), 20x smaller for
 * wo_b and w2), std/mean of an F32 tensor by name suffix, and the e8m0 exponent e0 of a weight's block
 * scales (FP8 blocks hold codes up to ~200, FP4 up to ~4: 2^e0 · that ~ √3·std). */
double dsv4_synth_rule_linear_std(const char *name, int64_t fan_in);
void dsv4_synth_rule_f32(const char *name, double *std, double *mean);
int dsv4_synth_rule_scale_e0(const char *scale_name, int64_t fan_in, int fp4);

/* The fill of the tensor `name` [shape] of dtype dt in a model of config cfg with seed `seed` (rules in the
 * header comment). INVALID_ARG for a dtype / shape it has no rule for. */
dsv4_status dsv4_synth_fill_for_tensor(const dsv4_config *cfg, uint64_t seed, const char *name, dsv4_dtype dt,
                                       int ndim, const int64_t *shape, dsv4_synth_fill *f, dsv4_err *err);

/* Writes elements [first, first + n) of the tensor into dst (n · elem_bytes bytes, any alignment). */
void dsv4_synth_hash_fill(const dsv4_synth_fill *f, uint64_t first, uint64_t n, void *dst);

#ifdef __cplusplus
}
#endif
#endif

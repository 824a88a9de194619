/* dsv4.h — the only public header of dsv4: status codes and the error-message type shared by every
 * module. The engine/session API is added here as it lands (see docs/ARCHITECTURE.md). Plain C11. */
#ifndef DSV4_H
#define DSV4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One success convention everywhere: 0 = ok, anything else names the failure class. */
typedef enum dsv4_status {
    DSV4_OK = 0,
    DSV4_ERR_INVALID_ARG,   /* a caller passed something out of contract (bad option, bad request) */
    DSV4_ERR_IO,            /* open/read/mmap/write failed */
    DSV4_ERR_FORMAT,        /* malformed file: safetensors header, JSON, npy, tokenizer.json */
    DSV4_ERR_CONFIG,        /* config.json inconsistent with itself or with the weights */
    DSV4_ERR_NOMEM,         /* host or device allocation failed */
    DSV4_ERR_CAPACITY,      /* KV blocks / request slots exhausted; nothing was changed */
    DSV4_ERR_UNSUPPORTED,   /* valid input this build cannot run (e.g. no CUDA device) */
    DSV4_ERR_CUDA,          /* a CUDA / cuBLAS / NCCL call failed */
    DSV4_ERR_INTERNAL       /* an invariant broke: a bug in dsv4 */
} dsv4_status;

/* Error detail filled by fallible calls (callers may pass NULL when they only want the code). */
typedef struct dsv4_err {
    char msg[512];
} dsv4_err;

const char *dsv4_status_name(dsv4_status st);

#ifdef __cplusplus
}
#endif
#endif /* DSV4_H */

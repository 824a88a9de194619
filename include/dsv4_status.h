/* dsv4_status.h — the status codes and the error-message type of dsv4: the one definition, shared by the
 * public headers (dsv4.h re-exports it) and by every library folder (src/core/status.h includes it and adds
 * the internal helpers: dsv4_err_set, dsv4_err_prefix, DSV4_ASSERT, DSV4_TRY). Owned by src/core
 * (status.c implements dsv4_status_name); it lives in include/ so that the public headers compile with
 * include/ alone on the path (docs/ARCHITECTURE.md, "Layering"). Plain C11. */
#ifndef DSV4_STATUS_H
#define DSV4_STATUS_H

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
#endif /* DSV4_STATUS_H */

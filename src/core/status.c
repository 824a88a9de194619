/* status.c — dsv4_err formatting and the always-on assert (see status.h). */
#include "core/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *dsv4_status_name(dsv4_status st) {
    switch (st) {
    case DSV4_OK: return "ok";
    case DSV4_ERR_INVALID_ARG: return "invalid argument";
    case DSV4_ERR_IO: return "I/O error";
    case DSV4_ERR_FORMAT: return "malformed input";
    case DSV4_ERR_CONFIG: return "inconsistent config";
    case DSV4_ERR_NOMEM: return "out of memory";
    case DSV4_ERR_CAPACITY: return "capacity exhausted";
    case DSV4_ERR_UNSUPPORTED: return "unsupported";
    case DSV4_ERR_CUDA: return "CUDA error";
    case DSV4_ERR_INTERNAL: return "internal error";
    }
    return "unknown status";
}

dsv4_status dsv4_err_set(dsv4_err *err, dsv4_status st, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return st;
}

void dsv4_err_prefix(dsv4_err *err, const char *fmt, ...) {
    if (!err) return;
    char prefix[256], old[sizeof err->msg];
    int keep = (int)sizeof err->msg - 3;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    snprintf(err->msg, sizeof err->msg, "%.*s: %.*s", 250, prefix, keep > 250 ? keep - 250 : 0, old);
}

void dsv4_assert_fail(const char *expr, const char *file, int line) {
    fprintf(stderr, "dsv4: assertion failed: %s (%s:%d)\n", expr, file, line);
    abort();
}

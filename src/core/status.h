/* status.h — error reporting helpers and the always-on assert. Owns nothing global: messages go into a
 * caller-provided dsv4_err. Library code never calls exit(); an invariant failure aborts via DSV4_ASSERT. */
#ifndef DSV4_CORE_STATUS_H
#define DSV4_CORE_STATUS_H

#include "dsv4_status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Formats a message into err (if non-NULL) and returns st, so callers write
 *   return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: expected %s", file, name, what); */
dsv4_status dsv4_err_set(dsv4_err *err, dsv4_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to an existing message (adds context while an error travels up). */
void dsv4_err_prefix(dsv4_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void dsv4_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#define DSV4_ASSERT(e) ((e) ? (void)0 : dsv4_assert_fail(#e, __FILE__, __LINE__))

/* Propagate a non-OK status. */
#define DSV4_TRY(expr) do { dsv4_status st__ = (expr); if (st__ != DSV4_OK) return st__; } while (0)

#ifdef __cplusplus
}
#endif
#endif

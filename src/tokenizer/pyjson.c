/* pyjson.c — Python-json.dumps-compatible serializer (see pyjson.h). Owns nothing. Why not
 * json_dumps(JSON_PRESERVE_ORDER): jansson writes "," / ":" separators, escapes '/' differently on request,
 * and prints reals with %.17g, none of which is byte-equal to Python. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/status.h"
#include "tokenizer/pyjson.h"

#define PUT(s, n) DSV4_TRY(dsv4_tok_buf_append(out, (s), (n)))
#define PUTS(s) PUT((s), strlen(s))

dsv4_status dsv4_pyjson_float_repr(double x, dsv4_tok_buf *out) {
    if (isnan(x)) return dsv4_tok_buf_append(out, "NaN", 3);
    if (isinf(x)) return x > 0 ? dsv4_tok_buf_append(out, "Infinity", 8) : dsv4_tok_buf_append(out, "-Infinity", 9);
    if (signbit(x)) { PUT("-", 1); x = -x; }
    if (x == 0) return dsv4_tok_buf_append(out, "0.0", 3);
    /* shortest digit string that reads back as x (what repr prints) */
    char buf[40];
    int prec;
    for (prec = 1; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*e", prec - 1, x);
        if (strtod(buf, NULL) == x) break;
    }
    char digits[24];
    int nd = 0;
    const char *p = buf;
    for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') digits[nd++] = *p;
    int e10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    int decpt = e10 + 1; /* x = 0.DIGITS * 10^decpt */
    if (decpt > -4 + 0 && decpt <= 16) {
        if (decpt <= 0) {
            PUT("0.", 2);
            for (int i = 0; i < -decpt; i++) PUT("0", 1);
            PUT(digits, (size_t)nd);
        } else if (decpt >= nd) {
            PUT(digits, (size_t)nd);
            for (int i = nd; i < decpt; i++) PUT("0", 1);
            PUT(".0", 2);
        } else {
            PUT(digits, (size_t)decpt);
            PUT(".", 1);
            PUT(digits + decpt, (size_t)(nd - decpt));
        }
        return DSV4_OK;
    }
    PUT(digits, 1);
    if (nd > 1) {
        PUT(".", 1);
        PUT(digits + 1, (size_t)(nd - 1));
    }
    char ex[16];
    int k = snprintf(ex, sizeof ex, "e%c%02d", e10 < 0 ? '-' : '+', e10 < 0 ? -e10 : e10);
    PUT(ex, (size_t)k);
    return DSV4_OK;
}

static dsv4_status dump_string(const char *s, size_t n, dsv4_tok_buf *out) {
    PUT("\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[8];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                snprintf(u, sizeof u, "\\u%04x", c);
                esc = u;
            }
        }
        if (!esc) continue;
        PUT(s + run, i - run);
        PUTS(esc);
        run = i + 1;
    }
    PUT(s + run, n - run);
    PUT("\"", 1);
    return DSV4_OK;
}

dsv4_status dsv4_pyjson_dump(const json_t *v, dsv4_tok_buf *out) {
    char num[32];
    switch (json_typeof(v)) {
    case JSON_NULL: PUT("null", 4); break;
    case JSON_TRUE: PUT("true", 4); break;
    case JSON_FALSE: PUT("false", 5); break;
    case JSON_INTEGER: {
        int k = snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        PUT(num, (size_t)k);
        break;
    }
    case JSON_REAL: DSV4_TRY(dsv4_pyjson_float_repr(json_real_value(v), out)); break;
    case JSON_STRING: DSV4_TRY(dump_string(json_string_value(v), json_string_length(v), out)); break;
    case JSON_ARRAY: {
        PUT("[", 1);
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i) PUT(", ", 2);
            DSV4_TRY(dsv4_pyjson_dump(json_array_get(v, i), out));
        }
        PUT("]", 1);
        break;
    }
    case JSON_OBJECT: {
        PUT("{", 1);
        const char *k;
        size_t klen;
        json_t *x;
        int first = 1;
        json_object_keylen_foreach((json_t *)v, k, klen, x) {
            if (!first) PUT(", ", 2);
            first = 0;
            DSV4_TRY(dump_string(k, klen, out));
            PUT(": ", 2);
            DSV4_TRY(dsv4_pyjson_dump(x, out));
        }
        PUT("}", 1);
        break;
    }
    }
    return DSV4_OK;
}

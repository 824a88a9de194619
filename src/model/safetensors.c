/* safetensors.c — parses safetensors images (see safetensors.h). Owns: the header validation rules and
 * the read-only mmap of one file. Must not: read a byte outside [base, base+size), trust any number from
 * the header before range-checking it, or leave allocations behind on failure. */
#include "model/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dsv4_files.h"
#include "core/status.h"
#include "dsv4_limits.h"

static const char *const dtype_names[DSV4_DTYPE_COUNT] = {"BF16", "F32", "F8_E4M3", "F8_E8M0", "I8", "I64"};
static const size_t dtype_sizes[DSV4_DTYPE_COUNT] = {2, 4, 1, 1, 1, 8};

const char *dsv4_dtype_name(dsv4_dtype dt) {
    return (unsigned)dt < DSV4_DTYPE_COUNT ? dtype_names[dt] : "?";
}

size_t dsv4_dtype_size(dsv4_dtype dt) { return (unsigned)dt < DSV4_DTYPE_COUNT ? dtype_sizes[dt] : 0; }

void dsv4_st_describe(dsv4_dtype dt, int ndim, const int64_t *shape, char *buf, size_t cap) {
    size_t n = 0;
    if (cap == 0) return;
    buf[0] = 0;
    n += (size_t)snprintf(buf + n, cap - n, "%s [", dsv4_dtype_name(dt));
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

/* ---- header parsing ---------------------------------------------------------------------------- */

static int dtype_from_string(const char *s, dsv4_dtype *out) {
    for (int i = 0; i < DSV4_DTYPE_COUNT; i++)
        if (!strcmp(s, dtype_names[i])) { *out = (dsv4_dtype)i; return 1; }
    return 0;
}

/* A JSON integer in [0, 2^62]: larger values cannot describe a real file and keep sums overflow-free. */
static int json_u62(const json_t *v, uint64_t *out) {
    if (!json_is_integer(v)) return 0;
    json_int_t x = json_integer_value(v);
    if (x < 0 || (uint64_t)x > (UINT64_C(1) << 62)) return 0;
    *out = (uint64_t)x;
    return 1;
}

static void free_tensors(dsv4_st_tensor *t, size_t n) {
    if (!t) return;
    for (size_t i = 0; i < n; i++) free(t[i].name);
    free(t);
}

/* Parses one header entry into *t (name already set by the caller). data_len = bytes after the header. */
static dsv4_status parse_entry(const char *label, const char *name, json_t *v, const uint8_t *data,
                               uint64_t data_len, dsv4_st_tensor *t, dsv4_err *err) {
    if (!json_is_object(v))
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: header entry is not an object", label, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape");
    json_t *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd))
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: missing or non-string \"dtype\"", label, name);
    if (!dtype_from_string(json_string_value(jd), &t->dtype))
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: unsupported dtype \"%.32s\"", label, name,
                            json_string_value(jd));
    if (!json_is_array(js) || json_array_size(js) > DSV4_ST_MAX_DIMS)
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: \"shape\" must be an array of <= %d dims",
                            label, name, DSV4_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(js);
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t d;
        if (!json_u62(json_array_get(js, (size_t)i), &d))
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: shape[%d] is not a non-negative integer",
                                label, name, i);
        t->shape[i] = (int64_t)d;
        if (d != 0 && numel > (UINT64_C(1) << 62) / d) overflow = 1;
        else numel *= d;
    }
    if (overflow)
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: shape too large", label, name);
    uint64_t b, e;
    if (!json_is_array(jo) || json_array_size(jo) != 2 || !json_u62(json_array_get(jo, 0), &b) ||
        !json_u62(json_array_get(jo, 1), &e))
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: \"data_offsets\" must be [begin, end]",
                            label, name);
    if (b > e || e > data_len)
        return dsv4_err_set(err, DSV4_ERR_FORMAT,
                            "%s: tensor %s: data_offsets [%llu, %llu] out of range (data section is %llu bytes)",
                            label, name, (unsigned long long)b, (unsigned long long)e,
                            (unsigned long long)data_len);
    uint64_t es = dtype_sizes[t->dtype];
    if (numel > (UINT64_C(1) << 62) / es || numel * es != e - b) {
        char d[160];
        dsv4_st_describe(t->dtype, t->ndim, t->shape, d, sizeof d);
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: %s needs %llu bytes but data_offsets span %llu",
                            label, name, d, (unsigned long long)(numel * es), (unsigned long long)(e - b));
    }
    t->nbytes = e - b;
    t->data = data + b;
    return DSV4_OK;
}

/* The format's layout rule that matters for safety: tensor byte ranges do not overlap (no tensor aliases
 * another's bytes; sorted by begin offset, O(n log n)). Holes between ranges are tolerated: they hide no
 * tensor data and some writers pad (docs/RELIABILITY.md). */
typedef struct { uint64_t b, e; size_t i; } range;

static int range_cmp(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->b != y->b) return x->b < y->b ? -1 : 1;
    if (x->e != y->e) return x->e < y->e ? -1 : 1;
    return 0;
}

static dsv4_status check_layout(const char *label, const dsv4_st_tensor *t, size_t n, const uint8_t *data,
                                dsv4_err *err) {
    range *r = malloc((n ? n : 1) * sizeof *r);
    if (!r) return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", label);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i].nbytes == 0) continue;   /* an empty tensor owns no bytes, so it aliases nothing */
        r[m].b = (uint64_t)(t[i].data - data);
        r[m].e = r[m].b + t[i].nbytes;
        r[m++].i = i;
    }
    n = m;
    qsort(r, n, sizeof *r, range_cmp);
    dsv4_status s = DSV4_OK;
    uint64_t end = 0;
    for (size_t k = 0; k < n && s == DSV4_OK; k++) {
        if (r[k].b < end)
            s = dsv4_err_set(err, DSV4_ERR_FORMAT,
                             "%s: tensor %s: data_offsets [%llu, %llu] overlap tensor %s (the format requires "
                             "contiguous, non-overlapping byte ranges)",
                             label, t[r[k].i].name ? t[r[k].i].name : "?", (unsigned long long)r[k].b,
                             (unsigned long long)r[k].e, t[r[k - 1].i].name ? t[r[k - 1].i].name : "?");
        end = r[k].e > end ? r[k].e : end;
    }
    free(r);
    return s;
}

dsv4_status dsv4_st_file_parse(const uint8_t *buf, size_t size, const char *label, dsv4_st_file *st,
                               dsv4_err *err) {
    memset(st, 0, sizeof *st);
    if (!label) label = "<buffer>";
    if (size < 8)
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: file is %zu bytes, shorter than the 8-byte header length",
                            label, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > size - 8)
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: header length %llu (+ 8) exceeds the file size %zu",
                            label, (unsigned long long)hlen, size);
    if (hlen > DSV4_LIMIT_ST_HEADER_BYTES)
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: header length %llu exceeds the limit of %llu bytes", label,
                            (unsigned long long)hlen, (unsigned long long)DSV4_LIMIT_ST_HEADER_BYTES);
    if (hlen < 2)
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: header length %llu is too small", label,
                            (unsigned long long)hlen);
    json_error_t je;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: header JSON: %s (line %d, column %d)", label, je.text,
                            je.line, je.column);
    if (!json_is_object(root)) {
        json_decref(root);
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: header JSON is not an object", label);
    }
    const uint8_t *data = buf + 8 + hlen;
    uint64_t data_len = (uint64_t)size - 8 - hlen;
    size_t cap = json_object_size(root), n = 0;
    dsv4_st_tensor *tensors = calloc(cap ? cap : 1, sizeof *tensors);
    if (!tensors) {
        json_decref(root);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory for %zu tensor entries", label, cap);
    }
    dsv4_status s = DSV4_OK;
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (!strcmp(key, "__metadata__")) continue;
        if (key[0] == 0) {
            s = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: empty tensor name in header", label);
            break;
        }
        dsv4_st_tensor *t = &tensors[n];
        s = parse_entry(label, key, val, data, data_len, t, err);
        if (s != DSV4_OK) break;
        t->name = strdup(key);
        if (!t->name) {
            s = dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", label);
            break;
        }
        n++;
    }
    json_decref(root);
    if (s == DSV4_OK) s = check_layout(label, tensors, n, data, err);
    if (s != DSV4_OK) {
        free_tensors(tensors, n);
        return s;
    }
    st->path = strdup(label);
    if (!st->path) {
        free_tensors(tensors, n);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", label);
    }
    st->base = buf;
    st->size = size;
    st->header_len = hlen;
    st->tensors = tensors;
    st->n_tensors = n;
    return DSV4_OK;
}

/* ---- files ------------------------------------------------------------------------------------- */

dsv4_status dsv4_st_file_open(const char *path, dsv4_st_file *st, dsv4_err *err) {
    memset(st, 0, sizeof *st);
    int fd;
    uint64_t fsize;
    DSV4_TRY(dsv4_file_open_regular(path, DSV4_LIMIT_SHARD_BYTES, &fd, &fsize, err));
    size_t size = (size_t)fsize;
    if (size < 8) {
        close(fd);
        return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: file is %zu bytes, shorter than the 8-byte header length",
                            path, size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping stays valid after close */
    if (map == MAP_FAILED) return dsv4_err_set(err, DSV4_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
    dsv4_status s = dsv4_st_file_parse(map, size, path, st, err);
    if (s != DSV4_OK) {
        munmap(map, size);
        return s;
    }
    st->mapped = 1;
    return DSV4_OK;
}

void dsv4_st_file_close(dsv4_st_file *st) {
    if (!st) return;
    free_tensors(st->tensors, st->n_tensors);
    free(st->path);
    if (st->mapped && st->base) munmap((void *)st->base, st->size);
    memset(st, 0, sizeof *st);
}

const dsv4_st_tensor *dsv4_st_file_find(const dsv4_st_file *st, const char *name) {
    for (size_t i = 0; i < st->n_tensors; i++)
        if (!strcmp(st->tensors[i].name, name)) return &st->tensors[i];
    return NULL;
}

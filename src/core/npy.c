/* npy.c — .npy float32 writer and reader (see dsv4_npy.h). */
#include "dsv4_npy.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsv4_files.h"
#include "core/status.h"

dsv4_status dsv4_npy_write_f32(const char *path, const float *data, const long *shape, int ndim, dsv4_err *err) {
    char hdr[256];
    int n = snprintf(hdr, sizeof hdr, "{'descr': '<f4', 'fortran_order': False, 'shape': (");
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        n += snprintf(hdr + n, sizeof hdr - (size_t)n, "%ld,%s", shape[i], (i + 1 < ndim) ? " " : "");
        count *= (size_t)shape[i];
    }
    n += snprintf(hdr + n, sizeof hdr - (size_t)n, "), }");
    /* Pad with spaces so that magic(6)+version(2)+len(2)+header is a multiple of 64, ending in '\n'. */
    int total = 10 + n + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot open for writing", path);
    unsigned short hlen = (unsigned short)(n + pad + 1);
    unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(hlen & 0xff), (unsigned char)(hlen >> 8)};
    int ok = fwrite(pre, 1, 10, f) == 10 && fwrite(hdr, 1, (size_t)n, f) == (size_t)n;
    for (int i = 0; ok && i < pad; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fputc('\n', f) != EOF;
    ok = ok && fwrite(data, sizeof(float), count, f) == count;
    if (fclose(f) != 0) ok = 0;
    if (!ok) return dsv4_err_set(err, DSV4_ERR_IO, "%s: write failed", path);
    return DSV4_OK;
}

dsv4_status dsv4_npy_read_f32(const char *path, float **data, long *shape, int max_dims, int *ndim, dsv4_err *err) {
    int fd;
    uint64_t fsize;
    DSV4_TRY(dsv4_file_open_regular(path, UINT64_MAX, &fd, &fsize, err));   /* no FIFO / directory */
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        close(fd);
        return dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot open", path);
    }
    unsigned char pre[10];
    char hdr[4096];
    dsv4_status st = DSV4_OK;
    if (fread(pre, 1, 10, f) != 10 || memcmp(pre, "\x93NUMPY", 6) != 0 || pre[6] != 1) {
        st = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: not a version-1 .npy file", path);
        goto out;
    }
    size_t hlen = (size_t)pre[8] | ((size_t)pre[9] << 8);
    if (hlen >= sizeof hdr || fread(hdr, 1, hlen, f) != hlen) {
        st = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: bad header", path);
        goto out;
    }
    hdr[hlen] = 0;
    if (!strstr(hdr, "'descr': '<f4'") || !strstr(hdr, "'fortran_order': False")) {
        st = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: only little-endian float32 C-order arrays are supported", path);
        goto out;
    }
    const char *p = strstr(hdr, "'shape': (");
    if (!p) { st = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: no shape", path); goto out; }
    p += 10;
    size_t count = 1;
    *ndim = 0;
    while (*p && *p != ')') {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p) { p++; continue; }
        if (*ndim >= max_dims || v < 0) { st = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: bad shape", path); goto out; }
        if (v && count > SIZE_MAX / sizeof(float) / (size_t)v) {
            st = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: shape is too large (element count overflows)", path);
            goto out;
        }
        shape[(*ndim)++] = v;
        count *= (size_t)v;
        p = end;
    }
    /* The data must be in the file: check before allocating what a forged shape asks for. */
    long here = ftell(f);
    if (here < 0 || fseek(f, 0, SEEK_END) != 0) { st = dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot seek", path); goto out; }
    long end_off = ftell(f);
    if (end_off < here || fseek(f, here, SEEK_SET) != 0) { st = dsv4_err_set(err, DSV4_ERR_IO, "%s: cannot seek", path); goto out; }
    if ((size_t)(end_off - here) / sizeof(float) < count) {
        st = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: truncated data (shape needs %zu floats, file holds %ld bytes of data)",
                          path, count, end_off - here);
        goto out;
    }
    *data = malloc(count ? count * sizeof(float) : 1);
    if (!*data) { st = dsv4_err_set(err, DSV4_ERR_NOMEM, "%s: out of memory", path); goto out; }
    if (fread(*data, sizeof(float), count, f) != count) {
        free(*data);
        *data = NULL;
        st = dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: truncated data", path);
    }
out:
    fclose(f);
    return st;
}

/* synth_ckpt.c — random-weight checkpoints built in memory (see synth_ckpt.h). Owns: the layout of the tensor
 * table in one address range (visit order, 256-byte aligned), the reservation or host memory behind it, and
 * the address -> (tensor, element) lookup. Must not: decide the tensor inventory (checkpoint.c's visit) or
 * the values (synth_hash.c). */
#include "model/synth_ckpt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "core/status.h"

#define ALIGN 256

typedef struct table {
    dsv4_st_tensor *v;       /* owned (names too) until handed to the file */
    uint64_t *off;           /* [n] offset of each tensor in the range */
    size_t n, cap;
    uint64_t end;            /* bytes laid out so far */
} table;

static dsv4_status add(void *ctx, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape, int is_mtp,
                       int is_routed) {
    (void)is_mtp;
    (void)is_routed;
    table *T = ctx;
    if (ndim < 1 || ndim > DSV4_ST_MAX_DIMS) return DSV4_ERR_INTERNAL;
    if (T->n == T->cap) {
        size_t nc = T->cap ? 2 * T->cap : 1024;
        dsv4_st_tensor *nv = realloc(T->v, nc * sizeof *nv);
        if (!nv) return DSV4_ERR_NOMEM;
        T->v = nv;
        uint64_t *no = realloc(T->off, nc * sizeof *no);
        if (!no) return DSV4_ERR_NOMEM;
        T->off = no;
        T->cap = nc;
    }
    dsv4_st_tensor *t = &T->v[T->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name))) return DSV4_ERR_NOMEM;
    t->dtype = dt;
    t->ndim = ndim;
    uint64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        numel *= (uint64_t)shape[d];
    }
    t->nbytes = numel * dsv4_dtype_size(dt);
    T->off[T->n] = (T->end + ALIGN - 1) / ALIGN * ALIGN;
    T->end = T->off[T->n] + t->nbytes;
    T->n++;
    return DSV4_OK;
}

static void table_free(table *T) {
    for (size_t i = 0; i < T->n; i++) free(T->v[i].name);
    free(T->v);
    free(T->off);
}

dsv4_status dsv4_synth_checkpoint_create(const dsv4_config *cfg, uint64_t seed, int host_values, dsv4_checkpoint *ck,
                                         dsv4_err *err) {
    memset(ck, 0, sizeof *ck);
    if (cfg->expert_fp4 != 0 && cfg->expert_fp4 != 1)
        return dsv4_err_set(err, DSV4_ERR_INVALID_ARG, "synth: expert_fp4 must be resolved (0 or 1)");
    table T = {0};
    dsv4_status st = dsv4_checkpoint_expected_visit(cfg, add, &T);
    if (st != DSV4_OK) {
        table_free(&T);
        return dsv4_err_set(err, st, "synth: cannot list the tensors of this config (%s)", dsv4_status_name(st));
    }
    /* One range for the whole table. Device only: address space without access or commit charge. */
    size_t size = (size_t)(T.end ? T.end : 1);
    void *base = mmap(NULL, size, host_values ? PROT_READ | PROT_WRITE : PROT_NONE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
        table_free(&T);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "synth: cannot %s %.2f GB of address space: %s",
                            host_values ? "map" : "reserve", (double)size / 1e9, strerror(errno));
    }
    for (size_t i = 0; i < T.n; i++) {
        T.v[i].data = (const uint8_t *)base + T.off[i];
        if (!host_values) continue;
        dsv4_synth_fill f;
        st = dsv4_synth_fill_for_tensor(cfg, seed, T.v[i].name, T.v[i].dtype, T.v[i].ndim, T.v[i].shape, &f, err);
        if (st != DSV4_OK) {
            munmap(base, size);
            table_free(&T);
            return st;
        }
        dsv4_synth_hash_fill(&f, 0, T.v[i].nbytes / (uint64_t)f.elem_bytes, (uint8_t *)base + T.off[i]);
    }
    if (host_values && mprotect(base, size, PROT_READ) != 0) {   /* as a mapped checkpoint: read-only */
        munmap(base, size);
        table_free(&T);
        return dsv4_err_set(err, DSV4_ERR_IO, "synth: mprotect: %s", strerror(errno));
    }
    free(T.off);
    char label[128];
    snprintf(label, sizeof label, "synthetic (seed %llu, %s)", (unsigned long long)seed,
             host_values ? "host" : "device-only");
    ck->cfg = *cfg;
    ck->dir = strdup(label);
    ck->files = calloc(1, sizeof *ck->files);
    char *path = strdup(label);
    if (!ck->dir || !ck->files || !path) {
        free(path);
        free(ck->dir);
        free(ck->files);
        munmap(base, size);
        for (size_t i = 0; i < T.n; i++) free(T.v[i].name);
        free(T.v);
        memset(ck, 0, sizeof *ck);
        return dsv4_err_set(err, DSV4_ERR_NOMEM, "synth: out of memory");
    }
    ck->n_files = 1;
    /* the file owns the range (mapped = 1: closing it unmaps) and the table, in layout (= address) order */
    ck->files[0] = (dsv4_st_file){path, base, size, 1, 0, T.v, T.n};
    return dsv4_checkpoint_finish_in_memory(ck, err);
}

dsv4_status dsv4_synth_checkpoint_locate(const dsv4_checkpoint *ck, uint64_t seed, const void *p, size_t bytes,
                                         dsv4_synth_fill *fill, uint64_t *first_elem, dsv4_err *err) {
    if (ck->n_files != 1)
        return dsv4_err_set(err, DSV4_ERR_INTERNAL, "synth: %s is not an in-memory synthetic checkpoint", ck->dir);
    const dsv4_st_file *sf = &ck->files[0];
    const uint8_t *q = p;
    /* tensors are in address order: the last one starting at or before p */
    size_t lo = 0, hi = sf->n_tensors;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (sf->tensors[mid].data <= q) lo = mid;
        else hi = mid;
    }
    const dsv4_st_tensor *t = sf->n_tensors ? &sf->tensors[lo] : NULL;
    if (!t || q < t->data || (uint64_t)(q - t->data) + bytes > t->nbytes)
        return dsv4_err_set(err, DSV4_ERR_INTERNAL, "synth: %zu bytes at offset %lld of %s are not inside one tensor",
                            bytes, (long long)(q - sf->base), ck->dir);
    DSV4_TRY(dsv4_synth_fill_for_tensor(&ck->cfg, seed, t->name, t->dtype, t->ndim, t->shape, fill, err));
    uint64_t at = (uint64_t)(q - t->data);
    if (at % (uint64_t)fill->elem_bytes || bytes % (size_t)fill->elem_bytes)
        return dsv4_err_set(err, DSV4_ERR_INTERNAL, "synth: tensor %s: range [%llu, +%zu) not on element boundaries",
                            t->name, (unsigned long long)at, bytes);
    *first_elem = at / (uint64_t)fill->elem_bytes;
    return DSV4_OK;
}

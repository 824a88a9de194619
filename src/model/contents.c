/* contents.c — value checks of checkpoint tensors at load (see contents.h). Owns the rules for what a
 * tensor may hold; reads the mapped bytes with memcpy (tensors need not be aligned in a file). Must not
 * modify or copy tensors, or scan the large weight matrices (their cost is the whole checkpoint). */
#include "model/contents.h"

#include <math.h>
#include <string.h>

#include "core/numfmt.h"
#include "core/status.h"
#include "model/checkpoint.h"

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

static const char *file_of(const dsv4_checkpoint *ck, size_t i) { return ck->files[ck->index[i].file].path; }

/* tid2eid [vocab, k] I64: every id names a routed expert. */
static dsv4_status check_hash_table(const dsv4_checkpoint *ck, size_t i, dsv4_err *err) {
    const dsv4_st_tensor *t = ck->index[i].t;
    const int64_t E = ck->cfg.n_routed_experts;
    const uint64_t n = t->nbytes / 8;
    for (uint64_t j = 0; j < n; j++) {
        int64_t v;
        memcpy(&v, t->data + j * 8, 8);
        if (v < 0 || v >= E) {
            int64_t k = t->ndim == 2 && t->shape[1] > 0 ? t->shape[1] : 1;
            return dsv4_err_set(err, DSV4_ERR_FORMAT,
                                "%s: tensor %s: token %lld, slot %lld holds expert id %lld, outside [0, %lld) "
                                "(n_routed_experts)",
                                file_of(ck, i), t->name, (long long)(j / (uint64_t)k), (long long)(j % (uint64_t)k),
                                (long long)v, (long long)E);
        }
    }
    return DSV4_OK;
}

/* e8m0 scales: 0xFF is NaN; every other code is a finite power of two. */
static dsv4_status check_e8m0(const dsv4_checkpoint *ck, size_t i, dsv4_err *err) {
    const dsv4_st_tensor *t = ck->index[i].t;
    const uint8_t *p = memchr(t->data, 0xFF, (size_t)t->nbytes);
    if (p)
        return dsv4_err_set(err, DSV4_ERR_FORMAT,
                            "%s: tensor %s: e8m0 scale code 0xFF (NaN) at element %llu; scales must be finite powers "
                            "of two",
                            file_of(ck, i), t->name, (unsigned long long)(p - t->data));
    return DSV4_OK;
}

static dsv4_status check_f32(const dsv4_checkpoint *ck, size_t i, dsv4_err *err) {
    const dsv4_st_tensor *t = ck->index[i].t;
    const uint64_t n = t->nbytes / 4;
    for (uint64_t j = 0; j < n; j++) {
        uint32_t b;
        memcpy(&b, t->data + j * 4, 4);
        if ((b & 0x7F800000u) == 0x7F800000u)
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: element %llu is %s", file_of(ck, i), t->name,
                                (unsigned long long)j, (b & 0x007FFFFFu) ? "NaN" : "infinite");
    }
    return DSV4_OK;
}

static dsv4_status check_bf16(const dsv4_checkpoint *ck, size_t i, dsv4_err *err) {
    const dsv4_st_tensor *t = ck->index[i].t;
    const uint64_t n = t->nbytes / 2;
    for (uint64_t j = 0; j < n; j++) {
        uint16_t b;
        memcpy(&b, t->data + j * 2, 2);
        if ((b & 0x7F80u) == 0x7F80u)
            return dsv4_err_set(err, DSV4_ERR_FORMAT, "%s: tensor %s: element %llu is %s", file_of(ck, i), t->name,
                                (unsigned long long)j, (b & 0x007Fu) ? "NaN" : "infinite");
    }
    return DSV4_OK;
}

dsv4_status dsv4_checkpoint_validate_contents(const dsv4_checkpoint *ck, dsv4_err *err) {
    for (size_t i = 0; i < ck->n_index; i++) {
        const dsv4_st_tensor *t = ck->index[i].t;
        if (t->dtype == DSV4_DTYPE_I64 && ends_with(t->name, ".tid2eid")) DSV4_TRY(check_hash_table(ck, i, err));
        else if (t->dtype == DSV4_DTYPE_F8_E8M0) DSV4_TRY(check_e8m0(ck, i, err));
        else if (t->dtype == DSV4_DTYPE_F32) DSV4_TRY(check_f32(ck, i, err));
        else if (t->dtype == DSV4_DTYPE_BF16 && t->ndim == 1) DSV4_TRY(check_bf16(ck, i, err));
    }
    return DSV4_OK;
}

/* fuzz_safetensors.c — libFuzzer target for the safetensors parser (model/safetensors.c): the input is a
 * whole file image. Parsing must never read outside the buffer (ASan) or hit UB (UBSan); on success every
 * tensor's data range must lie inside the image. Build: make fuzz; run:
 *   build/fuzz/fuzz_safetensors -max_total_time=60 tests/fuzz/corpus */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* A private copy sized exactly, so any overread hits the ASan redzone. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    dsv4_st_file st;
    dsv4_err err;
    if (dsv4_st_file_parse(buf, size, "fuzz", &st, &err) == DSV4_OK) {
        for (size_t i = 0; i < st.n_tensors; i++) {
            const dsv4_st_tensor *t = &st.tensors[i];
            if (t->data < buf || t->data + t->nbytes > buf + size) abort();
            if (dsv4_st_file_find(&st, t->name) == NULL) abort();
            volatile uint8_t sink = 0;
            if (t->nbytes) sink ^= t->data[0] ^ t->data[t->nbytes - 1];
            (void)sink;
        }
        dsv4_st_file_close(&st);
    } else if (st.tensors != NULL || st.n_tensors != 0) {
        abort(); /* a failed parse must leave st zeroed */
    }
    free(buf);
    return 0;
}

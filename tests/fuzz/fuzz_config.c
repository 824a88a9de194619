/* fuzz_config.c — libFuzzer target for the two file parsers that read whole files by path:
 * dsv4_config_load (model/config.c, config.json) and dsv4_npy_read_f32 (core/npy.c, .npy). Each input is
 * written to one temp file and given to both. Checked: an error has a message; an accepted config keeps
 * the documented limits (layers <= DSV4_MAX_LAYERS, every layer kind computable); an accepted .npy has
 * ndim <= max_dims, non-negative dims and exactly prod(shape) floats, all readable. Build: make fuzz; run:
 *   build/fuzz/fuzz_config -max_total_time=60 DIR tests/fuzz/corpus_config */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsv4_npy.h"
#include "dsv4_config.h"

static char path[64];

static void remove_temp(void) { unlink(path); }

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    snprintf(path, sizeof path, "/tmp/dsv4_fuzz_config_%d", (int)getpid());
    atexit(remove_temp);
    return 0;
}

static void check_config(void) {
    dsv4_config c;
    dsv4_err err = {{0}};
    if (dsv4_config_load(path, &c, &err) != DSV4_OK) {
        if (!err.msg[0]) abort();
        return;
    }
    if (c.n_layers < 1 || c.n_layers > DSV4_MAX_LAYERS || c.n_mtp_layers < 0 || c.n_mtp_layers > 1) abort();
    if (c.vocab_size < 1 || c.dim < 128 || c.head_dim <= c.rope_head_dim || c.n_heads % c.o_groups) abort();
    if (c.n_activated_experts > c.n_routed_experts || c.n_hash_layers > c.n_layers) abort();
    for (int i = 0; i <= c.n_layers; i++) {
        dsv4_layer_kind k = dsv4_config_layer_kind(&c, i);
        if (k != DSV4_LAYER_SWA && k != DSV4_LAYER_CSA && k != DSV4_LAYER_HCA) abort();
    }
}

static void check_npy(void) {
    enum { MAX_DIMS = 4 };
    float *v = NULL;
    long shape[MAX_DIMS + 1] = {0, 0, 0, 0, 0x5a5a}; /* the last slot must stay untouched */
    int ndim = -1;
    dsv4_err err = {{0}};
    if (dsv4_npy_read_f32(path, &v, shape, MAX_DIMS, &ndim, &err) != DSV4_OK) {
        if (!err.msg[0]) abort();
        return;
    }
    if (ndim < 0 || ndim > MAX_DIMS || shape[MAX_DIMS] != 0x5a5a || !v) abort();
    size_t count = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) abort();
        if (shape[i] && count > SIZE_MAX / sizeof(float) / (size_t)shape[i]) abort(); /* overflowing product */
        count *= (size_t)shape[i];
    }
    volatile float sink = 0;
    for (size_t i = 0; i < count; i++) sink += v[i]; /* every element the shape promises is there */
    (void)sink;
    free(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    if (fclose(f)) abort();
    check_config();
    check_npy();
    return 0;
}

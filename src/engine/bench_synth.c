/* bench_synth.c — sizing the synthetic models of `dsv4 bench` (bench.h, "synthetic models generated on the
 * device"): what the written checkpoint would take on disk, the disk's free space, the device's free memory,
 * and the largest number of routed experts whose device-generated model fits a memory budget together with
 * the engine's workspace and KV (from the CUDA forward's own measuring passes, dsv4_forward_cuda_plan_bytes,
 * which need a CUDA build but no device). */
#include <sys/statvfs.h>

#include "core/status.h"
#include "dsv4_bench.h"
#include "engine/forward_cuda.h"
#include "engine/model.h"
#include "model/checkpoint.h"
#include "dsv4_synth.h"

#ifdef DSV4_HAVE_CUDA
#include "backend/cuda/cuda_synth.h"
#endif

double dsv4_bench_synth_disk_bytes(const dsv4_config *cfg) {
    dsv4_checkpoint_stats st;
    dsv4_checkpoint_stats_compute(cfg, &st);
    return (double)st.bytes_total;
}

double dsv4_bench_fs_free_bytes(const char *path) {
    struct statvfs v;
    if (statvfs(path, &v) != 0) return -1.0;
    return (double)v.f_bavail * (double)v.f_frsize;
}

dsv4_status dsv4_bench_cuda_free_bytes(int device, double *free_bytes, dsv4_err *err) {
    *free_bytes = 0;
#ifdef DSV4_HAVE_CUDA
    size_t fr = 0, total = 0;
    if (dsv4_cuda_device_count() <= 0) return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "cuda: no CUDA device visible");
    DSV4_TRY(dsv4_cuda_mem_info(device, &fr, &total, err));
    *free_bytes = (double)fr;
    return DSV4_OK;
#else
    (void)device;
    return dsv4_err_set(err, DSV4_ERR_UNSUPPORTED, "backend cuda not compiled in (build with nvcc present)");
#endif
}

dsv4_status dsv4_bench_synth_device_bytes(const char *preset, int n_layers, int n_experts, int max_seqs,
                                          long max_tokens, double *bytes, dsv4_err *err) {
    *bytes = 0;
    dsv4_config cfg;
    DSV4_TRY(dsv4_synth_config_preset(preset, n_layers, n_experts, &cfg, err));
    dsv4_model *m = NULL;
    DSV4_TRY(dsv4_model_create_synth(&cfg, 0, 1, &m, err));   /* device only: a table, no host bytes */
    dsv4_forward_cuda_options o = {0};
    o.max_seqs = max_seqs;
    o.max_tokens = max_tokens;
    size_t w = 0, rest = 0;
    dsv4_status st = dsv4_forward_cuda_plan_bytes(m, &o, &w, &rest, err);
    dsv4_model_free(m);
    *bytes = (double)w + (double)rest;
    return st;
}

dsv4_status dsv4_bench_synth_fit_experts(const char *preset, int n_layers, int max_seqs, long max_tokens,
                                         double budget, int e_cap, int *experts, dsv4_err *err) {
    *experts = 0;
    dsv4_config cfg;
    DSV4_TRY(dsv4_synth_config_preset(preset, n_layers, 0, &cfg, err));
    int lo = cfg.n_activated_experts, hi = e_cap;
    double b;
    DSV4_TRY(dsv4_bench_synth_device_bytes(preset, n_layers, lo, max_seqs, max_tokens, &b, err));
    if (b > budget)
        return dsv4_err_set(err, DSV4_ERR_CAPACITY, "synthetic %s with %d layers: even %d experts need %.1f GB, more "
                            "than the %.1f GB budget", preset, cfg.n_layers, lo, b / 1e9, budget / 1e9);
    /* bytes grow with E: binary search for the last E that fits, lo fits */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        DSV4_TRY(dsv4_bench_synth_device_bytes(preset, n_layers, mid, max_seqs, max_tokens, &b, err));
        if (b <= budget) lo = mid;
        else hi = mid - 1;
    }
    *experts = lo;
    return DSV4_OK;
}

#!/usr/bin/env bash
# run_perf_next.sh — on the GPU machine, one device call (carry [".devlibs"]; make it here first with
# `bash tools/device/make_devlibs.sh`): checks and measures the cuBLASLt block-scaled FP8 linear (issue 11
# item 2) and prints the per-op profile of one prefill and one decode step (issue 10 item 6).
#   1. build: make -j16 dsv4, test_cuda_linear, bench_cuda_linear (release)
#   2. test_cuda_linear (all cases: own kernels + the cuBLASLt FP8 path, plan cache, graph replay)
#   3. compute-sanitizer memcheck of test_cuda_linear, cuBLASLt cases only (DSV4_TEST_ONLY_LT=1, quick)
#   4. bench_cuda_linear, prefill table only: own mma.sync FP8 kernel vs cuBLASLt FP8 (per call / prepared
#      scales) vs cuBLASLt BF16, M = 32..4096 at every Flash FP8 shape
#   5. dsv4 bench --profile on the 8-layer flash-shapes synthetic: prefill of 4096 tokens and a decode step of
#      batch 8 at context 1024, default paths
#   6. tests/model/test_cuda_forward with DSV4_CUDA_FP8_GEMM=cublaslt (end to end vs the CPU with the cuBLASLt
#      FP8 path at M > 16, and the profiler-attached = graph test)
#   7. the profile again with DSV4_CUDA_MOE=grouped DSV4_CUDA_FP8_GEMM=cublaslt (the candidate defaults) on
#      the same checkpoint
# Every step has a timeout inside one overall budget (~580 s) so the logs come back. Logs under $OUT:
# build.log test.log memcheck.log bench.log profile.log forward_lt.log profile_next.log (+ gpu.txt); summary
# printed last.
#   usage: bash tools/device/run_perf_next.sh
# Typical call: run(command="bash tools/device/run_perf_next.sh", carry=[".devlibs"], timeout_s=600)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dsv4_out}
mkdir -p "$OUT"
t0=$(date +%s)
BUDGET=${BUDGET:-580}
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
# cap N: N seconds or what is left of the budget (minus 10 s for the summary), at least 5
cap() { local left=$(( BUDGET - 10 - ($(date +%s) - t0) )); [ "$1" -lt "$left" ] && left=$1; [ "$left" -lt 5 ] && left=5; echo "$left"; }
. tools/device/devlibs_env.sh
B=build/release
summary=""

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv,noheader 2>&1 \
    | tee "$OUT/gpu.txt"

step "build"
if ! timeout "$(cap 240)" make -j16 $B/dsv4 $B/tests/unit/test_cuda_linear $B/bench/bench_cuda_linear $B/tests/model/test_cuda_forward \
        >"$OUT/build.log" 2>&1; then
    echo "build FAILED:"; grep -E "error" "$OUT/build.log" | head -20; exit 1
fi
cuobjdump --dump-resource-usage $B/src/backend/cuda/linear_lt.cu.o 2>/dev/null | grep -E "Function|REG" >>"$OUT/build.log"

step "test_cuda_linear"
timeout "$(cap 150)" $B/tests/unit/test_cuda_linear >"$OUT/test.log" 2>&1
echo "test_cuda_linear rc=$?"
grep -E "^(FAIL|device|worst|  CHECK)|lt |note:|plan cache|[0-9]+ passed" "$OUT/test.log" | head -90
summary="$summary\ntest_cuda_linear: $(tail -1 "$OUT/test.log")"

step "compute-sanitizer memcheck (cuBLASLt cases, quick)"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
DSV4_TEST_ONLY_LT=1 DSV4_TEST_QUICK=1 timeout "$(cap 120)" "$CS" --tool memcheck --error-exitcode 9 \
    $B/tests/unit/test_cuda_linear >"$OUT/memcheck.log" 2>&1
echo "memcheck rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) / $(tail -1 "$OUT/memcheck.log")"
summary="$summary\nmemcheck (lt cases): $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) / $(tail -1 "$OUT/memcheck.log")"

step "bench_cuda_linear (prefill table)"
DSV4_BENCH_PREFILL_ONLY=1 timeout "$(cap 120)" $B/bench/bench_cuda_linear >"$OUT/bench.log" 2>&1
echo "bench rc=$?"
grep -v "^csv," "$OUT/bench.log"

SYN=/tmp/dsv4_perf_synth
rm -rf "$SYN"; mkdir -p "$SYN"
step "dsv4 bench --profile (flash-shapes, 8 layers, 64 experts; default paths)"
TMPDIR=/tmp timeout "$(cap 200)" $B/dsv4 bench --synthetic flash-shapes --synth-dir "$SYN" --keep --no-prefill \
    --no-decode --profile --prompt-lens 4096 --batches 8 --contexts 1024 >"$OUT/profile.log" 2>&1
echo "profile rc=$?"
grep -E "^bench:" "$OUT/profile.log" | tail -5
sed -n '/^PROFILE/,/^(eager/p' "$OUT/profile.log"
summary="$summary\nprofile (default): $(grep -c '^PROFILE' "$OUT/profile.log") tables"

step "test_cuda_forward with DSV4_CUDA_FP8_GEMM=cublaslt (GPU vs CPU end to end; profiled = graph)"
DSV4_CUDA_FP8_GEMM=cublaslt timeout "$(cap 150)" $B/tests/model/test_cuda_forward >"$OUT/forward_lt.log" 2>&1
echo "test_cuda_forward (cublaslt) rc=$?"
grep -E "CHECK|FAIL|profiled vs graph|graph vs eager|rel|SKIP|passed" "$OUT/forward_lt.log" | head -40
summary="$summary\ntest_cuda_forward (cublaslt): $(tail -1 "$OUT/forward_lt.log")"

step "dsv4 bench --profile again with DSV4_CUDA_MOE=grouped DSV4_CUDA_FP8_GEMM=cublaslt"
if [ -f "$SYN/config.json" ]; then
    DSV4_CUDA_MOE=grouped DSV4_CUDA_FP8_GEMM=cublaslt timeout "$(cap 150)" $B/dsv4 bench --model "$SYN" --no-prefill \
        --no-decode --profile --prompt-lens 4096 --batches 8 --contexts 1024 >"$OUT/profile_next.log" 2>&1
    echo "profile (grouped + cublaslt) rc=$?"
    sed -n '/^PROFILE/,/^(eager/p' "$OUT/profile_next.log"
    summary="$summary\nprofile (grouped+cublaslt): $(grep -c '^PROFILE' "$OUT/profile_next.log") tables"
fi
rm -rf "$SYN"
step "done"
echo -e "SUMMARY$summary"

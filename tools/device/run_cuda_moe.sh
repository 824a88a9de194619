#!/usr/bin/env bash
# run_cuda_moe.sh — on the GPU machine (device `run` tool, carry [".devlibs"]): verifies the grouped routed
# experts (src/backend/cuda/cuda_moe.h, DSV4_CUDA_MOE=grouped) and measures them against the scalar path.
#   1. tests/unit/test_cuda_moe          op test vs the CPU expert FFN (docs/NUMERICS.md "CUDA grouped MoE")
#   2. compute-sanitizer memcheck of the op test (DSV4_TEST_QUICK=1) and of a tiny `dsv4 logits` run with
#      DSV4_CUDA_MOE=grouped (prefill + graph-replayed decode)
#   3. tests/model/test_cuda_forward with DSV4_CUDA_MOE=grouped (GPU vs CPU end to end, graph = eager,
#      batch = alone) — the condition for making grouped the default
#   4. bench/bench_cuda_moe [E]          scalar vs grouped, decode rows 1/8/32 and prefill 512/4096
# Logs go to $OUT (test.log, memcheck_*.log, forward_grouped.log, bench.log); a summary is printed last.
#   usage: bash tools/device/run_cuda_moe.sh [E]      (E: routed experts in the bench, default 64)
# Typical call: run(command="bash tools/device/run_cuda_moe.sh", carry=[".devlibs"], timeout_s=570)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dsv4_out}
mkdir -p "$OUT"
E=${1:-64}
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
. tools/device/devlibs_env.sh
B=build/release
summary=""

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"

step "build"
if ! make -j16 $B/dsv4 $B/tests/unit/test_cuda_moe $B/tests/model/test_cuda_forward $B/bench/bench_cuda_moe \
        >"$OUT/build.log" 2>&1; then
    echo "build FAILED:"; grep -E "error" "$OUT/build.log" | head -20; exit 1
fi
cuobjdump --dump-resource-usage $B/src/backend/cuda/kernels/moe_grouped.cu.o 2>/dev/null | grep -E "Function|REG" \
    > "$OUT/resources.txt" || true

step "test_cuda_moe"
timeout 300 $B/tests/unit/test_cuda_moe >"$OUT/test.log" 2>&1
echo "test_cuda_moe rc=$?"
grep -vE "^ok " "$OUT/test.log" | head -80
summary="$summary\ntest_cuda_moe: $(tail -1 "$OUT/test.log")"

step "compute-sanitizer memcheck"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
DSV4_TEST_QUICK=1 timeout 400 "$CS" --tool memcheck --error-exitcode 9 $B/tests/unit/test_cuda_moe \
    >"$OUT/memcheck_test.log" 2>&1
echo "memcheck test_cuda_moe rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_test.log" | tail -1)"
summary="$summary\nmemcheck test_cuda_moe: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_test.log" | tail -1)"
for m in tiny-flash tiny-pro; do
    ids=$(seq 3 7 300 | head -40 | paste -sd, -)   # 40 tokens: prefill 33 (eager), 7 decode steps (graph)
    DSV4_CUDA_MOE=grouped timeout 240 "$CS" --tool memcheck --leak-check full --error-exitcode 9 \
        $B/dsv4 logits --model tests/data/$m --tokens "$ids" --prefill 33 --out /tmp/$m.npy --backend cuda \
        >"$OUT/memcheck_$m.log" 2>&1
    echo "memcheck grouped $m rc=$?: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$m.log" | tail -1)"
    summary="$summary\nmemcheck grouped $m: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$m.log" | tail -1)"
done

step "test_cuda_forward with DSV4_CUDA_MOE=grouped"
DSV4_CUDA_MOE=grouped timeout 300 $B/tests/model/test_cuda_forward >"$OUT/forward_grouped.log" 2>&1
echo "test_cuda_forward (grouped) rc=$?"
grep -v "^ok " "$OUT/forward_grouped.log" | head -60
summary="$summary\ntest_cuda_forward grouped: $(tail -1 "$OUT/forward_grouped.log")"

step "bench_cuda_moe $E"
timeout 300 $B/bench/bench_cuda_moe "$E" >"$OUT/bench.log" 2>&1
echo "bench rc=$?"
grep -v "^csv," "$OUT/bench.log"
step "done"
echo -e "SUMMARY$summary"

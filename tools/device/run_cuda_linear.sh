#!/usr/bin/env bash
# run_cuda_linear.sh — on the GPU machine (through the device `run` tool, carry [".devlibs"]): builds dsv4,
# runs tests/unit/test_cuda_linear and bench/bench_cuda_linear, and copies the logs to $OUT.
#   usage: bash tools/device/run_cuda_linear.sh [--quick]     (--quick: fewer M values and bench repeats)
# Build: `make -j16 all`; if that fails (another module's work in progress), falls back to building only the
# two binaries from the sources they need, so this kernel family can still be checked.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dsv4_out}
mkdir -p "$OUT"
QUICK=${1:-}
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
. tools/device/devlibs_env.sh
step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/gpu.txt"
nvcc --version | tail -1

step "build (make -j16 all)"
BIN=build/release
if make -j16 all >"$OUT/build.log" 2>&1; then
    echo "make all: ok"
else
    echo "make all FAILED; last lines:"; tail -15 "$OUT/build.log"
    step "fallback: direct build of the CUDA linear test and bench"
    BIN=build/direct
    mkdir -p $BIN/obj $BIN/tests/unit $BIN/bench
    CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")
    CF="-std=c11 -D_GNU_SOURCE -pthread -ffp-contract=off -O2 -Iinclude -Isrc -Itests/common -DDSV4_HAVE_CUDA=1"
    objs=""
    for f in src/core/numfmt.c src/core/status.c src/core/threadpool.c src/backend/cpu/linear.c src/backend/cpu/quant.c tests/common/test_util.c; do
        o=$BIN/obj/$(basename "$f" .c).o; cc $CF -c "$f" -o "$o" || exit 1; objs="$objs $o"
    done
    for f in src/backend/cuda/*.cu; do
        o=$BIN/obj/$(basename "$f" .cu).cu.o
        nvcc -std=c++17 -O3 -Iinclude -Isrc -lineinfo -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -c "$f" -o "$o" || exit 1
        objs="$objs $o"
    done
    LL="-L$CUDA_HOME/lib64 -lcublasLt -lcublas -lculibos -lcudart_static -ldl -lrt -lpthread -lstdc++ -lm"
    cc $CF tests/unit/test_cuda_linear.c $objs $LL -o $BIN/tests/unit/test_cuda_linear || exit 1
    cc $CF bench/bench_cuda_linear.c $objs $LL -o $BIN/bench/bench_cuda_linear || exit 1
fi
cuobjdump --dump-resource-usage $BIN/libdsv4.a 2>/dev/null | grep -E "Function|REG" | head -20 > "$OUT/resources.txt" || true

step "test_cuda_linear"
if [ "$QUICK" = "--quick" ]; then export DSV4_TEST_QUICK=1; fi
timeout 300 $BIN/tests/unit/test_cuda_linear > "$OUT/test.log" 2>&1
echo "test rc=$?"
grep -E "^(ok|FAIL|device|worst|  CHECK|[0-9]+ passed)" "$OUT/test.log" | head -60

step "bench_cuda_linear"
timeout 240 $BIN/bench/bench_cuda_linear $QUICK > "$OUT/bench.log" 2>&1
echo "bench rc=$?"
grep -v '^csv,' "$OUT/bench.log"
step "done"

#!/usr/bin/env bash
# run_cuda_ops.sh — on the GPU machine (through the device `run` tool, carry [".devlibs"]): builds dsv4 and
# runs tests/unit/test_cuda_ops (every non-GEMM CUDA op against the CPU reference, then a few timings),
# copying the logs to $OUT.
# Build: `make -j16` of the test; if that fails (another module's work in progress), falls back to building
# the test directly from the sources it needs.
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dsv4_out}
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
. tools/device/devlibs_env.sh
step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,clocks.mem --format=csv 2>&1 | tee "$OUT/gpu.txt"
nvcc --version | tail -1

step "build"
BIN=build/release/tests/unit/test_cuda_ops
if make -j16 "$BIN" >"$OUT/build.log" 2>&1; then
    echo "make: ok"
else
    echo "make FAILED; last lines:"; tail -15 "$OUT/build.log"
    step "fallback: direct build"
    D=build/direct_ops; mkdir -p $D
    CUDA_HOME=$(dirname "$(dirname "$(command -v nvcc)")")
    CF="-std=c11 -D_GNU_SOURCE -pthread -ffp-contract=off -O2 -Iinclude -Isrc -Itests/common -DDSV4_HAVE_CUDA=1"
    objs=""
    for f in src/core/numfmt.c src/core/status.c src/backend/cpu/quant.c src/backend/cpu/norm_rope.c \
             src/backend/cpu/hc.c src/backend/cpu/attention.c src/backend/cpu/compressor.c \
             src/backend/cpu/indexer.c src/backend/cpu/moe.c tests/common/test_util.c; do
        o=$D/cpu_$(basename "$f" .c).o; cc $CF -c "$f" -o "$o" || exit 1; objs="$objs $o"
    done
    for f in src/backend/cuda/cuda_ctx.cu src/backend/cuda/kernels/*.cu; do
        o=$D/cu_$(basename "$f" .cu).o
        nvcc -std=c++17 -O3 -Iinclude -Isrc -lineinfo -gencode=arch=compute_90a,code=sm_90a --expt-relaxed-constexpr -c "$f" -o "$o" || exit 1
        objs="$objs $o"
    done
    LL="-L$CUDA_HOME/lib64 -lcublasLt -lcublas -lculibos -lcudart_static -ldl -lrt -lpthread -lstdc++ -lm"
    BIN=$D/test_cuda_ops
    cc $CF tests/unit/test_cuda_ops.c $objs $LL -o $BIN || exit 1
fi
cuobjdump --dump-resource-usage build/release/src/backend/cuda/kernels/*.o 2>/dev/null | grep -E "Function|REG" > "$OUT/resources.txt" || true

step "test_cuda_ops"
timeout 420 $BIN > "$OUT/test.log" 2>&1
echo "test rc=$?"
grep -vE "^ok " "$OUT/test.log" | head -120
grep -E "^ok " "$OUT/test.log"
step "done"

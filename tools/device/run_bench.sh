#!/usr/bin/env bash
# run_bench.sh — on the GPU machine (device `run` tool, carry [".devlibs"]): builds the release dsv4, runs a
# seconds-long `dsv4 bench --backend cuda` smoke on tests/data/tiny-flash, then the Flash-shapes benchmark
# (`dsv4 bench --synthetic flash-shapes`, random-weight checkpoint written to /tmp and removed afterwards)
# with any extra arguments passed through. Logs and the CSV go to $OUT; the table is printed last.
#   usage: bash tools/device/run_bench.sh [dsv4 bench options...]
# Typical call: run(command="bash tools/device/run_bench.sh", carry=[".devlibs"], timeout_s=590)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dsv4_out}
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
. tools/device/devlibs_env.sh
B=build/release

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.max.sm,temperature.gpu \
    --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"
df -h /tmp | tail -1 | tee -a "$OUT/gpu.txt"
nproc | tee -a "$OUT/gpu.txt"

step "build (make -j16 $B/dsv4)"
if ! make -j16 $B/dsv4 >"$OUT/build.log" 2>&1; then
    echo "build FAILED:"; grep -E "error" "$OUT/build.log" | head -20; exit 1
fi

step "smoke: tiny-flash, cuda"
timeout 120 $B/dsv4 bench --model tests/data/tiny-flash --backend cuda --prompt-lens 64,256 --batches 1,8 \
    --contexts 64,512 --decode-steps 32 --repeats 3 >"$OUT/tiny.log" 2>&1
echo "tiny rc=$?"; tail -12 "$OUT/tiny.log"

step "dsv4 bench --synthetic flash-shapes $*"
TMPDIR=/tmp timeout 470 $B/dsv4 bench --synthetic flash-shapes --csv "$OUT/bench.csv" "$@" >"$OUT/bench.log" 2>&1
echo "bench rc=$?"
# a run cut short by the timeout leaves its checkpoint behind: remove it (the CSV keeps the rows measured so far)
ls -d /tmp/dsv4_bench_* 2>/dev/null && { echo "removing a left-over synthetic checkpoint"; rm -rf /tmp/dsv4_bench_*; }
step "done"
grep -E "^bench:" "$OUT/bench.log" | tail -30
sed -n '/^dsv4 bench:/,$p' "$OUT/bench.log"

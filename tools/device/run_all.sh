#!/usr/bin/env bash
# run_all.sh — on the GPU machine (device `run` tool, carry [".devlibs"]): builds everything, runs every test
# (the unit/model suite incl. the CUDA op tests test_cuda_linear / test_cuda_ops, then the CUDA end-to-end
# test test_cuda_forward, then the CUDA MTP block: test_cuda_mtp and the MTP goldens on the GPU,
# tests/cli/test_mtp_golden.sh with DSV4_MTP_BACKEND=cuda), then compute-sanitizer memcheck on a tiny `dsv4 logits --backend cuda` run
# (prefill + graph-replayed decode) of each tiny checkpoint, then compute-sanitizer racecheck (shared-memory
# hazards, warnings included) on a shorter run of each. Logs go to $OUT; the summary is printed last.
# Then the goldens on the GPU (run_golden_gpu.sh: end to end vs the oracle + teacher-forced per layer).
#   usage: bash tools/device/run_all.sh [--forward-only | --no-memcheck]
#   (--forward-only: skip the rest of the suite; --no-memcheck: that and the memcheck step)
# Typical call: run(command="bash tools/device/run_all.sh", carry=[".devlibs"], timeout_s=570)
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/dsv4_out}
mkdir -p "$OUT"
MODE=${1:-}
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
. tools/device/devlibs_env.sh
B=build/release
summary=""

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader 2>&1 | tee "$OUT/gpu.txt"

step "build (make -j16 all)"
if make -j16 all >"$OUT/build.log" 2>&1; then
    echo "make all: ok"
else
    echo "make all FAILED (another module's work in progress?); building what compiles:"
    grep -E "error" "$OUT/build.log" | head -10
    make -k -j16 all >>"$OUT/build.log" 2>&1
fi
ls $B/dsv4 $B/tests/model/test_cuda_forward >/dev/null || { echo "nothing to run"; exit 1; }

if [ -z "$MODE" ]; then
    step "unit + model suite (tests/run_tests.sh, release build; test_cuda_forward runs separately below)"
    mkdir -p /tmp/suite/tests/unit /tmp/suite/tests/model
    ln -sf "$PWD/$B/dsv4" /tmp/suite/dsv4
    for t in $B/tests/unit/test_* $B/tests/model/test_*; do
        case "$t" in *.o|*.d|*test_cuda_forward|*test_cuda_mtp) continue;; esac
        [ -x "$t" ] && ln -sf "$PWD/$t" "/tmp/suite/${t#$B/}"
    done
    DSV4_BUILD=/tmp/suite timeout 400 tests/run_tests.sh >"$OUT/suite.log" 2>&1
    echo "suite rc=$?"
    grep -E "passed .* failed|^[0-9]+ passed" "$OUT/suite.log" | grep -v " 0 failed" | head -20
    summary="$summary\nsuite: $(tail -1 "$OUT/suite.log")"
fi

step "test_cuda_forward"
timeout 300 $B/tests/model/test_cuda_forward >"$OUT/forward.log" 2>&1
echo "test_cuda_forward rc=$?"
grep -v "^ok " "$OUT/forward.log" | head -150
summary="$summary\ntest_cuda_forward: $(tail -1 "$OUT/forward.log")"

step "test_cuda_mtp (the MTP block on the GPU vs the CPU: teacher forced, device-h = host-h, batch, end to end)"
timeout 300 $B/tests/model/test_cuda_mtp >"$OUT/mtp.log" 2>&1
echo "test_cuda_mtp rc=$?"
grep -v "^ok " "$OUT/mtp.log" | head -80
summary="$summary\ntest_cuda_mtp: $(tail -1 "$OUT/mtp.log")"

step "MTP goldens on the GPU (tests/cli/test_mtp_golden.sh: dsv4 logits --backend cuda --mtp-out vs the oracle)"
DSV4=$B/dsv4 DSV4_MTP_BACKEND=cuda timeout 300 bash tests/cli/test_mtp_golden.sh >"$OUT/mtp_golden_gpu.log" 2>&1
echo "test_mtp_golden (cuda) rc=$?"
cat "$OUT/mtp_golden_gpu.log"
summary="$summary\nmtp_golden cuda: $(tail -1 "$OUT/mtp_golden_gpu.log")"

step "goldens on the GPU (tools/device/run_golden_gpu.sh: end to end + teacher-forced per layer, --backend cuda)"
timeout 300 bash tools/device/run_golden_gpu.sh $B/dsv4 >"$OUT/golden_gpu.log" 2>&1
echo "run_golden_gpu rc=$?"
cat "$OUT/golden_gpu.log"
summary="$summary\ngolden_gpu: $(tail -1 "$OUT/golden_gpu.log")"

if [ "$MODE" = "--no-memcheck" ]; then step "done"; echo -e "SUMMARY$summary"; exit 0; fi
step "compute-sanitizer memcheck: dsv4 logits --backend cuda"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for m in tiny-flash tiny-pro; do
    ids=$(seq 3 7 300 | head -40 | paste -sd, -)   # 40 tokens: prefill 33 (eager), 7 decode steps (graph)
    timeout 240 "$CS" --tool memcheck --leak-check full --error-exitcode 9 \
        $B/dsv4 logits --model tests/data/$m --tokens "$ids" --prefill 33 --out /tmp/$m.npy --backend cuda \
        >"$OUT/memcheck_$m.log" 2>&1
    rc=$?
    echo "memcheck $m rc=$rc: $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$m.log" | tail -1)"
    summary="$summary\nmemcheck $m: rc=$rc $(grep -E 'ERROR SUMMARY' "$OUT/memcheck_$m.log" | tail -1)"
done
step "compute-sanitizer racecheck: dsv4 logits --backend cuda (shared-memory hazards; issue 13: route_kernel)"
for m in tiny-flash tiny-pro; do
    ids=$(seq 3 7 300 | head -12 | paste -sd, -)   # 12 tokens: prefill 9, 3 decode steps (racecheck is slow)
    timeout 240 "$CS" --tool racecheck --racecheck-report all --error-exitcode 9 \
        $B/dsv4 logits --model tests/data/$m --tokens "$ids" --prefill 9 --out /tmp/$m.rc.npy --backend cuda \
        >"$OUT/racecheck_$m.log" 2>&1
    rc=$?
    echo "racecheck $m rc=$rc: $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck_$m.log" | tail -1)"
    summary="$summary\nracecheck $m: rc=$rc $(grep -E 'RACECHECK SUMMARY|ERROR SUMMARY' "$OUT/racecheck_$m.log" | tail -1)"
done
step "done"
echo -e "SUMMARY$summary"

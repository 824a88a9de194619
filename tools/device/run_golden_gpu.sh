#!/usr/bin/env bash
# run_golden_gpu.sh — tests/cli/test_golden.sh's checks on the CUDA backend (on the GPU machine; called by
# run_all.sh, or alone after a build): for each tiny model
#  1. end to end: `dsv4 logits --backend cuda` on every golden case within the manifest's tolerances
#     (tools/oracle/compare.py, the same manifests and tolerances as the CPU);
#  2. per layer with teacher forcing: each layer fed the oracle's input (--teacher-dir) reproduces the
#     oracle's output (tools/oracle/layer_check.py with the CPU's thresholds: max row rel-L2 <= 1e-2 and
#     >= 80% of positions bitwise equal);
#  3. for the record (not a pass/fail check): the same teacher-forced run on the CPU, and the GPU's layer
#     outputs against the CPU's (layer_check.py GPU-vs-CPU), to tell an op's GPU numerics from the CPU's.
# Fault variants exist on the CPU only (test_golden.sh covers them). Logs under $OUT/golden_gpu/.
#   usage: bash tools/device/run_golden_gpu.sh [DSV4]     (default build/release/dsv4)
set -u
cd "$(dirname "$0")/../.."
DSV4=${1:-build/release/dsv4}
OUT=${OUT:-/tmp/dsv4_out}
L="$OUT/golden_gpu"; mkdir -p "$L"
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for m in tiny-flash tiny-pro; do
    M=tests/data/golden/$m
    if tests/golden/run_goldens.sh "$DSV4" "$M/manifest.json" "$tmp/$m" --backend cuda >"$L/$m.e2e.log" 2>&1 &&
       python3 tools/oracle/compare.py --manifest "$M/manifest.json" --engine-dir "$tmp/$m" >>"$L/$m.e2e.log" 2>&1; then
        ok "$m: cuda end-to-end logits and HC state within the golden tolerances"
    else
        bad "$m: cuda end-to-end golden comparison"; tail -n 30 "$L/$m.e2e.log"
    fi
    grep -E "^\[|PASS|FAIL" "$L/$m.e2e.log" | sed "s/^/    cuda e2e: /"
    ids=$(python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['tokens'])))" "$M/len40_hc.tokens.json")
    for be in cuda cpu; do
        d="$tmp/$m.tf.$be"
        "$DSV4" logits --model "tests/data/$m" --tokens "$ids" --prefill 17 --out "$d.npy" --dump-dir "$d" \
            --teacher-dir "$M/len40_hc.hc" --backend $be >"$L/$m.tf.$be.log" 2>&1
        python3 tools/oracle/layer_check.py "$M/len40_hc.hc" "$d" 4 >>"$L/$m.tf.$be.log" 2>&1
        rc=$?
        sed "s/^/    $m $be vs oracle: /" "$L/$m.tf.$be.log" | grep -E "layer|PASS|FAIL|rror"
        if [ $be = cuda ]; then
            if [ $rc -eq 0 ]; then ok "$m: cuda per-layer teacher-forced comparison"
            else bad "$m: cuda per-layer teacher-forced comparison"; fi
        fi
    done
    python3 tools/oracle/layer_check.py "$tmp/$m.tf.cpu" "$tmp/$m.tf.cuda" 4 >"$L/$m.tf.cuda_vs_cpu.log" 2>&1
    sed "s/^/    $m cuda vs cpu (both teacher-forced): /" "$L/$m.tf.cuda_vs_cpu.log"
done
echo "golden_gpu: $pass passed, $fail failed"
[ "$fail" -eq 0 ]

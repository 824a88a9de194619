#!/usr/bin/env bash
# test_bench_cli.sh — CLI tests of `dsv4 bench` on the cpu backend (tiny models, a few seconds): the CSV has
# the documented columns and one row per prefill length and per (batch, context) pair, the table is printed,
# --max-fill skips pairs, --synthetic writes a checkpoint and removes it (or keeps it with --keep), usage
# errors exit 2, and --backend cuda either runs (a GPU is present) or fails with one error line. Needs $DSV4.
# Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d /tmp/dsv4_test_bench_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
TINY=(--prompt-lens 16,48 --batches 1,2 --contexts 16,40 --decode-steps 3 --repeats 1 --warmup 1 --threads 2)
COLS="backend,device,model,layers,experts,phase,batch,context,prompt_len,tokens_per_s,ms_per_step,bytes_per_step,roofline_ratio"

# 1. tiny-flash on the cpu: exit 0, CSV columns, 2 prefill + 4 decode rows, table on stdout.
"$DSV4" bench --model tests/data/tiny-flash --backend cpu "${TINY[@]}" --csv "$TMP/a.csv" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -ne 0 ]; then
    bad "cpu bench runs" "rc=$rc: $(tail -3 "$TMP/err")"
else
    ok "cpu bench runs"
    head -1 "$TMP/a.csv" | grep -q "^$COLS" && ok "csv columns" || bad "csv columns" "$(head -1 "$TMP/a.csv")"
    np=$(grep -c ',prefill,' "$TMP/a.csv"); nd=$(grep -c ',decode,' "$TMP/a.csv")
    [ "$np" -eq 2 ] && [ "$nd" -eq 4 ] && ok "csv rows (2 prefill, 4 decode)" || bad "csv rows" "prefill $np decode $nd"
    # every row: 13+ fields, positive tokens/s and ms, decode rows carry a roofline ratio in (0, 2)
    awk -F, 'NR > 1 { n = split($0, f, ","); if (n < 13 || $10 <= 0 || $11 <= 0 || $12 <= 0) bad = 1;
                      if ($6 == "decode" && ($13 <= 0 || $13 >= 2)) bad = 1 }
             END { exit bad }' "$TMP/a.csv" && ok "csv values" || bad "csv values" "$(cat "$TMP/a.csv")"
    grep -q "roofline" "$TMP/out" && grep -qE "^prefill +tokens" "$TMP/out" && ok "table on stdout" ||
        bad "table on stdout" "$(cat "$TMP/out")"
    grep -qE '^cpu,"cpu \(2 of [0-9]+ threads\)","tests/data/tiny-flash",4,' "$TMP/a.csv" && ok "csv identity" ||
        bad "csv identity" "$(sed -n 2p "$TMP/a.csv")"
fi

# 2. --max-fill skips a (batch, context) pair and says so.
"$DSV4" bench --model tests/data/tiny-pro --backend cpu --no-prefill --batches 1,3 --contexts 24 --max-fill 40 \
    --decode-steps 2 --repeats 1 --warmup 0 --csv "$TMP/b.csv" >"$TMP/out" 2>"$TMP/err"
rc=$?
nd=$(grep -c ',decode,' "$TMP/b.csv" 2>/dev/null)
if [ $rc -eq 0 ] && [ "$nd" = 1 ] && grep -q "skipping batch 3 at context 24" "$TMP/err"; then ok "max-fill skip"
else bad "max-fill skip" "rc=$rc rows=$nd $(tail -2 "$TMP/err")"; fi

# 3. --synthetic tiny: written to --synth-dir, removed afterwards; kept with --keep.
S="$TMP/synth"
"$DSV4" bench --synthetic tiny --layers 2 --synth-dir "$S" --backend cpu --prompt-lens 8 --batches 1 --contexts 8 \
    --decode-steps 2 --repeats 1 --warmup 0 --csv "$TMP/c.csv" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 0 ] && [ ! -e "$S" ] && grep -q ',"synthetic:tiny",2,8,decode,' "$TMP/c.csv"; then ok "synthetic removed"
else bad "synthetic removed" "rc=$rc exists=$([ -e "$S" ] && echo yes) $(tail -2 "$TMP/err")"; fi
"$DSV4" bench --synthetic tiny --layers 2 --synth-dir "$S" --keep --backend cpu --no-prefill --batches 1 \
    --contexts 8 --decode-steps 2 --repeats 1 --warmup 0 >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 0 ] && [ -f "$S/config.json" ] && ls "$S"/*.safetensors >/dev/null 2>&1; then ok "synthetic --keep"
else bad "synthetic --keep" "rc=$rc $(tail -2 "$TMP/err")"; fi

# 4. --gpus 2 on the cpu backend (ranks on host threads): runs, the CSV says 2 ranks.
"$DSV4" bench --model tests/data/tiny-flash --backend cpu --gpus 2 --prompt-lens 16 --batches 2 --contexts 16 \
    --decode-steps 2 --repeats 1 --warmup 0 --csv "$TMP/g.csv" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 0 ] && [ "$(awk -F, 'NR > 1 { print $NF }' "$TMP/g.csv" | sort -u)" = 2 ] && grep -q "2 ranks" "$TMP/out"
then ok "--gpus 2 (cpu ranks)"; else bad "--gpus 2" "rc=$rc $(tail -2 "$TMP/err")"; fi

# 5. usage errors: exit 2 with a "dsv4 bench:" line.
usage_err() {
    local name=$1; shift
    "$DSV4" bench "$@" >"$TMP/out" 2>"$TMP/err"; local rc=$?
    if [ $rc -eq 2 ] && grep -q '^dsv4 bench: ' "$TMP/err"; then ok "$name"; else bad "$name" "rc=$rc $(head -2 "$TMP/err")"; fi
}
usage_err "model and synthetic" --model tests/data/tiny-flash --synthetic tiny
usage_err "bad list" --model tests/data/tiny-flash --batches 1,x
usage_err "bad backend" --model tests/data/tiny-flash --backend tpu
usage_err "unknown option" --model tests/data/tiny-flash --frobnicate 1
usage_err "bad gpus" --model tests/data/tiny-flash --gpus 0
usage_err "repeated option" --model tests/data/tiny-flash --repeats 1 --repeats 2
usage_err "did you mean" --model tests/data/tiny-flash --batch 1
grep -q "did you mean '--batches'" "$TMP/err" && ok "did you mean names --batches" || bad "did you mean" "$(cat "$TMP/err")"

# 5b. no --model: the embedded default checkpoint (written into a temporary cache); no --backend: cpu here
# unless a GPU is visible (then cuda).
XDG_CACHE_HOME="$TMP/cache" "$DSV4" bench "${TINY[@]}" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 0 ] && grep -q "embedded default model" "$TMP/err" && grep -q "roofline" "$TMP/out"; then
    ok "no --model: the embedded default ($(grep -o 'backend [a-z]*' "$TMP/out" | head -1))"
else bad "no --model" "rc=$rc $(tail -3 "$TMP/err")"; fi

# 6. --backend cuda: runs where a GPU is, else one error line and exit 1 (never a crash).
"$DSV4" bench --model tests/data/tiny-flash --backend cuda "${TINY[@]}" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -eq 0 ]; then
    grep -q roofline "$TMP/out" && ok "cuda bench (GPU present)" || bad "cuda bench (GPU present)" "$(cat "$TMP/out")"
elif [ $rc -eq 1 ] && [ "$(grep -c '^dsv4 bench: ' "$TMP/err")" -eq 1 ]; then
    ok "cuda bench without a GPU: $(grep '^dsv4 bench: ' "$TMP/err")"
else
    bad "cuda bench" "rc=$rc $(tail -3 "$TMP/err")"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# test_bench_spec_cli.sh — `dsv4 bench --spec K --spec-accept A` on the cpu backend (tiny-flash, a few
# seconds): the table has one plain row (K 0) and one row per K <= --spec and A <= K+1 at every batch, the
# measured tokens per round follows the simulated acceptance (A = 1: exactly 1; A = 2: exactly 2), the CSV has its columns and rows, and bad --spec-accept values exit 2. Needs $DSV4.
# Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d /tmp/dsv4_test_bench_spec_XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# K = 1, 2 at A = 1 and 2: rows per batch: 1 plain + K1:{1,2} + K2:{1,2} = 5. With A = 2 every round accepts
# one draft, so a call of 6 tokens is 3 rounds of 2 tokens (also at K = 2, whose last round drafts one).
"$DSV4" bench --model tests/data/tiny-flash --backend cpu --spec 2 --spec-accept 1,2 --batches 1,2 --contexts 12 \
    --decode-steps 6 --repeats 1 --warmup 2 --threads 2 --csv "$TMP/s.csv" >"$TMP/out" 2>"$TMP/err"
rc=$?
if [ $rc -ne 0 ]; then
    bad "bench --spec runs" "rc=$rc: $(tail -3 "$TMP/err")"
else
    ok "bench --spec runs"
    grep -q "^speculative decoding (cpu" "$TMP/out" && grep -q "speed-up = plain ms/token / speculative" "$TMP/out" &&
        ok "table title and ratio convention" || bad "table" "$(cat "$TMP/out")"
    n=$(grep -cE '^ +[12] +12 +[0-2] ' "$TMP/out")
    [ "$n" -eq 10 ] && ok "10 rows (2 batches x (plain + 2 K x 2 A))" || bad "rows" "$n: $(cat "$TMP/out")"
    # A = 1: nothing accepted, 1 token per round; K = 1, A = 2 over 6 tokens: 3 rounds of 2 tokens.
    awk '$3 >= 1 && $4 == "1.00" && $5 != "1.00" { bad = 1 } $3 == 1 && $4 == "2.00" && $5 != "2.00" { bad = 1 }
         $3 >= 0 && $6 + 0 <= 0 { bad = 1 } END { exit bad }' <(grep -E '^ +[12] +12 ' "$TMP/out") &&
        ok "measured tokens per round follow the simulated acceptance" || bad "A_meas" "$(cat "$TMP/out")"
    head -1 "$TMP/s.csv" | grep -q "^backend,batch,context,k,accept,accept_measured,ms_per_token,tokens_per_s,speedup" &&
        ok "csv columns" || bad "csv columns" "$(head -1 "$TMP/s.csv")"
    [ "$(($(wc -l <"$TMP/s.csv") - 1))" -eq 10 ] && ok "csv rows" || bad "csv rows" "$(cat "$TMP/s.csv")"
fi

# Usage errors: A above K+1, below 1, not a number.
for a in 4 0.5 x; do
    "$DSV4" bench --model tests/data/tiny-flash --backend cpu --spec 2 --spec-accept "$a" >"$TMP/o" 2>"$TMP/e"
    rc=$?
    [ $rc -eq 2 ] && grep -q "spec-accept needs comma-separated numbers in \[1, 3\]" "$TMP/e" &&
        ok "--spec-accept $a refused" || bad "--spec-accept $a" "rc=$rc: $(cat "$TMP/e")"
done
"$DSV4" bench --model tests/data/tiny-flash --backend cpu --spec 4 >"$TMP/o" 2>"$TMP/e"
[ $? -eq 2 ] && ok "--spec 4 refused" || bad "--spec 4" "$(cat "$TMP/e")"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

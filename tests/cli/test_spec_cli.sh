#!/usr/bin/env bash
# test_spec_cli.sh — `dsv4 generate --prompt-ids ... --spec K` (speculative decoding with the MTP block,
# issue 15): the ids equal plain greedy decoding's for K = 1..3 on both tiny models (lengths past the
# 128-token window), --stats reports the acceptance counts, and every unsupported use is refused with a
# message and exit 2 (or 1 for what only the engine can tell). Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ids=$(awk 'BEGIN { s = 12345; for (i = 0; i < 90; i++) { s = (s * 1103515245 + 12345) % 2147483648; printf("%s%d", i ? "," : "", s % 512) } }')
for m in tiny-flash tiny-pro; do
    "$DSV4" generate --model "tests/data/$m" --prompt-ids "$ids" -n 50 >"$tmp/plain" 2>"$tmp/plain.err"
    if [ $? -ne 0 ] || [ "$(tr ',' '\n' <"$tmp/plain" | wc -l)" -ne 50 ]; then bad "$m: plain greedy run"; cat "$tmp/plain.err"; continue; fi
    for K in 1 2 3; do
        if "$DSV4" generate --model "tests/data/$m" --prompt-ids "$ids" -n 50 --spec $K --stats >"$tmp/spec" 2>"$tmp/spec.err" &&
           cmp -s "$tmp/plain" "$tmp/spec" && grep -q "speculative decoding: K $K" "$tmp/spec.err"; then
            ok "$m --spec $K: the plain greedy ids ($(grep -o '[0-9]* verification forwards' "$tmp/spec.err"))"
        else
            bad "$m --spec $K differs from plain greedy"; cat "$tmp/spec.err"; diff "$tmp/plain" "$tmp/spec" | head -5
        fi
    done
done
expect() { # expect RC PATTERN DESCRIPTION -- ARGS...
    local want=$1 pat=$2 what=$3; shift 4
    out=$("$DSV4" "$@" 2>&1); rc=$?
    if [ $rc -eq "$want" ] && echo "$out" | grep -q -- "$pat"; then ok "$what"; else bad "$what: rc $rc, '$out'"; fi
}
M=tests/data/tiny-flash
expect 2 "needs an integer in \\[0, 3\\]" "--spec 4 is refused" -- generate --model $M --prompt-ids 1,2,3 --spec 4
expect 2 "needs an integer in \\[0, 3\\]" "--spec x is refused" -- generate --model $M --prompt-ids 1,2,3 --spec x
expect 2 "greedy decoding only" "--spec with a temperature is refused" -- generate --model $M --prompt-ids 1,2,3 --spec 1 --temperature 0.7
expect 2 "greedy decoding only" "--spec with a repetition penalty is refused" -- generate --model $M --prompt-ids 1,2,3 --spec 1 --repetition-penalty 1.2
expect 2 "prompt-ids" "--spec with -p is refused" -- generate --model $M -p hello --spec 2
expect 1 "one rank" "--spec with --gpus 2 is refused by the engine" -- generate --model $M --prompt-ids 1,2,3 --spec 2 --gpus 2
if [ "$("$DSV4" generate --model $M --prompt-ids 1,2,3 -n 5 --spec 0)" = "$("$DSV4" generate --model $M --prompt-ids 1,2,3 -n 5)" ]; then
    ok "--spec 0 is plain decoding"; else bad "--spec 0 differs"; fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

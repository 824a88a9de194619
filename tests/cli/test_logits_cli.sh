#!/usr/bin/env bash
# test_logits_cli.sh — `dsv4 logits` input handling: id lists (comma, file, JSON list), the .npy output
# shape, --dump-dir files, and clear errors (exit 2 for usage, 1 for bad model/ids) for bad input.
# Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
M=tests/data/tiny-flash
pass=0; fail=0
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
check() { if [ "$2" = 0 ]; then pass=$((pass + 1)); echo "ok   $1"; else fail=$((fail + 1)); echo "FAIL $1"; fi; }
npy_shape() { python3 -c "import numpy,sys; print(numpy.load(sys.argv[1]).shape)" "$1" 2>/dev/null; }

"$DSV4" logits --model $M --tokens 5,6,7,8,9 --prefill 3 --out "$tmp/a.npy" >/dev/null 2>&1
check "comma list runs" $?
[ "$(npy_shape "$tmp/a.npy")" = "(3, 512)" ]; check "logits shape is [T-N+1, vocab]" $?
printf '[5, 6, 7,\n 8, 9]\n' >"$tmp/ids.json"
"$DSV4" logits --model $M --tokens "$tmp/ids.json" --prefill 3 --out "$tmp/b.npy" >/dev/null 2>&1 && cmp -s "$tmp/a.npy" "$tmp/b.npy"
check "JSON-list file gives the same logits" $?
"$DSV4" logits --model $M --tokens 5,6,7,8,9 --prefill 3 --out "$tmp/c.npy" --dump-dir "$tmp/d" >/dev/null 2>&1 &&
    [ "$(npy_shape "$tmp/d/hc_3.npy")" = "(5, 4, 256)" ] && cmp -s "$tmp/a.npy" "$tmp/c.npy"
check "--dump-dir writes hc_L.npy [T, hc, hidden] and does not change the logits" $?
out=$("$DSV4" logits --model $M --tokens 5,6,x --prefill 1 --out "$tmp/e.npy" 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "neither"; check "bad id list: exit 2 with a message" $?
out=$("$DSV4" logits --model $M --tokens 5,6 --prefill 3 --out "$tmp/e.npy" 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q -- "--prefill"; check "prefill beyond the tokens: exit 2 naming --prefill" $?
out=$("$DSV4" logits --model $M --tokens 5,600 --prefill 1 --out "$tmp/e.npy" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "token id 600"; check "token id >= vocab: exit 1 naming the id" $?
out=$("$DSV4" logits --model "$tmp/nope" --tokens 5 --prefill 1 --out "$tmp/e.npy" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "nope"; check "missing model dir: exit 1 naming it" $?
out=$("$DSV4" logits --model $M --tokens 5 --prefill 1 --out "$tmp/e.npy" --bogus 1 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "bogus"; check "unknown option: exit 2 naming it" $?
mkdir -p "$tmp/t"; python3 -c "import numpy; [numpy.save('$tmp/t/hc_%d.npy' % l, numpy.zeros((2,4,8), numpy.float32)) for l in range(3)]"
out=$("$DSV4" logits --model $M --tokens 5,6 --prefill 1 --out "$tmp/e.npy" --teacher-dir "$tmp/t" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "teacher"; check "teacher files of the wrong model: exit 1, clear error" $?
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

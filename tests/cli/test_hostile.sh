#!/usr/bin/env bash
# test_hostile.sh — runs the hostile-input suite tests/hostile/*.sh (issue 13: FIFOs and directories for
# files, shell syntax in $HOME / $XDG_CACHE_HOME, NaN weights, bad tid2eid, absurd config values, aliasing
# tensors, huge --ctx, NUL bytes ...). Each case asserts a clean failure: exit 1..127 with a message, within
# a time limit, no sanitizer report. Needs $DSV4. Prints the sum as "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
export DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0
for s in tests/hostile/*.sh; do
    [ "$(basename "$s")" = lib.sh ] && continue
    out=$(bash "$s" 2>&1); rc=$?
    echo "$out" | grep -vE "^ok |^[0-9]+ passed, [0-9]+ failed$" | sed "s|^|$(basename "$s" .sh): |" || true
    line=$(echo "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -1)
    if [ -z "$line" ]; then fail=$((fail + 1)); echo "FAIL $s: no closing line (rc $rc)"; continue; fi
    p=${line%% passed*}; f=${line#*, }; f=${f%% failed}
    [ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
    pass=$((pass + p)); fail=$((fail + f))
    echo "$(basename "$s"): $line"
done
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

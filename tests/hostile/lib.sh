#!/usr/bin/env bash
# lib.sh — shared by every tests/hostile/*.sh (sourced): the binary, a scratch directory, and the one
# assertion of the suite. `hostile NAME LIMIT_S PATTERN -- command...` runs the command with a wall-clock
# limit and passes when it ends by itself (no timeout) with an exit code in 1..127, its stderr holds
# PATTERN (grep -E), and no sanitizer report or assertion failure appears: a clean error, never a hang,
# a crash, an abort (134) or a silent success. Each script ends with `finish` ("N passed, N failed").
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DSV4=${DSV4:-build/asan/dsv4}
TINY=tests/data/tiny-flash
pass=0; fail=0; skip=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
skipped() { skip=$((skip + 1)); echo "SKIP $1"; }
tmp=$(mktemp -d /tmp/dsv4_hostile_XXXXXX)
trap 'rm -rf "$tmp"' EXIT
have_python() { command -v python3 >/dev/null 2>&1; }
# mkfix DST [mkfixture.py edits...]: a copy of the tiny checkpoint with edits
mkfix() {
    local d=$1; shift
    python3 tests/hostile/mkfixture.py "$TINY" "$d" "$@" || { bad "fixture $d ($*) could not be built"; rm -rf "$d"; }
}

hostile() {
    local name=$1 limit=$2 pat=$3; shift 4
    local t0=$(date +%s)
    timeout -k 5 "$limit" "$@" >"$tmp/out" 2>"$tmp/err" </dev/null
    local rc=$? dt=$(( $(date +%s) - t0 ))
    local why=""
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then why="timed out after ${limit}s (hang?)"
    elif [ "$rc" = 0 ]; then why="exit 0: the hostile input was accepted"
    elif [ "$rc" -gt 127 ]; then why="exit $rc: killed by a signal (crash or abort)"
    elif grep -qE "AddressSanitizer|runtime error:|LeakSanitizer|assertion failed|Assertion" "$tmp/err"; then
        why="sanitizer or assertion report"
    elif ! [ -s "$tmp/err" ]; then why="no message on stderr"
    elif ! grep -qE -- "$pat" "$tmp/err"; then why="stderr lacks /$pat/"
    fi
    if [ -z "$why" ]; then ok "$name (rc $rc, ${dt}s): $(head -c 160 "$tmp/err" | tr '\n' ' ')"
    else bad "$name: $why; rc=$rc; stderr: $(head -c 400 "$tmp/err" | tr '\n' ' ')"; fi
}

finish() {
    [ "$skip" -gt 0 ] && echo "($skip skipped)"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

#!/usr/bin/env bash
# run_tests.sh — runs every test of dsv4 and prints the closing line the CI reads:
#   "N passed, N failed, N skipped"   (the first two numbers as before; skipped cases are not counted as passed)
#  - C test binaries: $DSV4_BUILD/tests/{unit,model}/test_* (each ends with its own closing line)
#  - CLI tests: tests/cli/*.sh (each prints its own closing line; gets DSV4=<binary>)
# The closing line of one test is "N passed, N failed" or "N passed, N failed, N skipped" (a case that could
# not run here -- no GPU, no tokenizer, no tmux -- is a skip, reported with a line saying why); the last such
# line of its output counts. A test that crashes, exits non-zero with 0 failures, or prints no closing line
# counts as one failure.
# Usage: tests/run_tests.sh [TEST...]   (default: every test above; a TEST is a binary or a .sh file)
set -u
cd "$(dirname "$0")/.."
BUILD=${DSV4_BUILD:-build/asan}
export DSV4="$BUILD/dsv4"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
total_pass=0; total_fail=0; total_skip=0
run_one() {
    local name=$1; shift
    local log; log=$(mktemp)
    local start=$(date +%s)
    timeout 900 "$@" >"$log" 2>&1
    local rc=$?
    local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$log" | tail -n 1)
    local p=0 f=0 s=0
    if [ -n "$line" ]; then
        p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}' | tr -d ,)
        s=$(echo "$line" | awk '{print ($5 == "" ? 0 : $5)}')
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    else
        f=1
    fi
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f)); total_skip=$((total_skip + s))
    printf '%-40s %4d passed %3d failed %3d skipped  (%ds)\n' "$name" "$p" "$f" "$s" $(( $(date +%s) - start ))
    if [ "$f" -ne 0 ]; then sed 's/^/    | /' "$log" | grep -v '^    | ok ' | tail -n 60; fi
    if [ "$s" -ne 0 ]; then grep -iE '^(skip|SKIP)' "$log" | sed 's/^/    | /' | head -n 5; fi
    rm -f "$log"
}
if [ $# -gt 0 ]; then
    for t in "$@"; do
        case "$t" in *.sh) run_one "$t" bash "$t";; *) run_one "$t" "$t";; esac
    done
else
    for t in "$BUILD"/tests/unit/test_* "$BUILD"/tests/model/test_*; do
        [ -x "$t" ] || continue
        case "$t" in *.o|*.d) continue;; esac
        run_one "${t#$BUILD/}" "$t"
    done
    for s in tests/cli/*.sh; do
        [ -f "$s" ] || continue
        run_one "$s" bash "$s"
    done
fi
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" -eq 0 ]

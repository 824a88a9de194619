#!/usr/bin/env bash
# run_tests.sh — runs every test of dsv4 and prints the closing line the CI reads: "N passed, N failed".
#  - C test binaries: $DSV4_BUILD/tests/{unit,model}/test_* (each ends with its own "N passed, N failed")
#  - CLI tests: tests/cli/*.sh (each prints its own "N passed, N failed"; gets DSV4=<binary>)
# A binary that crashes or prints no closing line counts as one failure.
set -u
cd "$(dirname "$0")/.."
BUILD=${DSV4_BUILD:-build/asan}
export DSV4="$BUILD/dsv4"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
total_pass=0; total_fail=0
run_one() {
    local name=$1; shift
    local log; log=$(mktemp)
    local start=$(date +%s)
    timeout 900 "$@" >"$log" 2>&1
    local rc=$?
    local line; line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1)
    local p=0 f=0
    if [ -n "$line" ]; then
        p=$(echo "$line" | awk '{print $1}'); f=$(echo "$line" | awk '{print $3}')
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    else
        f=1
    fi
    total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
    printf '%-40s %4d passed %3d failed  (%ds)\n' "$name" "$p" "$f" $(( $(date +%s) - start ))
    if [ "$f" -ne 0 ]; then sed 's/^/    | /' "$log" | grep -v '^    | ok ' | tail -n 60; fi
    rm -f "$log"
}
for t in "$BUILD"/tests/unit/test_* "$BUILD"/tests/model/test_*; do
    [ -x "$t" ] || continue
    case "$t" in *.o|*.d) continue;; esac
    run_one "${t#$BUILD/}" "$t"
done
for s in tests/cli/*.sh; do
    [ -f "$s" ] || continue
    run_one "$s" bash "$s"
done
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]

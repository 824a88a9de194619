#!/usr/bin/env bash
# test_run_tests_skip.sh — tests/run_tests.sh counts skipped cases as skipped, not passed (issue 14 item 6):
# a test's closing line "N passed, N failed, N skipped" adds to the skipped total, the two-number form still
# counts, a non-zero exit with 0 failures is one failure, no closing line is one failure, and the runner's
# own closing line is "N passed, N failed, N skipped". The C harness (test_skip) prints the same form.
# Runs the runner on small scripts written here (not on the suite: no recursion). Prints "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
pass=0; fail=0; skip=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf 'echo "SKIP case c: no GPU"\necho "2 passed, 0 failed, 1 skipped"\n' >"$tmp/three.sh"
printf 'echo "3 passed, 0 failed"\n' >"$tmp/two.sh"
printf 'echo "0 passed, 0 failed, 4 skipped"\n' >"$tmp/allskip.sh"
printf 'echo "1 passed, 0 failed"; exit 3\n' >"$tmp/rc.sh"
printf 'echo "no closing line"\n' >"$tmp/none.sh"

out=$(DSV4_BUILD="$tmp/nobuild" tests/run_tests.sh "$tmp/three.sh" "$tmp/two.sh" "$tmp/allskip.sh" 2>&1); rc=$?
last=$(tail -n 1 <<<"$out")
[ $rc = 0 ] && [ "$last" = "5 passed, 0 failed, 5 skipped" ] && ok "skips summed, two-number form accepted: $last" ||
    bad "sum: rc=$rc '$last'"
grep -q "three.sh .* 2 passed .* 0 failed .* 1 skipped" <<<"$out" && ok "per-test line shows the skips" || bad "per-test line: $out"
grep -q "SKIP case c: no GPU" <<<"$out" && ok "the skip reason is shown" || bad "skip reason not shown"
[[ "$last" =~ ^[0-9]+\ passed,\ [0-9]+\ failed ]] && ok "closing line starts with 'N passed, N failed'" || bad "closing line form"
out=$(DSV4_BUILD="$tmp/nobuild" tests/run_tests.sh "$tmp/rc.sh" "$tmp/none.sh" 2>&1); rc=$?
last=$(tail -n 1 <<<"$out")
[ $rc = 1 ] && [ "$last" = "1 passed, 2 failed, 0 skipped" ] && ok "bad exit and missing closing line are failures" ||
    bad "failures: rc=$rc '$last'"
# the C harness: a binary built without CUDA (or run without a GPU) reports its cases as skipped
T=${DSV4_BUILD:-build/asan}/tests/unit/test_cuda_ops
if [ -x "$T" ] && "$T" 2>/dev/null | tail -n 1 | grep -q "skipped$"; then
    last=$("$T" 2>/dev/null | tail -n 1)
    [[ "$last" =~ ^0\ passed,\ 0\ failed,\ [1-9][0-9]*\ skipped$ ]] && ok "C harness without a GPU: '$last'" ||
        bad "C harness: '$last'"
else
    echo "SKIP C harness case: test_cuda_ops ran its cases (a GPU is present) or is not built"; skip=1
fi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

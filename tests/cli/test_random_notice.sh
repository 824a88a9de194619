#!/usr/bin/env bash
# test_random_notice.sh — every random-weight checkpoint is announced (issue 14 item 5): the embedded default
# and any `dsv4 synth` output (config.json carries "dsv4_synthetic": true), for every command that loads one,
# with the released checkpoints' repository ids (deepseek-ai/DeepSeek-V4-Flash, deepseek-ai/DeepSeek-V4-Pro)
# and the memory they need; a checkpoint without the marker gets no notice. Needs $DSV4.
# Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
export LC_ALL=C.UTF-8
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export XDG_CACHE_HOME="$tmp/cache"

# notice NAME FILE — FILE (stderr of a run) holds the whole notice
notice() {
    if grep -qF "random weights — output is gibberish" "$2" && grep -qF "deepseek-ai/DeepSeek-V4-Flash (284B parameters, 160 GB" "$2" &&
        grep -qF "deepseek-ai/DeepSeek-V4-Pro (1.6T, 865 GB: 8 GPUs of 141 GB" "$2"; then ok "$1"
    else bad "$1: $(head -c 400 "$2")"; fi
}

"$DSV4" generate --prompt-ids 5,6 -n 2 >/dev/null 2>"$tmp/e1"; notice "generate on the embedded default" "$tmp/e1"
"$DSV4" synth --out "$tmp/syn" --layers 1 --experts 4 >"$tmp/o2" 2>"$tmp/e2"; notice "synth announces what it wrote" "$tmp/e2"
"$DSV4" generate -m "$tmp/syn" --prompt-ids 5,6 -n 2 >/dev/null 2>"$tmp/e3"; notice "generate -m (synth output)" "$tmp/e3"
"$DSV4" inspect -m "$tmp/syn" >/dev/null 2>"$tmp/e4"; notice "inspect -m (synth output)" "$tmp/e4"
"$DSV4" logits -m "$tmp/syn" --tokens 5,6 --prefill 1 --out "$tmp/l.npy" >/dev/null 2>"$tmp/e5"; notice "logits -m (synth output)" "$tmp/e5"
"$DSV4" bench -m "$tmp/syn" --prompt-lens 4 --no-decode --repeats 1 --threads 1 --backend cpu >/dev/null 2>"$tmp/e6"
notice "bench -m (synth output)" "$tmp/e6"
"$DSV4" inspect -m tests/data/tiny-flash >/dev/null 2>"$tmp/e7"
grep -q "random weights" "$tmp/e7" && bad "no marker, yet a notice" || ok "a checkpoint without the marker: no notice"
# the README names the same checkpoints
grep -qF "deepseek-ai/DeepSeek-V4-Flash" README.md && grep -qF "deepseek-ai/DeepSeek-V4-Pro" README.md &&
    ok "README names the released checkpoints" || bad "README lacks the repository ids"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# test_inspect.sh — CLI tests of `dsv4 inspect`: valid tiny checkpoints and real configs exit 0 with the
# expected summary; broken checkpoints (mutated copies in a temp dir, unchanged files symlinked) exit
# non-zero with exactly one "dsv4 inspect: ..." line on stderr naming the problem. Needs $DSV4.
# Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d /tmp/dsv4_test_inspect_XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# expect_ok NAME GREP_PATTERN ARGS...  — exit 0 and stdout matches every |-separated pattern
expect_ok() {
    local name=$1 pats=$2; shift 2
    local out rc
    out=$("$DSV4" inspect "$@" 2>"$TMP/err"); rc=$?
    if [ $rc -ne 0 ]; then bad "$name" "rc=$rc: $(cat "$TMP/err")"; return; fi
    local IFS='|'
    for p in $pats; do
        if ! grep -qF -- "$p" <<<"$out"; then bad "$name" "output lacks '$p'"; return; fi
    done
    ok "$name"
}

# expect_fail NAME NEEDLE DIR — non-zero exit, one stderr line starting "dsv4 inspect:" containing NEEDLE
expect_fail() {
    local name=$1 needle=$2 dir=$3
    "$DSV4" inspect --model "$dir" >"$TMP/out" 2>"$TMP/err"; local rc=$?
    local lines; lines=$(wc -l <"$TMP/err")
    if [ $rc -eq 0 ]; then bad "$name" "exit 0 on a broken checkpoint"; return; fi
    if [ "$lines" -ne 1 ] || ! grep -q '^dsv4 inspect: ' "$TMP/err"; then bad "$name" "stderr: $(cat "$TMP/err")"; return; fi
    if ! grep -qF -- "$needle" "$TMP/err"; then bad "$name" "message lacks '$needle': $(cat "$TMP/err")"; return; fi
    echo "     $(cat "$TMP/err")"
    ok "$name"
}

# fresh copy of a tiny checkpoint with symlinked files
copy() {
    local d="$TMP/$1"; rm -rf "$d"; mkdir -p "$d"
    for f in "$PWD/tests/data/$2"/*; do ln -s "$f" "$d/$(basename "$f")"; done
    echo "$d"
}
# replace a symlink by an edited real file: realize DIR FILE
realize() { cp --remove-destination "$(readlink -f "$1/$2")" "$1/$2"; }

expect_ok tiny-flash "all 427 tensors valid|HCA    1 layer : 2(r16)|MTP block: SWA|hash-routed layers: 0..1" \
    --model tests/data/tiny-flash
expect_ok tiny-pro "all 424 tensors valid|HCA    3 layers: 0(r8) 1(r8) 3(r8)|CSA    1 layer : 2" \
    --model tests/data/tiny-pro
CFG=tests/data/configs
[ -d "$CFG" ] || CFG=/work/shared/testdata/configs
expect_ok config-flash "SWA    2 layers: 0 1|CSA   21 layers|HCA   20 layers|main model                284.335 G|official BF16 layout 6880.00 B/token" \
    --config "$CFG/deepseek-v4-flash.config.json"
expect_ok config-pro "CSA   30 layers|HCA   31 layers|MTP block: SWA|official BF16 layout 9848.00 B/token" \
    --config "$CFG/deepseek-v4-pro.config.json"
expect_ok config-tiny "hash-routed layers: 0..1" --config tests/data/tiny-flash/config.json

# no --model: the embedded default checkpoint (written into a temporary cache), announced as random weights
XDG_CACHE_HOME="$TMP/cache" "$DSV4" inspect >"$TMP/out" 2>"$TMP/err" && grep -q "all .* tensors valid" "$TMP/out" &&
    grep -q "deepseek-ai/DeepSeek-V4-Flash" "$TMP/err" && ok default-model || bad default-model "$(head -c 300 "$TMP/err")"
"$DSV4" inspect --model a --config b >/dev/null 2>&1; [ $? -eq 2 ] && ok usage-model-and-config || bad usage-model-and-config "want exit 2"
"$DSV4" inspect --help | grep -q "usage: dsv4 inspect \[--model DIR\]" && ok usage-help || bad usage-help "no usage text"

expect_fail missing-dir "no-such-dir: no such directory" "$TMP/no-such-dir"

d=$(copy badcfg tiny-flash); rm "$d/config.json"; echo '{"hidden_size": 256,' >"$d/config.json"
expect_fail bad-config-json "config.json: bad JSON" "$d"

d=$(copy dim tiny-flash); realize "$d" config.json; sed -i 's/"hidden_size": 256/"hidden_size": 384/' "$d/config.json"
expect_fail config-dim-changed "tensor embed.weight: expected BF16 [512, 384], got BF16 [512, 256]" "$d"

d=$(copy trunc tiny-pro); f=$(ls "$d"/model-00002-*); realize "$d" "$(basename "$f")"; truncate -s -4096 "$f"
expect_fail truncated-shard "out of range" "$d"

d=$(copy hlen tiny-pro); f=$(ls "$d"/model-00001-*); realize "$d" "$(basename "$f")"
printf '\xff\xff\xff\xff\x00\x00\x00\x00' | dd of="$f" bs=1 count=8 conv=notrunc status=none
expect_fail header-length-beyond-file "exceeds the file size" "$d"

d=$(copy idx tiny-flash); rm "$d/model.safetensors.index.json"; echo '{"weight_map": [' >"$d/model.safetensors.index.json"
expect_fail bad-index-json "model.safetensors.index.json: bad JSON" "$d"

d=$(copy noshard tiny-flash); rm "$d/model-00002-of-00003.safetensors"
expect_fail index-missing-shard "model-00002-of-00003.safetensors: cannot open" "$d"

d=$(copy hash tiny-flash); realize "$d" config.json; sed -i 's/"num_hash_layers": 2/"num_hash_layers": 3/' "$d/config.json"
expect_fail config-hash-layers "tensor layers.2.ffn.gate.tid2eid: missing" "$d"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

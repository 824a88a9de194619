#!/usr/bin/env bash
# test_inspect_gpus.sh — `dsv4 inspect --gpus N [--gpu-mem GB]` (docs/MULTI_GPU.md): the per-GPU plan for the
# released Flash and Pro configs, "needs at least K GPUs of G GB" when N is too few (decided from config.json,
# before any weight is read), divisibility errors, and `dsv4 logits --gpus 2` on the cpu backend.
# Needs $DSV4. Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d /tmp/dsv4_test_gpus_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
CFG=tests/data/configs
[ -d "$CFG" ] || CFG=/work/shared/testdata/configs
FLASH=$CFG/deepseek-v4-flash.config.json PRO=$CFG/deepseek-v4-pro.config.json

# expect NAME RC PATTERN ARGS... — exit code RC and stdout+stderr containing PATTERN
expect() {
    local name=$1 want=$2 pat=$3; shift 3
    local out rc
    out=$("$DSV4" "$@" 2>&1); rc=$?
    if [ "$rc" -ne "$want" ]; then bad "$name" "rc=$rc (want $want): $(tail -n 2 <<<"$out")"; return; fi
    if ! grep -qF -- "$pat" <<<"$out"; then bad "$name" "output lacks '$pat': $(tail -n 3 <<<"$out")"; return; fi
    ok "$name"
}

if [ -f "$FLASH" ]; then
    expect flash-1x80 1 "needs at least 4 GPUs of 80 GB" inspect --config "$FLASH" --gpus 1
    expect flash-4x80 0 "64 routed experts per GPU" inspect --config "$FLASH" --gpus 4
    expect flash-2x141 0 "KV capacity per GPU" inspect --config "$FLASH" --gpus 2 --gpu-mem 141
    expect flash-3 1 "is not divisible by 3" inspect --config "$FLASH" --gpus 3
fi
if [ -f "$PRO" ]; then
    expect pro-4x141 1 "needs at least 8 GPUs of 141 GB" inspect --config "$PRO" --gpus 4 --gpu-mem 141
    expect pro-8x141 0 "48 routed experts per GPU" inspect --config "$PRO" --gpus 8 --gpu-mem 141
fi
# Too few GPUs is decided before the weights are opened: a directory with only a config.json still says so.
mkdir -p "$TMP/cfgonly" && [ -f "$FLASH" ] && cp "$FLASH" "$TMP/cfgonly/config.json" &&
    expect model-dir-too-few 1 "needs at least 4 GPUs" inspect --model "$TMP/cfgonly" --gpus 2
expect tiny-2 0 "1 groups" inspect --model tests/data/tiny-flash --gpus 2
expect tiny-4 1 "o_groups = 2 is not divisible by 4" inspect --model tests/data/tiny-flash --gpus 4
expect bad-gpus 2 "--gpus needs an integer" inspect --model tests/data/tiny-flash --gpus 0
expect logits-gpus-2 0 "" logits --model tests/data/tiny-pro --tokens 5,6,7,8 --prefill 2 --gpus 2 --threads 2 \
    --out "$TMP/l.npy"
expect logits-gpus-4-bad 1 "not divisible by 4" logits --model tests/data/tiny-pro --tokens 5,6 --prefill 1 --gpus 4 \
    --out "$TMP/l.npy"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

#!/usr/bin/env bash
# test_bench_on_device.sh — `dsv4 bench` with weights generated in GPU memory (--on-device, model/synth_ckpt.h):
# the usage errors (exit 2, before any model or device work), the cpu backend refusing a checkpoint that does
# not fit the free disk with a message naming the sizes and the way out (nothing written), and on a machine
# without a GPU a one-line error. The GPU runs themselves are tests/model/test_cuda_devsynth.c and
# tools/device/run_flash43.sh. Needs $DSV4. Prints "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0; skip=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d /tmp/dsv4_test_ondev_XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# expect NAME RC PATTERN -- CMD...: exit status RC and PATTERN on stderr
expect() {
    local name=$1 want=$2 pat=$3; shift 4
    "$@" >"$TMP/out" 2>"$TMP/err"
    local rc=$?
    if [ $rc -eq "$want" ] && grep -q -- "$pat" "$TMP/err"; then ok "$name"
    else bad "$name" "rc=$rc (want $want): $(tail -3 "$TMP/err")"; fi
}

expect "--on-device needs --synthetic" 2 "needs --synthetic PRESET" -- "$DSV4" bench --on-device --backend cpu
expect "--on-device needs cuda" 2 "needs --backend cuda and one GPU" -- \
    "$DSV4" bench --synthetic tiny --on-device --backend cpu
expect "--on-device with --gpus 2" 2 "needs --backend cuda and one GPU" -- \
    "$DSV4" bench --synthetic tiny --on-device --backend cuda --gpus 2
expect "--on-device --profile" 2 "not available with weights generated on the GPU" -- \
    "$DSV4" bench --synthetic tiny --on-device --backend cuda --profile

# A checkpoint larger than the free disk: the cpu backend cannot fall back to the GPU; nothing is written.
avail=$(df --output=avail -B1 "$TMP" 2>/dev/null | tail -1)
if [ -n "$avail" ] && [ "$avail" -lt 800000000000 ]; then
    expect "checkpoint larger than the disk (cpu)" 1 "does not fit the .* GB free in $TMP" -- \
        "$DSV4" bench --synthetic flash-shapes --layers 64 --experts 1024 --backend cpu --synth-dir "$TMP"
    [ -z "$(ls -A "$TMP" | grep -v -e '^out$' -e '^err$')" ] && ok "nothing written" || bad "nothing written" "$(ls "$TMP")"
else
    echo "SKIP checkpoint larger than the disk: $TMP has more than 800 GB free"; skip=$((skip + 1))
fi

# Without a GPU, --on-device on cuda fails with one clear line (with one, tools/device/run_flash43.sh runs it).
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    expect "no GPU: one error line" 1 "cuda" -- "$DSV4" bench --synthetic tiny --on-device --backend cuda
    grep -q "generated in GPU memory" "$TMP/err" && ok "says where the weights would be" ||
        bad "says where the weights would be" "$(cat "$TMP/err")"
else
    echo "SKIP no-GPU error: a GPU is present (tools/device/run_flash43.sh runs the on-device bench)"; skip=$((skip + 1))
fi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

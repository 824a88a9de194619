#!/usr/bin/env bash
# run_multi_gpu.sh — the multi-GPU acceptance run of tensor/expert parallelism (docs/MULTI_GPU.md), for a
# machine with N >= 2 GPUs (device `run` tool, kind nvidia-h200-x2 / -x4 / -x8, carry [".devlibs"]):
#   1. machine, NCCL library (from torch's nvidia/nccl wheel, put on LD_LIBRARY_PATH; dlopen'ed by dsv4),
#      NCCL_NVLS_ENABLE as the machine sets it (never changed here), build
#   2. communicator: tests/unit/test_comm (NCCL collectives on 2, 4, ... GPUs against the rank-order
#      reference) and the collective time of one V4-Flash decode step at batch 1/8/32/128
#   3. tiny models on N GPUs vs 1 GPU: logits (rel-L2, argmax) and 64 greedy tokens, `dsv4 logits --backend
#      cuda --gpus N` against `--gpus 1`; plus the N-rank CPU forward against the 1-GPU CUDA forward
#   4. synthetic V4-Flash-shaped model generated directly in GPU memory (all 43 layers, as many of the 256
#      experts as fit): decode tokens/s at batch 1/8/32/128 and prefill tokens/s, each with the ratio to the
#      HBM roofline of N GPUs and the collective time per step
# Steps 3 (CUDA part) and 4 need the multi-GPU CUDA forward, which is a TODO (docs/MULTI_GPU.md): until it
# exists they print "not available" and the run still reports steps 1-2 and the CPU part of 3.
# Logs go to $OUT; a summary is printed last.
#   usage: bash tools/device/run_multi_gpu.sh [N]      (N: GPUs to use, default all visible)
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/dsv4_out}
mkdir -p "$OUT"
t0=$(date +%s)
step() { echo "== [$(( $(date +%s) - t0 ))s] $*"; }
summary=""
note() { summary="$summary\n$*"; }
[ -f tools/device/devlibs_env.sh ] && . tools/device/devlibs_env.sh
B=build/release

step "machine"
nvidia-smi --query-gpu=index,name,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee "$OUT/gpus.txt"
nvidia-smi topo -m >"$OUT/topo.txt" 2>&1 || true
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
N=${1:-$NGPU}
echo "GPUs visible: $NGPU, using N = $N; NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE-<unset>} (left as the machine sets it)"
if [ "$N" -lt 2 ]; then echo "this script needs >= 2 GPUs"; exit 1; fi

step "NCCL library"
NCCL_DIR=$(python3 - <<'PY' 2>/dev/null
import os
try:
    import nvidia.nccl, os.path
    p = list(nvidia.nccl.__path__)[0]
    print(os.path.join(p, "lib"))
except Exception:
    pass
PY
)
if [ -n "$NCCL_DIR" ] && [ -f "$NCCL_DIR/libnccl.so.2" ]; then
    export LD_LIBRARY_PATH="$NCCL_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "libnccl: $NCCL_DIR/libnccl.so.2"
else
    echo "no nvidia/nccl wheel found; relying on the loader path for libnccl.so.2"
fi

step "build (make -j16 all)"
if ! make -j16 all >"$OUT/build.log" 2>&1; then
    grep -E "error" "$OUT/build.log" | head -10
    make -k -j16 all >>"$OUT/build.log" 2>&1
fi
ls $B/dsv4 $B/tests/unit/test_comm >/dev/null || { echo "build failed"; exit 1; }

step "2. communicator: NCCL collectives + Flash decode-step collective time"
CUDA_VISIBLE_DEVICES=$(seq -s, 0 $((N - 1))) timeout 300 $B/tests/unit/test_comm >"$OUT/comm.log" 2>&1
echo "test_comm rc=$?"; cat "$OUT/comm.log"
note "test_comm: $(tail -1 "$OUT/comm.log")"
summary="$summary\n$(grep '^csv,' "$OUT/comm.log")"

step "3. tiny models: N ranks vs 1"
ids=$(seq 3 7 460 | paste -sd, -)     # 66 tokens: prefill 2, then 64 teacher-forced decode positions
for m in tiny-flash tiny-pro; do
    for n in 2 4 8; do
        [ "$n" -le "$N" ] || continue
        # CPU: N rank threads vs 1 (what CI also checks), as a reference point on this machine
        timeout 120 $B/dsv4 logits --model tests/data/$m --tokens "$ids" --prefill 2 --gpus $n --out "$OUT/${m}_cpu$n.npy" \
            >"$OUT/${m}_cpu$n.log" 2>&1 || { echo "$m cpu --gpus $n: $(tail -1 "$OUT/${m}_cpu$n.log")"; continue; }
        # CUDA: 1 GPU vs N GPUs
        timeout 120 $B/dsv4 logits --model tests/data/$m --tokens "$ids" --prefill 2 --backend cuda \
            --out "$OUT/${m}_cuda1.npy" >"$OUT/${m}_cuda1.log" 2>&1
        if timeout 120 $B/dsv4 logits --model tests/data/$m --tokens "$ids" --prefill 2 --backend cuda --gpus $n \
            --out "$OUT/${m}_cuda$n.npy" >"$OUT/${m}_cuda$n.log" 2>&1; then
            cmp=cuda$n
        else
            echo "$m cuda --gpus $n: not available ($(tail -1 "$OUT/${m}_cuda$n.log"))"
            cmp=cpu$n
        fi
        python3 - "$OUT/${m}_cuda1.npy" "$OUT/${m}_$cmp.npy" "$m" "$cmp" <<'PY' | tee -a "$OUT/tiny_compare.txt"
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
rel = np.linalg.norm(a - b, axis=-1) / np.linalg.norm(a, axis=-1)
same = (a.argmax(-1) == b.argmax(-1))
print(f"{sys.argv[3]} {sys.argv[4]} vs cuda 1 GPU: rows {len(rel)} rel-L2 mean {rel.mean():.2e} max {rel.max():.2e}, "
      f"greedy (argmax, teacher forced) equal {same.sum()}/{len(same)}")
PY
    done
done
[ -f "$OUT/tiny_compare.txt" ] && summary="$summary\n$(cat "$OUT/tiny_compare.txt")"

step "4. synthetic Flash shapes in GPU memory on N GPUs: decode batch 1/8/32/128, prefill"
if $B/dsv4 bench --help 2>&1 | grep -q -- "--gpus"; then
    for bs in 1 8 32 128; do
        timeout 300 $B/dsv4 bench --backend cuda --gpus "$N" --synthetic flash-shapes --layers 43 --experts 256 \
            --fit-experts --decode-batch $bs --roofline --collectives >"$OUT/bench_b$bs.log" 2>&1
        echo "batch $bs rc=$?: $(grep -E 'tokens/s|roofline|collective' "$OUT/bench_b$bs.log" | tr '\n' ' ')"
        note "bench decode batch $bs: $(grep -E 'tokens/s' "$OUT/bench_b$bs.log" | head -1)"
    done
    timeout 300 $B/dsv4 bench --backend cuda --gpus "$N" --synthetic flash-shapes --layers 43 --experts 256 \
        --fit-experts --prefill 4096 --roofline --collectives >"$OUT/bench_prefill.log" 2>&1
    note "bench prefill: $(grep -E 'tokens/s' "$OUT/bench_prefill.log" | head -1)"
else
    echo "not available: dsv4 bench has no multi-GPU CUDA mode yet (the multi-GPU CUDA forward is the TODO of"
    echo "docs/MULTI_GPU.md); the collective time per decode step is in step 2 above"
    note "synthetic Flash bench: not available (multi-GPU CUDA forward TODO)"
fi

step "summary"
echo -e "$summary"

#!/usr/bin/env bash
# config.sh — absurd config.json values that once sized loops or allocations (hc_sinkhorn_iters 2^30,
# n_routed_experts 2^30 in `inspect --config`, heads x head_dim overflowing int) and values this engine
# cannot run: each is refused at load naming the key and the limit (include/dsv4_limits.h).
. "$(dirname "$0")/lib.sh"
have_python || { skipped "all (no python3 to build fixtures)"; finish; exit $?; }
cfg() {   # cfg NAME KEY=JSON: a config.json of the tiny checkpoint with one key changed, at $tmp/NAME.json
    python3 - "$TINY/config.json" "$tmp/$1.json" "$2" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); k, v = sys.argv[3].split("=", 1); c[k] = json.loads(v)
json.dump(c, open(sys.argv[2], "w"))
PY
}
while IFS='|' read -r name kv pat; do
    cfg "$name" "$kv"
    hostile "inspect --config: $kv" 30 "$pat" -- "$DSV4" inspect --config "$tmp/$name.json"
done <<'EOF2'
sinkhorn|hc_sinkhorn_iters=1073741824|hc_sinkhorn_iters" = 1073741824 is out of range \[1, 100\]
experts|n_routed_experts=1073741824|n_routed_experts" = 1073741824 is out of range \[1, 1024\]
topk|num_experts_per_tok=64|num_experts_per_tok" = 64 is out of range \[1, 16\]
heads|num_attention_heads=2097152|num_attention_heads" = 2097152 is out of range
headdim|head_dim=1073741824|head_dim" = 1073741824 is out of range
vocab|vocab_size=2147483647|vocab_size" = 2147483647 is out of range
hc|hc_mult=64|hc_mult" = 64 is out of range
idx|index_head_dim=192|only 128 is implemented
ratio|compress_ratios=[0,0,4,1048576,0]|compress_ratios"\[3\] must be an integer in \[0, 1024\]
maxpos|max_position_embeddings=1099511627776|max_position_embeddings" = 1099511627776 is out of range
layers|num_hidden_layers=100000|num_hidden_layers" = 100000 exceeds the maximum
neg|moe_intermediate_size=-128|moe_intermediate_size" = -128 is out of range
huge_real|hidden_size=1e300|hidden_size" = 1e\+300 is out of range
EOF2
mkfix "$tmp/ck_sinkhorn" --config hc_sinkhorn_iters=1073741824
hostile "generate: hc_sinkhorn_iters 2^30" 30 "hc_sinkhorn_iters" -- \
    "$DSV4" generate --model "$tmp/ck_sinkhorn" --prompt-ids 1,2 -n 1
mkfix "$tmp/ck_experts" --config n_routed_experts=1073741824
hostile "inspect --model: n_routed_experts 2^30" 30 "n_routed_experts" -- "$DSV4" inspect --model "$tmp/ck_experts"
finish

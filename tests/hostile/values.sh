#!/usr/bin/env bash
# values.sh — hostile values inside tensors (tests/hostile/mkfixture.py patches a copy of the tiny
# checkpoint): a hash-routing id outside the experts, an e8m0 scale 0xFF (NaN), NaN / Inf weights in a norm,
# the embedding, an expert and the LM head. Load-time checks refuse the first ones; the rest fail the step
# with an error naming where the non-finite value appeared. Never rc 134, never token 0 forever.
. "$(dirname "$0")/lib.sh"
have_python || { skipped "all (no python3 to build fixtures)"; finish; exit $?; }
GEN=("$DSV4" generate --prompt-ids 5,17,42,99 -n 4 --model)

mkfix "$tmp/tid" --patch layers.0.ffn.gate.tid2eid 80 0900000000000000
hostile "tid2eid id 9 of 8 experts" 60 "tid2eid: token 5, slot 0 holds expert id 9" -- "${GEN[@]}" "$tmp/tid"
mkfix "$tmp/tidneg" --patch layers.1.ffn.gate.tid2eid 0 ffffffffffffffff
hostile "tid2eid id -1" 60 "expert id -1" -- "${GEN[@]}" "$tmp/tidneg"
mkfix "$tmp/e8m0" --patch layers.1.attn.wq_a.scale 0 ff
hostile "e8m0 scale 0xFF" 60 "0xFF \\(NaN\\)" -- "${GEN[@]}" "$tmp/e8m0"
mkfix "$tmp/e8m0x" --patch layers.2.ffn.experts.3.w1.scale 5 ff
hostile "expert e8m0 scale 0xFF" 60 "experts.3.w1.scale.*0xFF" -- "${GEN[@]}" "$tmp/e8m0x"
mkfix "$tmp/norm" --patch norm.weight 0 c07f
hostile "NaN in the final norm" 60 "norm.weight: element 0 is NaN" -- "${GEN[@]}" "$tmp/norm"
mkfix "$tmp/hc" --patch layers.3.hc_ffn_scale 0 0000807f
hostile "Inf in hc_ffn_scale" 60 "hc_ffn_scale: element 0 is infinite" -- "${GEN[@]}" "$tmp/hc"
mkfix "$tmp/embed" --patch embed.weight $((42 * 512 + 6)) c07f
hostile "NaN in the embedding row of a prompt token" 60 "non-finite value \\(NaN\\) after the embedding" -- "${GEN[@]}" "$tmp/embed"
mkfix "$tmp/head" --patch head.weight 0 c07fc07fc07fc07f
hostile "NaN in the LM head" 60 "non-finite logit \\(NaN\\) from the LM head" -- "${GEN[@]}" "$tmp/head"
hostile "NaN in the LM head (logits)" 60 "non-finite logit" -- \
    "$DSV4" logits --model "$tmp/head" --tokens 5,17,42 --prefill 3 --out "$tmp/l.npy"
mkfix "$tmp/shared" --patch layers.2.ffn.shared_experts.w2.weight 0 7f7f7f7f7f7f7f7f
hostile "e4m3 NaN in a shared expert" 60 "layer 2 after moe" -- "${GEN[@]}" "$tmp/shared"
mkfix "$tmp/wq" --patch layers.0.attn.wq_a.weight 0 7f7f7f7f
hostile "e4m3 NaN in attention" 60 "layer 0 after attention" -- "${GEN[@]}" "$tmp/wq"
# row 128 of [2 x 128, 256]: the current window's half, used by the first entry (window of 4 tokens)
mkfix "$tmp/cmp" --patch layers.1.attn.indexer.compressor.wkv.weight 65536 c07fc07f
hostile "NaN in a CSA indexer compressor (fuzz_checkpoint finding: KV codec assert)" 60 \
    "layer 1 in the indexer compressor" -- "${GEN[@]}" "$tmp/cmp"
mkfix "$tmp/iq" --patch layers.3.attn.indexer.wq_b.weight 0 7f7f7f7f
hostile "e4m3 NaN in the indexer query projection" 60 "layer 3 after the indexer query" -- "${GEN[@]}" "$tmp/iq"
finish

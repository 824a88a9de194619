#!/usr/bin/env bash
# format.sh — format rules: two tensors aliasing one byte range (the safetensors format requires
# non-overlapping ranges), a prompt longer than max_position_embeddings, a NUL byte inside a role or a tool
# name, and a chat input line holding a NUL byte (refused, never cut short silently).
. "$(dirname "$0")/lib.sh"
if have_python; then
    mkfix "$tmp/alias" --alias layers.0.attn_norm.weight layers.0.ffn_norm.weight
    hostile "two tensors aliasing one byte range" 30 "overlap tensor layers.0.attn_norm.weight|overlap tensor layers.0.ffn_norm.weight" -- \
        "$DSV4" generate --model "$tmp/alias" --prompt-ids 1,2 -n 1
    hostile "inspect: aliasing tensors" 30 "overlap" -- "$DSV4" inspect --model "$tmp/alias"
    mkfix "$tmp/maxpos" --config max_position_embeddings=8
    hostile "prompt beyond max_position_embeddings" 30 "max_position_embeddings = 8" -- \
        "$DSV4" generate --model "$tmp/maxpos" --prompt-ids 1,2,3,4,5,6,7,8,9 -n 1
    hostile "prompt + -n beyond max_position_embeddings" 30 "max_position_embeddings = 8" -- \
        "$DSV4" generate --model "$tmp/maxpos" --prompt-ids 1,2,3,4,5,6 -n 4
    hostile "logits beyond max_position_embeddings" 30 "max_position_embeddings = 8" -- \
        "$DSV4" logits --model "$tmp/maxpos" --tokens 1,2,3,4,5,6,7,8,9,10 --prefill 4 --out "$tmp/l.npy"
else
    skipped "fixture cases (no python3)"
fi
printf '[{"role":"user\\u0000x","content":"hi"}]' >"$tmp/nulrole.json"
hostile "NUL inside a role" 20 "role contains a NUL byte" -- "$DSV4" chat-template --messages "$tmp/nulrole.json"
printf '[{"role":"user","content":"hi"},{"role":"assistant","content":"","tool_calls":[{"type":"function","function":{"name":"ls\\u0000rm","arguments":"{}"}}]}]' >"$tmp/nultool.json"
hostile "NUL inside a tool-call name" 20 "tool call name contains a NUL byte" -- \
    "$DSV4" chat-template --messages "$tmp/nultool.json"
printf '{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"a\\u0000b"}}]}' >"$tmp/nuldef.json"
hostile "NUL inside a tool definition's name" 20 "tool name contains a NUL byte" -- \
    "$DSV4" chat-template --messages "$tmp/nuldef.json"
TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -n "$TOK" ] && [ -f "$TOK" ]; then
    printf 'hello\0 and the rest\n' >"$tmp/nul_line"
    hostile "chat line holding a NUL byte" 60 "contains a NUL byte" -- \
        sh -c '"$1" chat --model "$2" --tokenizer "$3" -n 2 --temperature 0 <"$4"' _ "$DSV4" "$TINY" "$TOK" "$tmp/nul_line"
else
    skipped "chat NUL line (no tokenizer.json)"
fi
finish

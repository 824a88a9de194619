#!/usr/bin/env bash
# sizes.sh — absurd sizes on the command line: a KV capacity (--ctx) whose arena cannot fit in memory, a
# prompt that does not fit the --ctx given (refused before any compute, not after a wasted prefill with an
# internal KV message), and `generate -p` sizing its KV from the tokenized prompt when --ctx is not given.
. "$(dirname "$0")/lib.sh"
# the tiny checkpoint's 2^30-token arena is ~395 GB: refused where that is above 3/4 of memory (skipped on
# larger hosts rather than allocated)
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
if [ "${mem_kb:-0}" -gt 0 ] && [ "$mem_kb" -lt 500000000 ]; then
    hostile "--ctx 2^30 (a ~400 GB arena)" 30 "lower the KV capacity" -- \
        "$DSV4" generate --model "$TINY" --prompt-ids 1,2 -n 1 --ctx 1073741824
else
    skipped "--ctx 2^30 (this host has ${mem_kb} kB)"
fi
hostile "--prompt-ids longer than --ctx" 30 "the context holds 4 \\(--ctx 4\\)" -- \
    "$DSV4" generate --model "$TINY" --prompt-ids 1,2,3,4,5,6 -n 1 --ctx 4
# -n beyond --ctx is not hostile: the answer stops with "context full" and exit 0 (tests/cli/test_cli_limits.sh)
TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -n "$TOK" ] && [ -f "$TOK" ]; then
    long=$(head -c 30000 /dev/zero | tr '\0' 'a' | sed 's/aaaaa/word /g')   # ~6000 words
    hostile "-p longer than --ctx, refused before prefill" 30 "the prompt is [0-9]+ tokens but the context holds 100" -- \
        "$DSV4" generate --model "$TINY" --tokenizer "$TOK" -p "$long" -n 1 --ctx 100
    # without --ctx (default 16384) every limit is still checked before the prefill:
    # here the model's max_position_embeddings (4000) refuses the ~6000-token prompt at once
    if have_python; then
        mkfix "$tmp/maxpos4k" --config max_position_embeddings=4000
        hostile "-p beyond max_position_embeddings, refused before prefill" 30 \
            "the prompt is [0-9]+ tokens, beyond the model's max_position_embeddings = 4000" -- \
            "$DSV4" generate --model "$tmp/maxpos4k" --tokenizer "$TOK" -p "$long" -n 1
    fi
else
    skipped "-p cases (no tokenizer.json)"
fi
finish

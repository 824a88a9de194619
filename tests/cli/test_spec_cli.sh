#!/usr/bin/env bash
# test_spec_cli.sh — `--spec K` (speculative decoding with the MTP block, issue 15) on generate and chat:
# greedy ids equal plain greedy decoding's for K = 1..3 on both tiny models (lengths past the 128-token
# window), with drafting forced on (--spec-cost 1) and adaptive; --stats reports the acceptance counts;
# sampled decoding with --spec runs, gives n tokens and is the same for the same seed; on the default model
# (text prompt, needs tokenizer.json) greedy -p and chat with --spec print what they print without; every
# unsupported use is refused with a message and exit 2 (or 1 for what only the engine can tell).
# Prints "N passed, N failed[, N skipped]".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ids=$(awk 'BEGIN { s = 12345; for (i = 0; i < 90; i++) { s = (s * 1103515245 + 12345) % 2147483648; printf("%s%d", i ? "," : "", s % 512) } }')
for m in tiny-flash tiny-pro; do
    "$DSV4" generate --model "tests/data/$m" --prompt-ids "$ids" -n 50 >"$tmp/plain" 2>"$tmp/plain.err"
    if [ $? -ne 0 ] || [ "$(tr ',' '\n' <"$tmp/plain" | wc -l)" -ne 50 ]; then bad "$m: plain greedy run"; cat "$tmp/plain.err"; continue; fi
    for K in 1 2 3; do
        if "$DSV4" generate --model "tests/data/$m" --prompt-ids "$ids" -n 50 --spec $K --spec-cost 1 --stats >"$tmp/spec" 2>"$tmp/spec.err" &&
           cmp -s "$tmp/plain" "$tmp/spec" && grep -q "speculative decoding: K $K" "$tmp/spec.err"; then
            ok "$m --spec $K: the plain greedy ids ($(grep -o '[0-9]* verification forwards' "$tmp/spec.err"))"
        else
            bad "$m --spec $K differs from plain greedy"; cat "$tmp/spec.err"; diff "$tmp/plain" "$tmp/spec" | head -5
        fi
    done
done
expect() { # expect RC PATTERN DESCRIPTION -- ARGS...
    local want=$1 pat=$2 what=$3; shift 4
    out=$("$DSV4" "$@" 2>&1); rc=$?
    if [ $rc -eq "$want" ] && echo "$out" | grep -q -- "$pat"; then ok "$what"; else bad "$what: rc $rc, '$out'"; fi
}
M=tests/data/tiny-flash
expect 2 "needs an integer in \\[0, 3\\]" "--spec 4 is refused" -- generate --model $M --prompt-ids 1,2,3 --spec 4
expect 2 "needs an integer in \\[0, 3\\]" "--spec x is refused" -- generate --model $M --prompt-ids 1,2,3 --spec x
expect 2 "needs a number" "--spec-cost x is refused" -- generate --model $M --prompt-ids 1,2,3 --spec 1 --spec-cost x
expect 1 "one rank" "--spec with --gpus 2 is refused by the engine" -- generate --model $M --prompt-ids 1,2,3 --spec 2 --gpus 2
# adaptive (the default cost): greedy ids unchanged, drafting turned off on a random model
"$DSV4" generate --model $M --prompt-ids "$ids" -n 20 >"$tmp/p20" 2>/dev/null
if "$DSV4" generate --model $M --prompt-ids "$ids" -n 20 --spec 3 --stats >"$tmp/ad" 2>"$tmp/ad.err" &&
   [ -s "$tmp/p20" ] && cmp -s "$tmp/p20" "$tmp/ad"; then
    ok "adaptive --spec 3: the plain greedy ids ($(grep -o '[0-9]* drafted' "$tmp/ad.err"))"
else bad "adaptive --spec 3 differs from plain greedy"; cat "$tmp/ad.err"; fi
# sampled: n tokens, the same for the same seed, with drafts verified by the rejection rule
samp() { "$DSV4" generate --model $M --prompt-ids "$ids" -n 24 --temperature 1.5 --top-k 8 --repetition-penalty 1.1 \
             --seed "$1" --spec 2 --spec-cost 1 --stats 2>"$tmp/s.err"; }
a=$(samp 11); b=$(samp 11); c=$(samp 12)
if [ -n "$a" ] && [ "$a" = "$b" ] && [ "$(echo "$a" | tr ',' '\n' | wc -l)" -eq 24 ] && grep -q "speculative decoding: K 2" "$tmp/s.err"; then
    ok "sampled --spec 2: 24 ids, the same for seed 11 twice ($(grep -o '[0-9]* accepted' "$tmp/s.err"))"
else bad "sampled --spec 2: '$a' vs '$b'"; cat "$tmp/s.err"; fi
[ "$a" != "$c" ] && ok "sampled --spec 2: another seed, other ids" || bad "sampled --spec 2: seeds 11 and 12 agree"
if [ "$("$DSV4" generate --model $M --prompt-ids 1,2,3 -n 5 --spec 0)" = "$("$DSV4" generate --model $M --prompt-ids 1,2,3 -n 5)" ]; then
    ok "--spec 0 is plain decoding"; else bad "--spec 0 differs"; fi
# Text prompts and chat on the embedded default model (its vocabulary is the tokenizer's).
skip=0
TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -z "$TOK" ] || [ ! -f "$TOK" ]; then
    echo "SKIP text prompts and chat with --spec: no tokenizer.json"; skip=1
else
    export DSV4_TOKENIZER="$TOK" XDG_CACHE_HOME="$tmp/cache"
    "$DSV4" generate -p "Hello" -n 6 --temperature 0 >"$tmp/t0" 2>"$tmp/t0.err"
    if "$DSV4" generate -p "Hello" -n 6 --temperature 0 --spec 2 --spec-cost 1 --stats >"$tmp/t1" 2>"$tmp/t1.err" &&
       [ -s "$tmp/t0" ] && cmp -s "$tmp/t0" "$tmp/t1" && grep -q "speculative decoding: K 2" "$tmp/t1.err"; then
        ok "generate -p greedy with --spec 2: the same text"
    else bad "generate -p greedy with --spec 2 differs"; cat "$tmp/t1.err"; fi
    printf 'Hi there\nHow are you?\n' | "$DSV4" chat -n 4 --temperature 0 >"$tmp/c0" 2>/dev/null
    if printf 'Hi there\nHow are you?\n' | "$DSV4" chat -n 4 --temperature 0 --spec 1 --spec-cost 1 >"$tmp/c1" 2>"$tmp/c1.err" &&
       [ -s "$tmp/c0" ] && cmp -s "$tmp/c0" "$tmp/c1"; then
        ok "chat greedy with --spec 1 (two turns, KV reuse): the same answers"
    else bad "chat with --spec 1 differs"; cat "$tmp/c1.err"; diff "$tmp/c0" "$tmp/c1" | head -5; fi
fi
if [ "$skip" -gt 0 ]; then echo "$pass passed, $fail failed, $skip skipped"; else echo "$pass passed, $fail failed"; fi
[ "$fail" -eq 0 ]

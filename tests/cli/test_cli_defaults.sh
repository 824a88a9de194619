#!/usr/bin/env bash
# test_cli_defaults.sh — consistent defaults across commands (issue 14 item 3): `tokenize` finds the
# tokenizer the way `generate` does (--model DIR's copy, the embedded default's copy, $DSV4_TOKENIZER,
# pip's package), `logits`, `inspect` and `bench` fall back to the embedded default model, `bench` picks
# cuda only when a GPU is visible, and `--backend cpu|cuda` is in the --help of every command that computes.
# Runs in a temporary $XDG_CACHE_HOME. Needs $DSV4; tokenizer cases need tokenizer.json (else skipped).
# Prints "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
export LC_ALL=C.UTF-8
pass=0; fail=0; skip=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export XDG_CACHE_HOME="$tmp/cache"
DEF="$XDG_CACHE_HOME/dsv4/default-tiny"

# ---- --backend cuda in every --help of a command that computes; bench's default says how it is chosen ----
for c in generate chat logits bench; do
    "$DSV4" $c --help | grep -q -- "--backend cpu|cuda" && ok "$c --help lists --backend cpu|cuda" ||
        bad "$c --help lacks --backend cpu|cuda"
done
"$DSV4" bench --help | grep -q "cuda when a GPU is visible, else cpu" && ok "bench --help: backend default explained" ||
    bad "bench --help: backend default"

# ---- logits without --model: the embedded default (written on first use) ----
"$DSV4" logits --tokens 5,6,7 --prefill 2 --out "$tmp/l.npy" >/dev/null 2>"$tmp/err"
rc=$?
shape=$(python3 -c 'import numpy, sys; print(numpy.load(sys.argv[1]).shape)' "$tmp/l.npy" 2>/dev/null)
[ $rc = 0 ] && [ "$shape" = "(2, 129280)" ] && grep -q "embedded default model" "$tmp/err" &&
    ok "logits without --model: the embedded default" || bad "logits default: rc=$rc shape=$shape $(head -c 300 "$tmp/err")"
"$DSV4" inspect >"$tmp/out" 2>"$tmp/err" && grep -q "^checkpoint: $DEF" "$tmp/out" &&
    ok "inspect without --model: the embedded default" || bad "inspect default: $(head -c 300 "$tmp/err")"
"$DSV4" bench --prompt-lens 8 --batches 1 --contexts 8 --decode-steps 1 --repeats 1 --warmup 0 --threads 1 \
    >"$tmp/out" 2>"$tmp/err"
rc=$?
if [ $rc = 0 ] && grep -q "$DEF" "$tmp/out"; then
    backend=$(grep -o 'backend [a-z]*' "$tmp/out" | head -1)
    if "$DSV4" --version | grep -q "not compiled in"; then
        [ "$backend" = "backend cpu" ] && ok "bench without --model / --backend: default model on the cpu (no CUDA)" ||
            bad "bench default backend without CUDA: $backend"
    else ok "bench without --model / --backend: default model, $backend"; fi
else bad "bench default: rc=$rc $(tail -c 300 "$tmp/err")"; fi

TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -z "$TOK" ] || [ ! -f "$TOK" ]; then
    echo "SKIP tokenizer lookup cases: no tokenizer.json"
    skip=$((skip + 3))
    echo "$pass passed, $fail failed, $skip skipped"
    [ "$fail" -eq 0 ]; exit
fi
want=$("$DSV4" tokenize --tokenizer "$TOK" --text "Hello world")
# the default checkpoint written above holds a copy of the tokenizer when one was found then; make sure
[ -f "$DEF/tokenizer.json" ] || cp "$TOK" "$DEF/tokenizer.json"
# no --tokenizer, no $DSV4_TOKENIZER, no python3 on the PATH: the default checkpoint's copy (as generate)
got=$(env -u DSV4_TOKENIZER PATH=/nonexistent "$DSV4" tokenize --text "Hello world" 2>"$tmp/err")
[ -n "$want" ] && [ "$got" = "$want" ] && ok "tokenize: the default checkpoint's tokenizer.json" ||
    bad "tokenize default copy: '$got' != '$want' $(head -c 200 "$tmp/err")"
mkdir -p "$tmp/ck" && cp -r tests/data/tiny-flash/. "$tmp/ck/" && cp "$TOK" "$tmp/ck/tokenizer.json"
got=$(env -u DSV4_TOKENIZER PATH=/nonexistent XDG_CACHE_HOME="$tmp/empty" "$DSV4" tokenize -m "$tmp/ck" --text "Hello world" 2>"$tmp/err")
[ "$got" = "$want" ] && ok "tokenize -m DIR: DIR/tokenizer.json" || bad "tokenize -m: '$got' $(head -c 200 "$tmp/err")"
got=$(env -u DSV4_TOKENIZER DSV4_TOKENIZER="$TOK" XDG_CACHE_HOME="$tmp/empty" "$DSV4" tokenize --text "Hello world" 2>"$tmp/err")
[ "$got" = "$want" ] && ok "tokenize: \$DSV4_TOKENIZER" || bad "tokenize env: '$got' $(head -c 200 "$tmp/err")"

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

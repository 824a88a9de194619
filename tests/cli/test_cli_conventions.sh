#!/usr/bin/env bash
# test_cli_conventions.sh — the CLI conventions of docs/CLI.md (issue 14 item 2, issue 13 "CLI parsing"):
# aliases (-m, --temp, -c/--ctx-size, -t, -n/--max-tokens, --name=value) give the same run as the long names,
# defaults shown in --help, `dsv4 --version`, "did you mean" for a mistyped command or option, --json of
# generate and inspect parsed back with python3, -f FILE and --system on generate, an option given twice is
# an error, an option's value that looks like an option is a value (`-p --model`), numbers parsed whole
# (`logits --threads x`), the threads range the pool's (1024). Runs on the embedded default model in a
# temporary $XDG_CACHE_HOME; cases that need tokenizer.json are skipped without one.
# Needs $DSV4. Prints "N passed, N failed, N skipped".
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

# expect NAME RC PATTERN -- command...   (exit code RC, stderr contains the fixed string PATTERN)
expect() {
    local name=$1 code=$2 pat=$3; shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    if [ "$rc" = "$code" ] && grep -qF -- "$pat" "$tmp/err"; then ok "$name"
    else bad "$name (rc=$rc, stderr: $(head -c 300 "$tmp/err"))"; fi
}
is_json() { python3 -c 'import json, sys; json.load(open(sys.argv[1]))' "$1" 2>/dev/null; }

# ---- --version ----
v=$("$DSV4" --version); rc=$?
[[ $rc = 0 && "$v" =~ ^dsv4\ [0-9]+\.[0-9]+\.[0-9]+\ \(git\ [0-9a-f]{7,}(-dirty)?\),\ CUDA\ backend\ (compiled\ in|not\ compiled\ in) ]] &&
    ok "--version: $v" || bad "--version: rc=$rc '$v'"

# ---- did you mean ----
expect "mistyped command" 2 "unknown command 'genrate'; did you mean 'generate'?" -- "$DSV4" genrate -p hi
expect "mistyped option" 2 "unknown option '--temprature'; did you mean '--temperature'?" -- "$DSV4" generate -p hi --temprature 0
expect "mistyped option (chat)" 2 "did you mean '--thinking'?" -- "$DSV4" chat --thinkng
expect "mistyped option (inspect)" 2 "did you mean '--config'?" -- "$DSV4" inspect --confg x
expect "far from every name: no guess" 2 "unknown option '--bogus' (see dsv4 generate --help)" -- "$DSV4" generate -p hi --bogus

# ---- option parsing rules ----
expect "repeated option is an error" 2 "--model given twice" -- "$DSV4" generate -p hi -m a --model b
expect "repeated flag is an error" 2 "--stats given twice" -- "$DSV4" generate -p hi --stats --stats
expect "repeated --temp/--temperature" 2 "--temperature given twice" -- "$DSV4" generate -p hi --temp 1 --temperature 0
expect "threads above the pool's limit" 2 "-t needs an integer in [0, 1024], got '5000'" -- "$DSV4" generate -p hi -t 5000
expect "logits: threads not a number" 2 "--threads needs an integer in [0, 1024], got 'x'" -- \
    "$DSV4" logits --model tests/data/tiny-flash --tokens 1,2 --prefill 1 --out "$tmp/l.npy" --threads x
expect "logits: gpus not a number" 2 "--gpus needs an integer in [1, 1024], got '2x'" -- \
    "$DSV4" logits --model tests/data/tiny-flash --tokens 1,2 --prefill 1 --out "$tmp/l.npy" --gpus 2x
expect "bad --backend names the choices" 2 "--backend must be one of cpu|cuda, got 'tpu'" -- "$DSV4" generate -p hi --backend tpu
expect "flag with =value" 2 "--stats takes no value" -- "$DSV4" generate -p hi --stats=1
[ ! -e "$DEF" ] && ok "usage errors create nothing" || bad "usage errors created $DEF"

# ---- --help: one table, defaults shown, every spelling ----
"$DSV4" generate --help >"$tmp/h"
grep -q -- "-m, --model DIR" "$tmp/h" && grep -q -- "--temperature, --temp T" "$tmp/h" &&
    grep -q -- "-c, --ctx, --ctx-size N .*\[16384\]" "$tmp/h" && grep -q -- "-t, --threads N .*\[0\]" "$tmp/h" &&
    grep -q -- "-f, --file FILE" "$tmp/h" && grep -q -- "--system TEXT" "$tmp/h" && grep -q -- "--json" "$tmp/h" &&
    grep -q -- "-n, --max-tokens N .*\[256; --prompt-ids: 16\]" "$tmp/h" && ok "generate --help: aliases and defaults" ||
    bad "generate --help: $(head -c 600 "$tmp/h")"
"$DSV4" generate -p x --help | grep -q "usage: dsv4 generate" && ok "--help after a value" || bad "--help after a value"

# ---- inspect --json ----
"$DSV4" inspect --model tests/data/tiny-flash --json >"$tmp/i.json" 2>"$tmp/err"
rc=$?
if [ $rc = 0 ] && is_json "$tmp/i.json" && python3 - "$tmp/i.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["valid"] is True and d["tensors"] == 427, d
assert d["config"]["vocab_size"] == 512 and d["layers"]["hca"] == [2], d["layers"]
assert d["parameters"]["total"] > 0 and d["bytes_total"] > 0 and d["kv"]["bytes_per_token"] > 0
EOF
then ok "inspect --json parses and holds the summary"; else bad "inspect --json: rc=$rc $(head -c 300 "$tmp/err")"; fi
CFG=tests/data/configs/deepseek-v4-flash.config.json
if [ -f "$CFG" ]; then
    "$DSV4" inspect --config "$CFG" --gpus 4 --json >"$tmp/g.json" 2>/dev/null &&
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["gpu_plan"]["gpus"] == 4 and d["gpu_plan"]["routed_experts_per_gpu"] == 64' "$tmp/g.json" &&
        ok "inspect --config --gpus 4 --json: the plan" || bad "inspect --gpus --json: $(head -c 300 "$tmp/g.json")"
fi

# ---- generate --prompt-ids --json (no tokenizer needed) ----
"$DSV4" generate --prompt-ids 5,6,7 -n 4 --json >"$tmp/j1" 2>"$tmp/err"
rc=$?
if [ $rc = 0 ] && python3 - "$tmp/j1" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["choices"][0]
assert d["object"] == "text_completion" and d["model"].endswith("default-tiny")
assert len(c["tokens"]) == 4 and c["finish_reason"] == "length" and "text" not in c
assert d["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, d["usage"]
assert d["timings"]["prefill_s"] >= 0 and d["timings"]["decode_s"] >= 0
EOF
then ok "generate --prompt-ids --json"; else bad "generate --prompt-ids --json: rc=$rc $(head -c 300 "$tmp/err")"; fi
ids=$("$DSV4" generate --prompt-ids 5,6,7 -n 4 2>/dev/null)
want=$(python3 -c 'import json,sys; print(",".join(map(str, json.load(open(sys.argv[1]))["choices"][0]["tokens"])))' "$tmp/j1")
[ "$ids" = "$want" ] && ok "--json tokens = the streamed ids" || bad "--json tokens $want != $ids"

# ---- a value that looks like an option is a value ----
"$DSV4" generate --prompt-ids 5,6,7 -n 2 --stop --model >/dev/null 2>"$tmp/err"
grep -qF -- "--stop applies to -p TEXT only" "$tmp/err" && ok "'--stop --model': --model is the stop string" ||
    bad "'--stop --model': $(head -c 300 "$tmp/err")"

TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -z "$TOK" ] || [ ! -f "$TOK" ]; then
    echo "SKIP text cases (aliases, -f, --system, text --json): no tokenizer.json"
    skip=$((skip + 4))
    echo "$pass passed, $fail failed, $skip skipped"
    [ "$fail" -eq 0 ]; exit
fi
export DSV4_TOKENIZER="$TOK"

# ---- aliases: the same run as the long names ----
"$DSV4" generate --prompt Hello --max-tokens 6 --temperature 0 --ctx-size 64 --threads 1 --model "$DEF" >"$tmp/a1" 2>/dev/null
"$DSV4" generate -p Hello -n 6 --temp 0 -c 64 -t 1 -m "$DEF" >"$tmp/a2" 2>/dev/null
"$DSV4" generate -p Hello --max-tokens=6 --temp=0 --ctx=64 --threads=1 --model="$DEF" >"$tmp/a3" 2>/dev/null
[ -s "$tmp/a1" ] && cmp -s "$tmp/a1" "$tmp/a2" && cmp -s "$tmp/a1" "$tmp/a3" && ok "aliases and --name=value: same output" ||
    bad "aliases: '$(cat "$tmp/a1")' '$(cat "$tmp/a2")' '$(cat "$tmp/a3")'"

# ---- -p --model: the prompt is the text "--model" ----
"$DSV4" generate -p --model -n 3 --temp 0 --json >"$tmp/pm" 2>"$tmp/err"
rc=$?
[ $rc = 0 ] && is_json "$tmp/pm" && ok "'-p --model' is a prompt" || bad "'-p --model': rc=$rc $(head -c 300 "$tmp/err")"

# ---- -f FILE = -p TEXT; --system changes the prompt ----
printf 'Hello' >"$tmp/prompt.txt"
"$DSV4" generate -f "$tmp/prompt.txt" -n 6 --temp 0 >"$tmp/f1" 2>/dev/null
cmp -s "$tmp/a1" "$tmp/f1" && ok "-f FILE = -p TEXT" || bad "-f: '$(cat "$tmp/f1")' != '$(cat "$tmp/a1")'"
expect "-f missing file" 1 "-f: $tmp/none.txt: cannot open: No such file" -- "$DSV4" generate -f "$tmp/none.txt"
expect "-f and -p together" 2 "exactly one of -p TEXT, -f FILE and --prompt-ids" -- "$DSV4" generate -f "$tmp/prompt.txt" -p hi
"$DSV4" generate -p Hello --system "You are terse." -n 6 --temp 0 --json >"$tmp/s1" 2>/dev/null
p1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["usage"]["prompt_tokens"])' "$tmp/s1" 2>/dev/null)
"$DSV4" generate -p Hello -n 6 --temp 0 --json >"$tmp/s0" 2>/dev/null
p0=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["usage"]["prompt_tokens"])' "$tmp/s0" 2>/dev/null)
[ -n "$p1" ] && [ -n "$p0" ] && [ "$p1" -gt "$p0" ] && ok "--system adds a system turn ($p0 -> $p1 prompt tokens)" ||
    bad "--system: prompt tokens $p0 -> $p1"
expect "--system with --raw" 2 "--system needs the chat format" -- "$DSV4" generate -p hi --raw --system x

# ---- generate -p --json: text, tokens, usage, timings; the text is the streamed text ----
"$DSV4" generate -p Hello -n 6 --temp 0 --thinking --json >"$tmp/j2" 2>"$tmp/err"
"$DSV4" generate -p Hello -n 6 --temp 0 --thinking >"$tmp/t2" 2>/dev/null
if python3 - "$tmp/j2" "$tmp/t2" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["choices"][0]
streamed = open(sys.argv[2], encoding="utf-8").read()
assert streamed == "<think>" + c["reasoning_content"] + "</think>\n" + c["text"] + "\n", (streamed, c)
assert d["usage"]["completion_tokens"] == len(c["tokens"]) == 6 or c["finish_reason"] == "stop"
assert set(d["timings"]) >= {"prefill_s", "decode_s", "prefill_tokens_per_s", "decode_tokens_per_s"}
EOF
then ok "generate -p --json: text = the streamed text"; else bad "generate -p --json: $(head -c 400 "$tmp/j2")"; fi

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# test_cli_limits.sh — limits met cleanly (issue 14 item 4): generation that reaches the context (-c) stops
# with "context full (N tokens, --ctx N)", exit 0 and the text so far (a prefix of the unlimited run); a
# prompt larger than the context fails before any compute; chat says "context full" and asks for /reset
# (the conversation is never cut silently) and works again after /reset; Ctrl-C during generate closes the
# output (the dim colour reset on a terminal, the </think> tag otherwise) and exits 130; a wrong --model
# path says whether the directory is missing, is a file, or is not a checkpoint, and lists the files
# expected; a model whose vocabulary is smaller than the tokenizer's says to use --prompt-ids.
# Runs on the embedded default model in a temporary $XDG_CACHE_HOME. Needs $DSV4; text cases need
# tokenizer.json (else skipped). Prints "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
export LC_ALL=C.UTF-8
pass=0; fail=0; skip=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
export XDG_CACHE_HOME="$tmp/cache"

# expect NAME RC PATTERN -- command...   (exit code RC, stderr contains the fixed string PATTERN)
expect() {
    local name=$1 code=$2 pat=$3; shift 4
    "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
    if [ "$rc" = "$code" ] && grep -qF -- "$pat" "$tmp/err"; then ok "$name"
    else bad "$name (rc=$rc, stderr: $(head -c 300 "$tmp/err"))"; fi
}

# ---- wrong --model paths: which of missing / file / not a checkpoint, and the files expected ----
FILES="config.json, model.safetensors.index.json with its model-*.safetensors shards"
mkdir -p "$tmp/empty" "$tmp/cfgonly"
cp tests/data/tiny-flash/config.json "$tmp/cfgonly/"
for cmd in generate logits inspect bench; do
    case $cmd in
        generate) args=(--prompt-ids 1,2);;
        logits) args=(--tokens 1,2 --prefill 1 --out "$tmp/l.npy");;
        *) args=();;
    esac
    expect "$cmd: missing dir" 1 "--model $tmp/nope: no such directory" -- "$DSV4" $cmd -m "$tmp/nope" "${args[@]}"
    grep -qF "$FILES" "$tmp/err" && ok "$cmd: missing dir lists the files" || bad "$cmd: files not listed"
    expect "$cmd: a file" 1 "--model $tmp/cfgonly/config.json is a file, not a checkpoint directory" -- \
        "$DSV4" $cmd -m "$tmp/cfgonly/config.json" "${args[@]}"
    expect "$cmd: no config.json" 1 "--model $tmp/empty is a directory but not a checkpoint: it has no config.json" -- \
        "$DSV4" $cmd -m "$tmp/empty" "${args[@]}"
done
expect "generate: config.json but no weights" 1 "is a directory but not a checkpoint: it has no *.safetensors file" -- \
    "$DSV4" generate -m "$tmp/cfgonly" --prompt-ids 1,2

# ---- --prompt-ids reaching the context: ids up to the context, then the notice, exit 0 ----
"$DSV4" generate --prompt-ids 5,6,7 -n 100 -c 10 >"$tmp/o" 2>"$tmp/err"
rc=$?
n=$(tr ',' '\n' <"$tmp/o" | grep -c .)
[ $rc = 0 ] && [ "$n" = 8 ] && grep -qF "context full (10 tokens, --ctx 10)" "$tmp/err" &&
    ok "--prompt-ids: context full after 8 ids (3 + 7 fed + 1), exit 0" || bad "--prompt-ids context: rc=$rc n=$n $(tail -c 200 "$tmp/err")"
expect "prompt larger than the context" 1 "the prompt is 3 tokens but the context holds 3 (--ctx 3)" -- \
    "$DSV4" generate --prompt-ids 5,6,7 -n 4 -c 3

TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -z "$TOK" ] || [ ! -f "$TOK" ]; then
    echo "SKIP text cases (context full, chat, Ctrl-C, vocabulary): no tokenizer.json"
    skip=$((skip + 5))
    echo "$pass passed, $fail failed, $skip skipped"
    [ "$fail" -eq 0 ]; exit
fi
export DSV4_TOKENIZER="$TOK"

# ---- generate -p reaching the context: the text so far is a prefix of the unlimited (greedy) run ----
"$DSV4" generate -p Hello -n 20 -c 200 --temp 0 >"$tmp/full" 2>/dev/null
"$DSV4" generate -p Hello -n 20 -c 16 --temp 0 >"$tmp/cut" 2>"$tmp/err"
rc=$?
full=$(cat "$tmp/full"); cut=$(cat "$tmp/cut")
if [ $rc = 0 ] && [ -n "$cut" ] && [ "${full#"$cut"}" != "$full" ] && [ ${#cut} -lt ${#full} ] &&
    grep -qF "context full (16 tokens, --ctx 16)" "$tmp/err"; then ok "generate -p: context full, exit 0, the text so far"
else bad "generate -p context: rc=$rc cut='$cut' full='$full' $(tail -c 200 "$tmp/err")"; fi
"$DSV4" generate -p Hello -n 20 -c 16 --temp 0 --json >"$tmp/j" 2>/dev/null
python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["choices"][0]; assert c["finish_reason"] == "context_full", c' "$tmp/j" &&
    ok "--json: finish_reason context_full" || bad "--json finish_reason: $(head -c 300 "$tmp/j")"

# ---- chat: the full context is reported, /reset asked for, and works after /reset ----
printf 'Hi\nAgain\n/reset\nHi\n' | "$DSV4" chat -n 30 -c 16 --temp 0 --stats >"$tmp/c" 2>"$tmp/err"
rc=$?
if grep -qF "[context full: /reset to start a new conversation]" "$tmp/err" &&
    grep -qF "context full: the conversation with this message is" "$tmp/err" && grep -qF "/reset to start a new one" "$tmp/err" &&
    [ "$(grep -c '^prompt ' "$tmp/err")" = 2 ] && [ $rc = 1 ]; then ok "chat: context full -> /reset asked, 2 answers (before and after /reset)"
else bad "chat context: rc=$rc $(head -c 600 "$tmp/err")"; fi

# ---- a model whose vocabulary is smaller than the tokenizer's: use --prompt-ids ----
expect "vocabulary smaller than the tokenizer's" 1 "use \`dsv4 generate --prompt-ids IDS\` with ids below 512" -- \
    "$DSV4" generate -m tests/data/tiny-flash -p hi

# ---- Ctrl-C during generate: exit 130, the output closed ----
timeout --preserve-status -s INT 6 "$DSV4" generate -p Hello -n 100000 --thinking --temp 0 >"$tmp/int" 2>"$tmp/err"
rc=$?
if [ $rc = 130 ] && head -c 7 "$tmp/int" | grep -q "<think>" && grep -q "</think>" "$tmp/int" &&
    grep -q "interrupted" "$tmp/err"; then ok "Ctrl-C (not a terminal): exit 130, </think> closed"
else bad "Ctrl-C: rc=$rc $(head -c 200 "$tmp/int") $(tail -c 200 "$tmp/err")"; fi
# on a terminal: the reasoning is dimmed (ESC[2m) and Ctrl-C resets it (ESC[0m), terminal modes unchanged
python3 - "$DSV4" <<'EOF'
import os, pty, select, signal, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "generate", "-p", "Hello", "-n", "100000", "--thinking", "--temp", "0"])
before = termios.tcgetattr(fd)
out, t0, sent = b"", time.time(), False
while True:
    if not sent and (b"\x1b[2m" in out and len(out.split(b"\x1b[2m", 1)[1]) > 8 or time.time() - t0 > 30):
        os.kill(pid, signal.SIGINT); sent = True
    r, _, _ = select.select([fd], [], [], 0.2)
    if r:
        try: chunk = os.read(fd, 4096)
        except OSError: break
        if not chunk: break
        out += chunk
    if sent and time.time() - t0 > 60: break
_, status = os.waitpid(pid, 0)
after = termios.tcgetattr(fd) if True else None
dim = out.find(b"\x1b[2m")
ok = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 130 and dim >= 0 and out.find(b"\x1b[0m", dim) > dim
ok = ok and before == after
print("ok   Ctrl-C on a terminal: exit 130, ESC[0m after ESC[2m, terminal modes unchanged" if ok else
      "FAIL Ctrl-C on a terminal: status %r, output %r" % (status, out[-200:]))
sys.exit(0 if ok else 1)
EOF
[ $? = 0 ] && pass=$((pass + 1)) || fail=$((fail + 1))

echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]

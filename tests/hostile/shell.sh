#!/usr/bin/env bash
# shell.sh — the default-checkpoint paths come from $XDG_CACHE_HOME / $HOME, which may hold any bytes: quotes,
# `$(...)`, backticks, `;`. No shell ever sees them (the first run writes and cleans with the C library), so
# nothing is executed and the right directory is written. Also concurrency with files: an interrupted first
# run's orphaned temporary directory (its writer gone) is removed -- a symlink in it is unlinked, not
# followed -- a live writer's is kept, and an empty default directory is written again.
. "$(dirname "$0")/lib.sh"
canary=PWNED_dsv4_hostile
rm -f "$canary" "$tmp/$canary"
evil="$tmp/it's \"a\"; touch $canary; \$(touch $canary) \`touch $canary\` '"
mkdir -p "$evil"
run_default() {   # run_default ENV=VALUE: a 1-token generate on the default checkpoint
    env "$@" timeout 120 "$DSV4" generate --prompt-ids 1,2 -n 1 >"$tmp/out" 2>"$tmp/err" </dev/null
}
check_no_canary() {
    if [ -e "$canary" ] || [ -e "$tmp/$canary" ] || [ -e "$evil/$canary" ]; then bad "$1: a shell ran a command"
    else ok "$1: no command ran"; fi
}

run_default XDG_CACHE_HOME="$evil"; rc=$?
if [ "$rc" = 0 ] && [ -f "$evil/dsv4/default-tiny/config.json" ]; then ok "XDG_CACHE_HOME with shell syntax: written there"
else bad "XDG_CACHE_HOME with shell syntax: rc=$rc $(head -c 300 "$tmp/err")"; fi
check_no_canary "XDG_CACHE_HOME"
run_default XDG_CACHE_HOME= HOME="$evil"; rc=$?
if [ "$rc" = 0 ] && [ -f "$evil/.cache/dsv4/default-tiny/config.json" ]; then ok "HOME with shell syntax: written there"
else bad "HOME with shell syntax: rc=$rc $(head -c 300 "$tmp/err")"; fi
check_no_canary "HOME"

# orphans: a dead writer's temporary directory (with a symlink out of it) goes; a live writer's stays
c="$tmp/cache2/dsv4"; mkdir -p "$c" "$tmp/outside"; echo keep >"$tmp/outside/keep.txt"
dead="$c/.default-tiny.tmp.2147483646.AbCdEf"; live="$c/.default-tiny.tmp.$$.GhIjKl"
mkdir -p "$dead/sub" "$live"; echo x >"$dead/sub/partial.safetensors"; ln -s "$tmp/outside" "$dead/escape"
run_default XDG_CACHE_HOME="$tmp/cache2"; rc=$?
if [ "$rc" = 0 ] && ! [ -e "$dead" ] && [ -f "$tmp/outside/keep.txt" ] && [ -d "$live" ]; then
    ok "orphaned temporary directory removed, symlink target and live writer's directory kept"
else bad "orphans: rc=$rc dead=$( [ -e "$dead" ] && echo left) live=$( [ -d "$live" ] && echo kept || echo removed) $(head -c 300 "$tmp/err")"; fi

# an empty default directory is written again
c="$tmp/cache3"; mkdir -p "$c/dsv4/default-tiny"
run_default XDG_CACHE_HOME="$c"; rc=$?
if [ "$rc" = 0 ] && [ -f "$c/dsv4/default-tiny/config.json" ]; then ok "empty default directory repaired"
else bad "empty default directory: rc=$rc $(head -c 300 "$tmp/err")"; fi
# an orphan next to a default that another run completed is removed too
mkdir -p "$c/dsv4/.default-tiny.tmp.2147483645.XyZxYz"
run_default XDG_CACHE_HOME="$c"; rc=$?
if [ "$rc" = 0 ] && ! [ -e "$c/dsv4/.default-tiny.tmp.2147483645.XyZxYz" ]; then ok "orphan beside a complete default removed"
else bad "orphan beside a complete default: rc=$rc $(head -c 300 "$tmp/err")"; fi
# a non-empty default directory without config.json is not deleted: a clear error instead
c="$tmp/cache4"; mkdir -p "$c/dsv4/default-tiny"; echo mine >"$c/dsv4/default-tiny/notes.txt"
hostile "default directory holding someone's files" 60 "holds no config.json" -- \
    env XDG_CACHE_HOME="$c" "$DSV4" generate --prompt-ids 1,2 -n 1
[ -f "$c/dsv4/default-tiny/notes.txt" ] && ok "their files kept" || bad "their files were removed"
finish

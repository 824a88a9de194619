#!/usr/bin/env bash
# test_layering.sh — the layering of docs/ARCHITECTURE.md ("Layering") as the build enforces it:
#   (a) the CLI's compile flags (`make print-tool-cflags`: -Iinclude -Itools/dsv4) reject an internal header
#       ("engine/model.h", "core/status.h") and accept every public header of include/, each on its own;
#   (b) includes between src/ folders point down only: every `#include "..."` of a file under src/ names its
#       own folder, a folder of the ALLOWED table below, or a public header whose owning folder (OWNER) is
#       in that table. A failure names the file, the include line and the missing arrow.
# Needs make and a C compiler ($CC, default cc); not $DSV4. Prints "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
pass=0; fail=0
ok() { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }
TMP=$(mktemp -d /tmp/dsv4_test_layering_XXXXXX)
trap 'rm -rf "$TMP"' EXIT
CC=${CC:-cc}

# ---- (b)'s tables: which folder may include which (besides itself), and who owns each public header ----
# kv -> backend/cpu: the KV codec encodes with the CPU reference's FP8/FP4 quantizers (kv_codec.c).
# backend/cuda -> model: the device weight generator runs model/synth_hash.h's value rules (cuda_synth.h).
declare -A ALLOWED=(
    [core]=""
    [model]="core"
    [tokenizer]="core"
    [dist]="core"
    [backend/cpu]="core"
    [backend/cuda]="core model"
    [kv]="core model backend/cpu"
    [engine]="core model tokenizer kv dist backend/cpu backend/cuda"
    [server]="core tokenizer engine"
)
declare -A OWNER=(
    [dsv4_status.h]=core [dsv4_files.h]=core [dsv4_npy.h]=core [dsv4_limits.h]=core
    [dsv4_config.h]=model [dsv4_synth.h]=model
    [dsv4_tokenizer.h]=tokenizer [dsv4_chat.h]=tokenizer
    [dsv4.h]=engine [dsv4_sampler.h]=engine [dsv4_bench.h]=engine [dsv4_inspect.h]=engine
    [dsv4_server.h]=server
)

# ---- (a) the CLI's include paths -----------------------------------------------------------------------
variant=$(basename "${DSV4_BUILD:-build/asan}")
if ! FLAGS=$(make -s --no-print-directory print-tool-cflags VARIANT="$variant" 2>"$TMP/make.err"); then
    bad tool-cflags "make print-tool-cflags failed: $(tail -n 2 "$TMP/make.err")"
    FLAGS=""
fi
case " $FLAGS " in
    *" -Isrc "*) bad tool-cflags-no-src "the CLI's flags include -Isrc: $FLAGS" ;;
    *" -Iinclude "*) ok tool-cflags-public-only ;;
    *) bad tool-cflags-public-only "the CLI's flags lack -Iinclude: $FLAGS" ;;
esac

# probe NAME WANT(0 compiles, 1 fails) HEADER...: compiles a file including the headers with the CLI's flags
probe() {
    local name=$1 want=$2; shift 2
    local src="$TMP/$name.c" h
    : >"$src"
    for h in "$@"; do echo "#include \"$h\"" >>"$src"; done
    echo "int layering_probe(void);" >>"$src"
    # shellcheck disable=SC2086
    if $CC $FLAGS -fsyntax-only "$src" >"$TMP/$name.log" 2>&1; then got=0; else got=1; fi
    if [ "$got" -ne "$want" ]; then
        bad "$name" "$([ "$want" -eq 1 ] && echo "compiled, expected an error" || echo "does not compile: $(grep -m 2 'error' "$TMP/$name.log")")"
    elif [ "$want" -eq 1 ] && ! grep -qE "No such file|file not found" "$TMP/$name.log"; then
        bad "$name" "failed for another reason than the missing path: $(grep -m 2 'error' "$TMP/$name.log")"
    else
        ok "$name"
    fi
}
probe tool-rejects-engine-model 1 engine/model.h
probe tool-rejects-core-status 1 core/status.h
probe tool-rejects-tokenizer-internal 1 tokenizer/pretok.h
public=()
for h in include/*.h; do
    h=${h#include/}
    public+=("$h")
    probe "public-${h%.h}" 0 "$h"
    [ -n "${OWNER[$h]:-}" ] || bad "owner-${h%.h}" "include/$h has no owning folder in OWNER (test_layering.sh)"
done
probe public-all 0 "${public[@]}"

# ---- (b) downward-only includes between src/ folders ---------------------------------------------------
folder_of() { # src/backend/cuda/kernels/x.cu -> backend/cuda; src/kv/x.c -> kv
    local p=${1#src/}
    case $p in backend/*) echo "$p" | cut -d/ -f1-2 ;; *) echo "${p%%/*}" ;; esac
}
# scan ROOT: prints "FILE: LINE: FROM -> TO" for each include under ROOT/src that is not an allowed arrow
# (or "FILE: folder FROM not in the table"), then "arrows N" (cross-folder includes seen).
scan() {
    local root=$1 f from line inc to n=0
    while read -r f; do
        from=$(folder_of "${f#"$root"/}")
        if [ -z "${ALLOWED[$from]+x}" ]; then echo "${f#"$root"/}: folder $from is not in the ALLOWED table"; continue; fi
        while IFS= read -r line; do
            inc=$(sed 's/.*"\(.*\)".*/\1/' <<<"$line")
            if [ -f "$root/include/$inc" ]; then to=${OWNER[$inc]:-?}
            elif [ -f "$root/src/$inc" ]; then to=$(folder_of "src/$inc")
            else continue   # a header next to the includer (same folder)
            fi
            [ "$to" = "$from" ] && continue
            n=$((n + 1))
            case " ${ALLOWED[$from]} " in
                *" $to "*) ;;
                *) echo "${f#"$root"/}: $line: $from -> $to" ;;
            esac
        done < <(grep -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*"' "$f")
    done < <(find "$root/src" -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) | sort)
    echo "arrows $n"
}
scan . >"$TMP/scan.txt"
arrows=$(sed -n 's/^arrows //p' "$TMP/scan.txt")
if grep -v '^arrows ' "$TMP/scan.txt" >"$TMP/violations.txt"; then
    while IFS= read -r v; do bad "src-arrow" "$v (not in the ALLOWED table of tests/cli/test_layering.sh)"; done <"$TMP/violations.txt"
else
    ok "src-includes-point-down ($arrows cross-folder includes checked)"
fi
[ "${arrows:-0}" -gt 0 ] || bad src-includes-found "no cross-folder include found under src/ (is the scan broken?)"

# The scan discriminates: an upward include (core -> the engine's dsv4.h) and a sideways one (the CUDA op
# library -> a CPU backend header) planted in a small tree are both reported, and nothing else.
P=$TMP/planted
mkdir -p "$P/include" "$P/src/core" "$P/src/backend/cpu" "$P/src/backend/cuda"
: >"$P/include/dsv4.h"; : >"$P/include/dsv4_status.h"; : >"$P/src/backend/cpu/ops.h"
printf '#include "dsv4_status.h"\n#include "dsv4.h"\n' >"$P/src/core/status.h"
printf '#include "backend/cpu/ops.h"\n#include "dsv4_status.h"\n' >"$P/src/backend/cuda/ops_cuda.h"
scan "$P" | grep -v '^arrows ' >"$TMP/planted.txt"
if [ "$(wc -l <"$TMP/planted.txt")" -eq 2 ] && grep -q '^src/core/status.h: #include "dsv4.h": core -> engine$' "$TMP/planted.txt" &&
   grep -q '^src/backend/cuda/ops_cuda.h: #include "backend/cpu/ops.h": backend/cuda -> backend/cpu$' "$TMP/planted.txt"; then
    ok planted-violations-reported
else
    bad planted-violations-reported "got: $(tr '\n' ';' <"$TMP/planted.txt")"
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]

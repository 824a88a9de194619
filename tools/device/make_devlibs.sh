#!/usr/bin/env bash
# make_devlibs.sh — run HERE (the dev box), once per session: copies the Debian libraries dsv4 links against
# (jansson, pcre2-8, microhttpd, libedit) and their non-libc dependencies, plus their headers, into
# .devlibs/ in the repo root, so that the GPU machine (which lacks them) can compile and link dsv4.
# .devlibs/ is ignored through .git/info/exclude and travels only with `run(..., carry=[".devlibs"])`.
# On the GPU machine: `source tools/device/devlibs_env.sh` before `make`.
set -eu
cd "$(dirname "$0")/../.."
mkdir -p "$(git rev-parse --git-path info)"; exc=$(git rev-parse --git-path info/exclude)
grep -qx '/.devlibs/' "$exc" 2>/dev/null || echo '/.devlibs/' >> "$exc"
rm -rf .devlibs && mkdir -p .devlibs/lib .devlibs/include
libs="libjansson.so.4 libpcre2-8.so.0 libmicrohttpd.so.12 libedit.so.2"
# the closure of their shared-library dependencies, minus glibc's own libraries (present everywhere)
deps=$(for l in $libs; do ldd /usr/lib/x86_64-linux-gnu/$l | awk '/=>/ {print $3}'; done | sort -u |
       grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so')
for f in $(for l in $libs; do echo /usr/lib/x86_64-linux-gnu/$l; done) $deps; do
    cp -L "$f" .devlibs/lib/$(basename "$f")
done
cp /usr/include/jansson.h /usr/include/jansson_config.h /usr/include/pcre2.h /usr/include/microhttpd.h \
   /usr/include/histedit.h .devlibs/include/
cp -r /usr/include/editline .devlibs/include/
du -sh .devlibs; ls .devlibs/lib

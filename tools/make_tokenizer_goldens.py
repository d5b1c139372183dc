#!/usr/bin/env python3
"""Golden data for the tokenizer tests, produced by HF `tokenizers` (the oracle) on the real V4
tokenizer.json. Writes, under testdata/tokenizer/:

  v4_encode_goldens.jsonl     (or NAME_encode_goldens.jsonl with --name) line 1: {"meta": ...}; then one case per line:
      {"label", "text" | "bytes_hex", "ids", "decoded"}  encode cases. "bytes_hex" cases are random
          byte strings; their ids are HF's ids of bytes.decode("utf-8", "replace"), which is what
          dsv4 documents for invalid UTF-8 input. "decoded" is HF decode(ids) (specials kept).
      {"label": "decode", "decode_ids", "decoded", "decoded_skip"}  random id lists (any id in the
          vocab, so partial UTF-8 shows) with HF decode(ids, skip_special_tokens=False / True).
  v4_pretokenizer_classes.txt  for every Unicode scalar value, the piece lengths HF's pre-tokenizer
      gives a probe string around it, run-length encoded by code point (about 2,000 runs).

Strings are generated with the fixed seed below (documented, so the file is reproducible): English
sentences, code, CJK (inside and outside the regex's CJK range), emoji (ZWJ, skin tones, flags),
digits of many scripts, whitespace runs (Unicode spaces, CR/LF, tabs), added-token strings (whole,
adjacent, partial, inside words), random bytes read lossily, random code points of every plane,
other scripts with combining marks, and mixed documents.

Needs: Python 3 with PyPI `tokenizers` (0.23.3 was used) and the V4 tokenizer.json from
scripts/fetch_tokenizer.sh. Run:  /opt/oracle/bin/python tools/make_tokenizer_goldens.py
The embedded nano model's tokenizer (same pre-tokenizer, 8k vocab) gets a quarter of the cases:
  /opt/oracle/bin/python tools/make_tokenizer_goldens.py --name nano \
      --tokenizer models/nano/tokenizer.json --scale 0.25 --skip-classes
and, to cover other byte-level BPEs, the same vocab with a Llama-3-style split regex instead
(--llama3-split; tests/tokenizer builds the same variant from models/nano/tokenizer.json):
  /opt/oracle/bin/python tools/make_tokenizer_goldens.py --name nano_llama3split \
      --tokenizer models/nano/tokenizer.json --llama3-split --scale 0.15 --skip-classes
"""
import argparse
import hashlib
import json
import os
import random
import sys

import tokenizers
from tokenizers import Tokenizer

SEED = 20261125
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

WORDS = ("the of and to in is you that it he was for on are as with his they I at be this have "
         "from or one had by word but not what all were we when your can said there use an each "
         "which she do how their if will up other about out many then them these so some her "
         "would make like him into time has look two more write go see number no way could people "
         "my than first water been call who oil its now find long down day did get come made may "
         "part model token inference engine DeepSeek GPU memory kernel attention expert latency "
         "throughput tensor quantized weights don't can't it's we're they've I'm you'll she'd "
         "naïve café résumé coöperate façade jalapeño Zürich São Paulo").split()

CODE_TEMPLATES = [
    "def {f}({a}, {b}):\n    return {a} {op} {b}  # {w}\n",
    "for (int {a} = 0; {a} < {n}; ++{a}) {{\n\t{f}({a});\n}}\n",
    "const {f} = ({a}) => {{ return {a}.map(x => x {op} {n}); }};\n",
    "if ({a} {cmp} {b}) {{\n    printf(\"%d\\n\", {a});\n}} else {{\n    {b}++;\n}}\n",
    "class {F}:\n    def __init__(self, {a}={n}):\n        self.{a} = {a}\n\n",
    "#include <{w}.h>\nstatic int {f}(const char* {a}) {{ return {a}[{n}] == '\\0'; }}\n",
    "SELECT {a}, {b} FROM {w} WHERE {a} {cmp} {n} ORDER BY {b} DESC;\n",
    "{{\"{a}\": {n}, \"{b}\": [\"{w}\", null, true, {n}.5e-3]}}\n",
    "<div class=\"{w}\"><a href=\"https://example.com/{a}?{b}={n}&x=%20\">{w}</a></div>\r\n",
    "    {a}_{b} := {f}({n}) // {w}\n",
    "$ {w} --{a}={n} | grep -E '^[a-z]+$' > /tmp/{b}.log 2>&1\n",
    "fn {f}<'a>({a}: &'a [u8]) -> Option<&'a str> {{ std::str::from_utf8({a}).ok() }}\n",
]


def identifier(r):
    return "".join(r.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(r.randint(1, 10))) + r.choice(["", "1", "2", "_x", "Id"])


def english(r):
    s = []
    for _ in range(r.randint(1, 4)):
        ws = [r.choice(WORDS) for _ in range(r.randint(3, 18))]
        ws[0] = ws[0].capitalize()
        sentence = " ".join(ws)
        if r.random() < 0.3:
            i = r.randint(0, len(sentence))
            sentence = sentence[:i] + r.choice([",", ";", " -", " (see", "'s", ":", " \"quoted\""]) + sentence[i:]
        s.append(sentence + r.choice([".", "!", "?", "...", ".\n", ".\n\n", "?!"]))
    return r.choice([" ", "  ", "\n"]).join(s)


def code(r):
    out = []
    for _ in range(r.randint(1, 3)):
        t = r.choice(CODE_TEMPLATES)
        out.append(t.format(f=identifier(r), F=identifier(r).capitalize(), a=identifier(r), b=identifier(r),
                            w=r.choice(WORDS), n=r.randint(0, 100000), op=r.choice("+-*/%^&|"),
                            cmp=r.choice(["<", "<=", "==", "!=", ">=", ">"])))
    s = "".join(out)
    if r.random() < 0.3:
        s = s.replace("    ", "\t")
    return s


def cjk(r):
    pools = [(0x4E00, 0x9FA5), (0x9FA6, 0x9FFF), (0x3400, 0x4DBF), (0x3040, 0x309F), (0x30A0, 0x30FF),
             (0xAC00, 0xD7A3), (0x3000, 0x303F), (0xFF01, 0xFF5E), (0x20000, 0x2A6DF), (0x31F0, 0x31FF)]
    s = []
    for _ in range(r.randint(1, 12)):
        a, b = r.choice(pools[:3]) if r.random() < 0.6 else r.choice(pools)
        s.append("".join(chr(r.randint(a, b)) for _ in range(r.randint(1, 8))))
        if r.random() < 0.3:
            s.append(r.choice([" ", "，", "。", "、", "！", "？", "\n", " DeepSeek ", "2026年", "「", "」", "(a)"]))
    return "".join(s)


EMOJI = ["😀", "😂", "🦀", "🚀", "❤️", "👍", "👍🏽", "👨‍👩‍👧", "👩🏾‍💻", "🏳️‍🌈", "🇯🇵", "🇺🇸", "1️⃣", "#️⃣",
         "✨", "🔥", "🤖", "🧑‍🚀", "☕", "⚡", "🫠", "🪿", "👁️‍🗨️", "©️", "™", "🙏🏻", "💯", "🎉"]


def emoji(r):
    s = []
    for _ in range(r.randint(1, 10)):
        s.append(r.choice(EMOJI) if r.random() < 0.7 else chr(r.randint(0x1F300, 0x1FAFF)))
        if r.random() < 0.4:
            s.append(r.choice([" ", "!", " ok ", "\n", "", "  ", "x", "好"]))
    return "".join(s)


DIGIT_SCRIPTS = [0x30, 0x660, 0x6F0, 0x966, 0x9E6, 0xE50, 0xFF10, 0x1D7CE, 0x1040, 0x17E0]


def digits(r):
    s = []
    for _ in range(r.randint(1, 6)):
        kind = r.random()
        if kind < 0.5:
            s.append(str(r.randint(0, 10 ** r.randint(1, 20))))
        elif kind < 0.7:
            base = r.choice(DIGIT_SCRIPTS)
            s.append("".join(chr(base + r.randint(0, 9)) for _ in range(r.randint(1, 9))))
        elif kind < 0.85:
            s.append(r.choice(["3.14159", "-2.5e-10", "1,234,567", "0x1F", "2026-04-24", "12:30:59",
                               "½", "²³", "Ⅻ", "⅔", "①②③", "٣٫١٤", "१२३", "v1.2.3", "1e9", "$19.99", "50%"]))
        else:
            s.append(r.choice(WORDS) + str(r.randint(0, 999)))
        s.append(r.choice([" ", "", "\n", ", ", "+", "x", " = "]))
    return "".join(s)


SPACES = [" ", " ", " ", "\t", "\n", "\r\n", "\r", "\v", "\f", "\u00a0", "\u2000", "\u2003", "\u2009",
          "\u200a", "\u3000", "\u0085", "\u2028", "\u2029", "\u202f", "\u205f", "\u1680", "\u180e",
          "\u200b", "\ufeff", "\u001c", "\u001f"]


def whitespace(r):
    s = []
    for _ in range(r.randint(1, 8)):
        s.append("".join(r.choice(SPACES) for _ in range(r.randint(1, 7))))
        s.append(r.choice(["a", "word", "x1", "!", "", "中文", "3", ".", "é", "Ω", "\"", "#"]))
    return "".join(s)


def added_tokens_text(r, added):
    s = []
    for _ in range(r.randint(1, 8)):
        k = r.random()
        if k < 0.5:
            s.append(r.choice(added))
        elif k < 0.65:
            t = r.choice(added)
            s.append(t[: r.randint(1, max(1, len(t) - 1))])  # a partial token is plain text
        elif k < 0.75:
            s.append(r.choice(["<｜", "｜>", "<|", "|>", "<think", "think>", "</", "▁", "｜"]))
        else:
            s.append(english(r)[: r.randint(0, 40)])
    return "".join(s)


def random_bytes(r):
    n = r.randint(1, 64)
    if r.random() < 0.5:
        return bytes(r.randint(0, 255) for _ in range(n))
    # Mostly valid UTF-8 with a few bytes flipped or cut: the interesting invalid cases.
    text = r.choice([english, cjk, emoji])(r).encode("utf-8")
    b = bytearray(text)
    for _ in range(r.randint(1, 3)):
        if b:
            b[r.randrange(len(b))] = r.randint(0x80, 0xFF)
    if r.random() < 0.5 and b:
        b = b[: r.randrange(len(b) + 1)]
    return bytes(b)


def random_code_point(r):
    while True:
        plane = r.random()
        if plane < 0.4:
            cp = r.randint(0x80, 0xFFFF)
        elif plane < 0.6:
            cp = r.randint(0x10000, 0x3FFFF)
        elif plane < 0.7:
            cp = r.randint(0x40000, 0x10FFFF)
        else:
            cp = r.randint(0, 0x7F)
        if not 0xD800 <= cp <= 0xDFFF:
            return chr(cp)


def random_unicode(r):
    return "".join(random_code_point(r) for _ in range(r.randint(1, 24)))


SCRIPT_WORDS = ["Привет", "мир", "Ελληνικά", "λόγος", "مرحبا", "بالعالم", "שלום", "עולם", "नमस्ते", "दुनिया",
                "สวัสดี", "ชาวโลก", "Tiếng Việt", "ąčęėįšųūž", "ğüşöç", "e\u0301", "n\u0303o", "a\u0308\u0304",
                "각", "ﬁ", "ﬀ", "Ǆ", "ß", "ẞ", "İstanbul", "ǅ", "Ⅸ", "ﷺ", "ༀ", "ꦲ", "𐌰𐌱", "𝔘𝔫𝔦"]


def multilingual(r):
    return r.choice([" ", "", ", ", "\n"]).join(r.choice(SCRIPT_WORDS) for _ in range(r.randint(1, 10)))


def mixed(r, added):
    parts = [english, code, cjk, emoji, digits, whitespace, multilingual, random_unicode]
    out = []
    target = r.choice([200, 800, 3000])
    while sum(len(p) for p in out) < target:
        f = r.choice(parts)
        out.append(f(r))
        if r.random() < 0.2:
            out.append(r.choice(added))
    return "".join(out)


DOC_ROWS = [  # encoding.md §6.4
    "Hello, world! The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b  # sum\n",
    "深度求索公司创造了DeepSeek-V4模型。",
    "日本語のテキストと한국어 텍스트",
    "I ❤️ 🦀 👨‍👩‍👧!",
    "1234567 3.14159 2026-04-24 ١٢٣",
    "a  b\t\tc\n\n\nd   \n  e    ",
    "don't stop—it's 100% 'fine'... (ok?)",
    " leading space\r\nCRLF",
    "café naïve Ωmega ﬁ",
    "<｜begin▁of▁sentence｜><｜User｜>你好<｜Assistant｜><think>推理</think>答案<｜end▁of▁sentence｜>",
    "<｜begin▁of▁sentence｜>You are a helpful assistant.<｜User｜>What is 2+2?<｜Assistant｜></think>",
    "\n\n<｜DSML｜tool_calls>\n<｜DSML｜invoke name=\"get_weather\">\n<｜DSML｜parameter name=\"city\" string=\"true\">Paris</｜DSML｜parameter>\n</｜DSML｜invoke>\n</｜DSML｜tool_calls><｜end▁of▁sentence｜>",
    "<｜User｜><tool_result>{\"temperature\": 22}</tool_result><｜Assistant｜><think>",
    "I think <think> and </think> are tokens",
    "Hello! 毕老师！1 + 1 = 2 ĠÑĤÐ²ÑĬÑĢ",
    "",
]

# Llama-3's split regex: a case-insensitive contraction group, letters with one leading
# non-letter, digits by three, punctuation runs; must match kLlama3Split in
# tests/tokenizer/tokenizer_golden_test.cpp.
LLAMA3_SPLIT = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")

COUNTS = [("english", 300), ("code", 300), ("cjk", 300), ("emoji", 200), ("digits", 200),
          ("whitespace", 250), ("added_tokens", 250), ("random_bytes", 200), ("random_unicode", 200),
          ("multilingual", 200), ("mixed", 100)]


def probe(c):  # must match probe() in tests/tokenizer/pretokenizer_test.cpp
    return "a" + c + "1" + c + " " + c + "b" + c + "!" + c + "\n" + c + c + "\t" + c


def write_classes(tok, path):
    pre = tok.pre_tokenizer
    runs, prev = [], None
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        sig = ",".join(str(len(p)) for p, _ in pre.pre_tokenize_str(probe(chr(cp))))
        if sig != prev:
            runs.append((cp, sig))
            prev = sig
    with open(path, "w") as f:
        f.write(f"# HF tokenizers {tokenizers.__version__} pre-tokenizer on the V4 tokenizer.json; written by "
                "tools/make_tokenizer_goldens.py\n# <first code point, hex> <byte lengths of the pieces of "
                "probe(code point)>, holding until the next line's code point\n")
        for cp, sig in runs:
            f.write(f"{cp:X} {sig}\n")
    print(f"wrote {path}: {len(runs)} runs")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, ".cache/deepseek-v4/tokenizer.json"))
    ap.add_argument("--out", default=os.path.join(ROOT, "testdata/tokenizer"))
    ap.add_argument("--skip-classes", action="store_true", help="don't rewrite the (slow) class table")
    ap.add_argument("--name", default="v4", help="output file prefix")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies the number of cases")
    ap.add_argument("--llama3-split", action="store_true", help="replace the pre-tokenizer (see LLAMA3_SPLIT)")
    args = ap.parse_args()
    raw = open(args.tokenizer, "rb").read()
    spec = json.loads(raw)
    if args.llama3_split:
        spec["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": LLAMA3_SPLIT}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    tok = Tokenizer.from_str(json.dumps(spec))
    added = [t["content"] for t in spec["added_tokens"]]
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    r = random.Random(SEED)
    gens = {"english": english, "code": code, "cjk": cjk, "emoji": emoji, "digits": digits,
            "whitespace": whitespace, "added_tokens": lambda r: added_tokens_text(r, added),
            "random_unicode": random_unicode, "multilingual": multilingual,
            "mixed": lambda r: mixed(r, added)}
    cases = [("doc", s) for s in DOC_ROWS]
    for label, n in COUNTS:
        for _ in range(max(1, int(n * args.scale))):
            cases.append((label, random_bytes(r) if label == "random_bytes" else gens[label](r)))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{args.name}_encode_goldens.jsonl")
    n_encode = n_decode = 0
    with open(path, "w", encoding="utf-8") as f:
        meta = {"tokenizers": tokenizers.__version__, "seed": SEED,
                "tokenizer_json_sha256": hashlib.sha256(raw).hexdigest(),
                "generator": "tools/make_tokenizer_goldens.py"}
        f.write(json.dumps({"meta": meta}) + "\n")
        for label, s in cases:
            if isinstance(s, bytes):
                text = s.decode("utf-8", "replace")
                case = {"label": label, "bytes_hex": s.hex()}
            else:
                text = s
                case = {"label": label, "text": s}
            ids = tok.encode(text, add_special_tokens=False).ids
            case["ids"] = ids
            case["decoded"] = tok.decode(ids, skip_special_tokens=False)
            f.write(json.dumps(case, ensure_ascii=False) + "\n")
            n_encode += 1
        for _ in range(max(1, int(300 * args.scale))):
            n_base = tok.get_vocab_size(with_added_tokens=False)
            ids = [r.randrange(vocab_size) if r.random() < 0.8 else r.randrange(n_base, vocab_size)
                   for _ in range(r.randint(1, 12))]
            f.write(json.dumps({"label": "decode", "decode_ids": ids,
                                "decoded": tok.decode(ids, skip_special_tokens=False),
                                "decoded_skip": tok.decode(ids, skip_special_tokens=True)},
                               ensure_ascii=False) + "\n")
            n_decode += 1
    print(f"wrote {path}: {n_encode} encode cases, {n_decode} decode cases, {os.path.getsize(path)} bytes")
    if not args.skip_classes:
        write_classes(tok, os.path.join(args.out, f"{args.name}_pretokenizer_classes.txt"))


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
# Builds the nano model's corpus: the King James Bible as plain text, dumped from Debian's
# bible-kjv-text package with its `bible` program, split into a training part and a held-out
# validation part and a development part (whole chapters) that training never sees. Tokenizing and
# training are in train_tokenizer.py / train.py.
#
# Needs: Debian packages bible-kjv + bible-kjv-text (`apt-get install bible-kjv`), Python 3 only.
# Source and licence: the KJV text (1611) is in the public domain; the `bible` program is GPL-2+
# (/usr/share/doc/bible-kjv-text/copyright). Output: <out>/train.txt, <out>/dev.txt,
# <out>/validation.txt.
#
# Format (what the model learns and what `dsv4 generate` continues): one block per chapter,
#   "Genesis 1\n\n1 In the beginning God created the heaven and the earth.\n2 And the earth ...\n\n"
# Chapter i (counting from 0 over the whole Bible) goes to validation when i % 20 == 0 (the
# benchmark: perplexities in the model card), to dev when i % 20 == 10 (checkpoint selection during
# training), else to train.

import argparse
import os
import re
import subprocess
import sys

kHoldOutEvery = 20      # 1 chapter in 20 (about 5 %) each for validation and dev
kFullRange = "Ge1:1-Re22:21"


def dump_bible() -> str:
    env = dict(os.environ, COLUMNS="1000000")  # one verse per line (no wrapping)
    try:
        out = subprocess.run(["bible", kFullRange], env=env, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("error: the `bible` program is missing: apt-get install bible-kjv bible-kjv-text")
    return out.stdout


def parse_chapters(raw: str):
    """Yields (heading, [verse lines]) per chapter; checks the verse numbering as it goes."""
    chapters = []
    heading, verses = None, []
    for line in raw.splitlines():
        if not line.strip():
            continue
        m = re.match(r"^  (\d+) (.*)$", line)
        if m:
            if heading is None or int(m.group(1)) != len(verses) + 1:
                sys.exit(f"error: unexpected verse line after {heading!r}: {line[:80]!r}")
            verses.append(f"{m.group(1)} {m.group(2).strip()}")
        else:
            if heading is not None:
                chapters.append((heading, verses))
            heading, verses = line.strip(), []
    if heading is not None:
        chapters.append((heading, verses))
    return chapters


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args()
    chapters = parse_chapters(dump_bible())
    n_verses = sum(len(v) for _, v in chapters)
    # KJV: 1189 chapters, 31102 verses (a check that the dump is complete).
    if len(chapters) != 1189 or n_verses != 31102:
        sys.exit(f"error: expected 1189 chapters / 31102 verses, got {len(chapters)} / {n_verses}")
    os.makedirs(args.out, exist_ok=True)
    parts = {"train": [], "dev": [], "validation": []}
    for i, (heading, verses) in enumerate(chapters):
        block = heading + "\n\n" + "\n".join(verses) + "\n\n"
        r = i % kHoldOutEvery
        parts["validation" if r == 0 else "dev" if r == kHoldOutEvery // 2 else "train"].append(block)
    for name, blocks in parts.items():
        text = "".join(blocks)
        with open(os.path.join(args.out, name + ".txt"), "w", encoding="utf-8") as f:
            f.write(text)
        print(f"{name}: {len(blocks)} chapters, {len(text.encode())} bytes")


if __name__ == "__main__":
    main()

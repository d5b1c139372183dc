#!/usr/bin/env python3
# Trains the nano model's tokenizer: byte-level BPE (HF `tokenizers`) on the training corpus,
# with the real DeepSeek-V4 tokenizer.json's normalizer / pre-tokenizer / post-processor / decoder
# copied verbatim, so one C++ tokenizer serves both. The corpus comes from prepare_corpus.py.
#
# Needs: Python 3 with `tokenizers` (PyPI), and the V4 tokenizer.json (scripts/fetch_tokenizer.sh
# puts it in .cache/deepseek-v4/). Ids: 0 BOS, 1 EOS, 2 pad (as in V4), then the BPE vocabulary
# (all 256 byte symbols first), then the V4 added tokens that the prompt encoder and the
# completion parser use (encoding.md §2), with V4's flags. Total size kVocab.

import argparse
import json

from tokenizers import Tokenizer, pre_tokenizers, trainers

kVocab = 8192
kHeadSpecials = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜▁pad▁｜>"]  # ids 0, 1, 2
# encoding.md §2, the rows marked "yes" / "task ...": the strings the V4 encoder emits or parses.
kTailAdded = [
    "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>", "｜DSML｜", "<｜latest_reminder｜>",
    "<｜action｜>", "<｜query｜>", "<｜authority｜>", "<｜domain｜>", "<｜title｜>",
    "<｜extracted_url｜>", "<｜read_url｜>",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train-text", required=True)
    ap.add_argument("--v4-tokenizer", required=True, help="the real V4 tokenizer.json")
    ap.add_argument("--out", required=True, help="output tokenizer.json")
    args = ap.parse_args()

    v4 = json.load(open(args.v4_tokenizer, encoding="utf-8"))
    v4_added = {a["content"]: a for a in v4["added_tokens"]}
    for s in kHeadSpecials + kTailAdded:
        if s not in v4_added:
            raise SystemExit(f"error: {s!r} is not an added token of {args.v4_tokenizer}")

    # Train with V4's own pre-tokenizer (loaded from its JSON) so merges never cross its splits.
    skeleton = {k: v4[k] for k in ("version", "truncation", "padding", "normalizer", "pre_tokenizer",
                                   "post_processor", "decoder")}
    skeleton["added_tokens"] = []
    skeleton["model"] = {"type": "BPE", "dropout": None, "unk_token": None,
                         "continuing_subword_prefix": None, "end_of_word_suffix": None,
                         "fuse_unk": False, "byte_fallback": False, "vocab": {}, "merges": []}
    tok = Tokenizer.from_str(json.dumps(skeleton))
    trainer = trainers.BpeTrainer(
        vocab_size=kVocab - len(kTailAdded), special_tokens=kHeadSpecials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train([args.train_text], trainer)

    out = json.loads(tok.to_str())
    for k in ("normalizer", "pre_tokenizer", "post_processor", "decoder"):
        out[k] = v4[k]  # verbatim (training may have normalised the JSON spelling)
    n_model = len(out["model"]["vocab"])
    added = []
    for s in kHeadSpecials:
        a = dict(v4_added[s]); a["id"] = out["model"]["vocab"][s]; added.append(a)
    for i, s in enumerate(kTailAdded):
        a = dict(v4_added[s]); a["id"] = n_model + i; added.append(a)
    out["added_tokens"] = added
    if [a["id"] for a in added[:3]] != [0, 1, 2] or n_model + len(kTailAdded) != kVocab:
        raise SystemExit(f"error: unexpected id layout: {[a['id'] for a in added[:3]]}, {n_model}")
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=None, separators=(",", ":"))

    # Self-check: loads, round-trips the corpus head, matches added tokens.
    t2 = Tokenizer.from_file(args.out)
    sample = open(args.train_text, encoding="utf-8").read(20000)
    ids = t2.encode(sample, add_special_tokens=False).ids
    assert t2.decode(ids, skip_special_tokens=False) == sample, "round trip failed"
    probe = "<｜begin▁of▁sentence｜><｜User｜>Hi<｜Assistant｜></think>x<｜end▁of▁sentence｜>"
    pids = t2.encode(probe, add_special_tokens=False).ids
    print("vocab", t2.get_vocab_size(), "bytes/token on sample", round(len(sample.encode()) / len(ids), 3),
          "probe ids", pids)


if __name__ == "__main__":
    main()

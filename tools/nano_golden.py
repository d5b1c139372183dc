#!/usr/bin/env python3
# Golden logits of the trained nano model (models/nano) for tests/cpu/test_parity_nano.cpp: HF transformers'
# DeepseekV4ForCausalLM on the dequantised shipped FP8/MXFP4 weights, whole prefill of BOS + the first 639 tokens
# of models/nano/validation.txt, in exact FP32 and with the §12 fake-quant points (tools/oracle/official_numerics).
# The random tiny fixtures (tools/hf_golden.py) stay the coverage tests; this is the trained-weights counterpart.
#
# Needs: Python >= 3.10, torch (>= 2.4), transformers with DeepseekV4ForCausalLM (tested: 5.24), tokenizers, numpy.
# No network; CPU; deterministic (no random numbers anywhere). ~3 min on 2 shared cores (+2 min with --verify).
#   /opt/oracle/bin/python tools/nano_golden.py                 # writes testdata/parity_nano
# Output format and measured numbers: testdata/parity_nano/README.md.
import argparse
import hashlib
import json
import os
import struct
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "nano"))
from oracle import export as oracle_export, official_numerics, reference  # noqa: E402
import common  # noqa: E402  (tools/nano: upstream config -> DeepseekV4Config)
import export as nano_export  # noqa: E402  (tools/nano: load_official, the dequantiser eval_ppl.py uses)

TOP_K = 64          # logits stored per position (descending), with their ids
FULL_STRIDE = 40    # full [V] rows at every 40th position and the last
# Files whose contents the goldens depend on; their sha256 go to meta.json so the C++ test detects a stale golden.
HASHED = ("config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
          "model-00002-of-00002.safetensors", "tokenizer.json", "validation.txt")


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def merged_checkpoint(model_dir: str, tmp: str) -> str:
    """tools/oracle's reader takes one model.safetensors: concatenate the shards (headers merged, data
    offsets shifted) next to a copy of config.json in tmp; returns tmp."""
    header, blobs, offset = {}, [], 0
    for name in sorted(os.listdir(model_dir)):
        if not (name.startswith("model") and name.endswith(".safetensors")):
            continue
        raw = open(os.path.join(model_dir, name), "rb").read()
        n = struct.unpack("<Q", raw[:8])[0]
        h = json.loads(raw[8:8 + n])
        h.pop("__metadata__", None)
        for k, v in h.items():
            a, b = v["data_offsets"]
            header[k] = dict(v, data_offsets=[offset + a, offset + b])
        blobs.append(raw[8 + n:])
        offset += len(raw) - 8 - n
    hjson = json.dumps(header).encode()
    with open(os.path.join(tmp, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hjson)) + hjson)
        for b in blobs:
            f.write(b)
    with open(os.path.join(model_dir, "config.json")) as src, open(os.path.join(tmp, "config.json"), "w") as dst:
        dst.write(src.read())
    return tmp


def build_model(model_dir: str, tmp: str):
    """Dequantise the shipped FP8/MXFP4 checkpoint with tools/oracle (reference.load_checkpoint, formats.py), map
    official -> HF names (oracle export.hf_state_dict; MTP dropped: HF has none) and load HF in FP32. Cross-check:
    the nano tools' own dequantiser (export.load_official, used by eval_ppl.py) must give bit-identical weights."""
    from transformers import DeepseekV4ForCausalLM
    cfg, w = reference.load_checkpoint(merged_checkpoint(model_dir, tmp))
    sd = oracle_export.hf_state_dict(w, cfg)
    other = nano_export.load_official(model_dir)
    for k, v in sd.items():
        if not torch.equal(v, torch.from_numpy(other[k])):
            raise SystemExit(f"error: the two dequantisers disagree on {k}")
    if set(sd) != {k for k in other if not k.startswith("mtp.")}:
        raise SystemExit(f"error: tensor sets differ: {sorted(set(sd) ^ set(other))[:5]}")
    model = DeepseekV4ForCausalLM(common.hf_config(cfg)).float().eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "inv_freq" not in m]
    if missing or unexpected:
        raise SystemExit(f"error: weights do not match the model: missing {missing[:5]} unexpected {unexpected[:5]}")
    return model, tmp


@torch.no_grad()
def logits_whole(model, tokens):
    return model(input_ids=torch.tensor([tokens]), use_cache=False).logits[0].float()


def summary(name, x, ref=None):
    top2 = x.topk(2, dim=-1).values
    gap = (top2[:, 0] - top2[:, 1]) / x.abs().max()
    out = {"max_abs_logit": x.abs().max().item(), "min_top1_top2_gap_rel": gap.min().item(),
           "positions_gap_rel_below_1e-2": int((gap < 1e-2).sum().item())}
    if ref is not None:
        d = (x - ref).abs()
        out["vs_exact_max_abs_rel"] = (d.max() / ref.abs().max()).item()
        out["vs_exact_argmax_agree"] = (x.argmax(-1) == ref.argmax(-1)).float().mean().item()
    print(f"  {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in out.items()), flush=True)
    return out


def criteria(name, x, gold):
    """The C++ test's measures over all V: max|Δ|/max|gold|, argmax agreement, first position whose row error
    exceeds 1e-4·max|gold|, first argmax flip."""
    row = (x - gold).abs().amax(-1) / gold.abs().max()
    same = x.argmax(-1) == gold.argmax(-1)
    over = (row > 1e-4).nonzero()
    out = {"max_abs_rel": row.max().item(), "argmax_agree": same.float().mean().item(),
           "worst_pos": int(row.argmax().item()), "first_row_over_1e-4": int(over[0].item()) if len(over) else -1,
           "first_flip": int((~same).nonzero()[0].item()) if (~same).any() else -1,
           "rows_within_1e-2": (row <= 1e-2).float().mean().item()}
    print(f"  {name}: " + ", ".join(f"{k} {v:.4g}" for k, v in out.items()), flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "nano"))
    ap.add_argument("--out", default=os.path.join(ROOT, "testdata", "parity_nano"))
    ap.add_argument("--T", type=int, default=640)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verify", action="store_true",
                    help="also run tools/oracle/reference.py (independent implementation of architecture.md) in both "
                         "modes and compare it with the HF logits under the C++ test's criteria")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import tokenizers
    import transformers
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(a.model, "tokenizer.json"))
    text = open(os.path.join(a.model, "validation.txt"), encoding="utf-8").read()
    bos = json.load(open(os.path.join(a.model, "config.json")))["bos_token_id"]
    tokens = [bos] + tok.encode(text, add_special_tokens=False).ids[: a.T - 1]
    assert len(tokens) == a.T
    tmp = tempfile.TemporaryDirectory()
    model, ckpt = build_model(a.model, tmp.name)

    print(f"nano: T={a.T}, exact", flush=True)
    exact = logits_whole(model, tokens)
    stats = {"exact": summary("exact", exact)}
    official_numerics.patch_official(model)
    print("nano: official", flush=True)
    official = logits_whole(model, tokens)
    stats["official"] = summary("official", official, exact)

    if a.verify:
        for mode, gold in (("exact", exact), ("official", official)):
            ref = reference.Reference(ckpt, official=(mode == "official")).forward(tokens)
            stats[f"reference_{mode}_vs_hf"] = criteria(f"reference.py {mode} vs HF {mode}", ref, gold)

    T = a.T
    full_positions = list(range(0, T, FULL_STRIDE))
    if full_positions[-1] != T - 1:
        full_positions.append(T - 1)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "tokens.json"), "w") as f:
        json.dump(tokens, f)
    with open(os.path.join(a.out, "full_positions.json"), "w") as f:
        json.dump(full_positions, f)
    for mode, x in (("exact", exact), ("official", official)):
        top = x.topk(TOP_K, dim=-1)   # sorted descending
        np.save(os.path.join(a.out, f"golden_{mode}_top.npy"), top.values.numpy().astype(np.float32))
        # ids < 8192 are exact in float32 (the .npy reader of the C++ tests is float32-only)
        np.save(os.path.join(a.out, f"golden_{mode}_top_ids.npy"), top.indices.numpy().astype(np.float32))
        np.save(os.path.join(a.out, f"golden_{mode}_full.npy"), x[full_positions].numpy().astype(np.float32))
    meta = {"T": T, "top_k": TOP_K, "full_stride": FULL_STRIDE, "vocab_size": int(exact.shape[1]),
            "transformers": transformers.__version__, "torch": torch.__version__,
            "tokenizers": tokenizers.__version__, "device": "cpu",
            "files": {name: sha256(os.path.join(a.model, name)) for name in HASHED},
            "stats": stats,
            "notes": "written by tools/nano_golden.py; deterministic (no seed); HF DeepseekV4ForCausalLM FP32 whole "
                     "prefill (use_cache=False) on the dequantised models/nano weights; tokens = BOS + the first T-1 "
                     "tokens of validation.txt; official = + tools/oracle/official_numerics.patch_official (§12)"}
    with open(os.path.join(a.out, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)
    print(f"wrote {a.out}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Golden logits for the CPU/CUDA parity tests: random tiny DeepSeek-V4 checkpoints in the official layout and
# HF transformers' FP32 logits on them (exact), plus HF patched with the §12 fake-quant points (official).
#
# Needs: Python >= 3.10, torch (>= 2.4, float8 dtypes), transformers with DeepseekV4ForCausalLM (tested: 5.24),
# numpy. No network. Runs on CPU (default) or GPU (--device cuda); everything is FP32.
#   /opt/oracle/bin/python tools/hf_golden.py --out testdata/parity            # regenerate all fixtures
#   /opt/oracle/bin/python tools/hf_golden.py --fixtures flash --check-chunks  # one config, extra HF self-checks
# Output format: testdata/parity/README.md. Model facts: docs architecture.md §1, §11, §12, §15.
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle import export, official_numerics  # noqa: E402

# Two schedules (architecture.md §1.2 / §15.1). Together they cover every attention type × routing type:
#   flash: L0 sliding+hash, L1 sliding+score, L2 CSA+score, L3 HCA+score   (Flash starts with sliding layers)
#   pro:   L0 HCA+hash,     L1 CSA+hash                                     (Pro starts with HCA layers)
# The trailing compress_ratios entry is the MTP block (ratio 0). index_topk 16 → the indexer is selective
# beyond 64 tokens; ratios 4/128 and window 128 as in the real models.
# Sizes. The CUDA kernels need what every real checkpoint has: hidden, q_lora_rank, moe_intermediate_size and
# o_groups·o_lora_rank multiples of 128 (index_head_dim and head_dim are 128). The tracked tree must stay small
# (testdata/parity ≈ 18 MB for all four fixtures), and at moe_intermediate 128 every routed expert of one block costs
# 3·128·D values, so: hidden 128 (at 256 the four models alone are > 24 MB with 4 experts), vocab 128 (each golden
# is T·V·4 bytes, 12 of them), 4 routed experts top-2 (still a selection: 6 possible sets), pro with the two layers
# flash lacks. o_lora_rank 128 makes o_groups·o_lora_rank = 256 ≠ hidden: wo_b is then the one FP8 linear whose
# quantised input spans two 1×128 activation blocks / two 128-wide weight tiles (besides wo_a, K = 256 per group,
# all other K are 128), and its input width differs from its output width. index_n_heads 8, not 4: with 4 heads
# ~1/16 of the indexer scores are exactly 0 (every head's ReLU(q·k) = 0), which put exact ties at the top-k boundary
# at ~20 positions — an ill-defined selection (with 8 heads some seeds still have them; try_seed rejects those).
COMMON = dict(vocab_size=128, hidden_size=128, head_dim=128, q_lora_rank=128, o_groups=2, o_lora_rank=128,
              index_n_heads=8, index_topk=16, n_routed_experts=4, moe_intermediate_size=128)
FIXTURES = {
    "flash": dict(COMMON, num_attention_heads=4, compress_ratios=[0, 0, 4, 128, 0], num_hash_layers=1,
                  num_experts_per_tok=2, routed_scaling_factor=1.5, seed=4112),
    "pro": dict(COMMON, num_attention_heads=4, compress_ratios=[128, 4, 0], num_hash_layers=2,
                num_experts_per_tok=2, routed_scaling_factor=2.5, seed=4104),
}


def build_hf(cfg: dict, effective: dict, device: str):
    from transformers import DeepseekV4Config, DeepseekV4ForCausalLM
    hf_cfg = {k: v for k, v in cfg.items() if k not in ("quantization_config", "expert_dtype")}
    config = DeepseekV4Config.from_dict(hf_cfg)
    config._attn_implementation = "eager"
    model = DeepseekV4ForCausalLM(config).to(torch.float32)
    sd = export.hf_state_dict(effective, cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
    return model.to(device).eval()


@torch.no_grad()
def logits_whole(model, ids):
    return model(input_ids=ids, use_cache=False).logits[0].float().cpu()


@torch.no_grad()
def logits_chunked(model, ids, chunks):
    """Prefill in chunks with HF's cache; chunks is a list of lengths (the last ones may be 1 = decode)."""
    from transformers import DynamicCache
    cache = DynamicCache(config=model.config)
    out, pos = [], 0
    for n in chunks:
        out.append(model(input_ids=ids[:, pos:pos + n], cache=cache, use_cache=True).logits[0].float().cpu())
        pos += n
    assert pos == ids.shape[1]
    return torch.cat(out, 0)


@torch.no_grad()
def margins(model, ids):
    """Decision margins of a fixture, both relative to the largest magnitude involved:
    top1-top2 logit gap / max|logit| (identical argmax under a max|Δ| ≤ 1e-4·max|logit| budget needs > 2e-4), and
    the gap between the K_top-th and (K_top+1)-th indexer score / max|score| over every CSA layer and query with more
    than K_top visible entries (an FP32-noise-sized gap would make the selected set, hence the logits, ill-defined)."""
    scores = []
    for layer in model.model.layers:
        comp = layer.self_attn.compressor
        if comp is not None and hasattr(comp, "indexer"):
            scorer = comp.indexer.scorer
            scorer.register_forward_hook(lambda m, a, out: scores.append(out[0].float().cpu()))
    logits = logits_whole(model, ids)
    for layer in model.model.layers:
        comp = layer.self_attn.compressor
        if comp is not None and hasattr(comp, "indexer"):
            comp.indexer.scorer._forward_hooks.clear()
    top2 = logits.topk(2, dim=-1).values
    logit_gap = ((top2[:, 0] - top2[:, 1]).min() / logits.abs().max()).item()
    k = model.config.index_topk
    m = model.config.compress_rates["compressed_sparse_attention"]
    index_gap = float("inf")
    for s in scores:
        for t in range(s.shape[0]):
            n = (t + 1) // m
            if n > k:
                v = s[t, :n].sort(descending=True).values
                index_gap = min(index_gap, ((v[k - 1] - v[k]) / v.abs().max()).item())
    return logits, logit_gap, index_gap


def verify(d):
    """Independent check of one fixture: architecture.md re-implemented (oracle/reference.py, reading the
    checkpoint files with its own dequantiser) vs the HF goldens."""
    from oracle.reference import Reference
    tokens = json.load(open(os.path.join(d, "tokens.json")))
    gold = {n: torch.from_numpy(np.load(os.path.join(d, n + ".npy")))
            for n in ("golden_exact", "golden_exact_decode", "golden_official")}
    ref = {"exact": Reference(os.path.join(d, "model")).forward(tokens),
           "official": Reference(os.path.join(d, "model"), official=True).forward(tokens)}
    for mode, name in (("exact", "golden_exact"), ("exact", "golden_exact_decode"), ("official", "golden_official")):
        a, b = ref[mode], gold[name]
        row = (a - b).abs().amax(-1) / b.abs().max()
        print(f"{os.path.basename(d)}: reference {mode} vs {name}: max|Δ|/max|logit| {row.max():.2e}, "
              f"rows ≤ 1e-4: {(row <= 1e-4).float().mean() * 100:.1f}%, rows ≤ 1e-2: {(row <= 1e-2).float().mean() * 100:.1f}%, "
              f"argmax agree {(a.argmax(-1) == b.argmax(-1)).float().mean() * 100:.2f}%", flush=True)


def chunk_plan(T, size):
    return [size] * (T // size) + ([T % size] if T % size else [])


def stats(name, x, ref=None):
    top2 = x.topk(2, dim=-1).values
    msg = (f"  {name}: max|logit| {x.abs().max():.4f}, std {x.std():.4f}, distinct argmax {x.argmax(-1).unique().numel()}"
           f"/{x.shape[-1]}, min top1-top2 gap {(top2[:, 0] - top2[:, 1]).min():.2e}")
    if ref is not None:
        d = (x - ref).abs().max().item()
        agree = (x.argmax(-1) == ref.argmax(-1)).float().mean().item()
        msg += f"; vs exact: max|Δ| {d:.3e} (rel {d / ref.abs().max().item():.2e}), argmax agree {agree * 100:.2f}%"
    print(msg, flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "testdata", "parity"))
    ap.add_argument("--fixtures", default=",".join(FIXTURES))
    ap.add_argument("--max-tries", type=int, default=20, help="seeds tried per fixture (see try_seed)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--T", type=int, default=640)
    ap.add_argument("--prefill-len", type=int, default=385, help="P: prefill length before token-by-token decode")
    ap.add_argument("--check-chunks", action="store_true",
                    help="also compare HF chunked prefill (7, 128, 129, 300) to whole")
    ap.add_argument("--verify", action="store_true",
                    help="don't generate: compare the written goldens with tools/oracle/reference.py, an independent "
                         "implementation of architecture.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.verify:
        for fx in args.fixtures.split(","):
            for variant in ("bf16", "quant"):
                verify(os.path.join(args.out, f"{fx}_{variant}"))
        return

    for fx in args.fixtures.split(","):
        spec = FIXTURES[fx]
        for attempt in range(args.max_tries):
            seed = spec["seed"] + attempt
            chosen = try_seed(spec, seed, args)
            if chosen is not None:
                break
            print(f"{fx}: seed {seed} rejected (margins too small), trying the next one", flush=True)
        else:
            raise SystemExit(f"{fx}: no seed within {args.max_tries} tries has safe margins")
        master, tokens, models = chosen
        ids = torch.tensor([tokens], device=args.device)
        for variant, quantised in (("bf16", False), ("quant", True)):
            write_fixture(os.path.join(args.out, f"{fx}_{variant}"), spec, seed, master, tokens, ids, quantised,
                          models[variant], args)


# Acceptance thresholds for a seed (see margins()). Two FP32 implementations of the same model differ by ~1e-6
# relative (HF's own whole vs chunked vs decode logits: ≤ 1.1e-6 of max|logit|, see README), so an argmax or an
# indexer top-k set is only well defined when its gap is well above that: we ask for 20× (logits) and 10× (indexer
# scores, which see fewer layers of accumulated noise). A seed below either is a tie-like fixture, not a test.
LOGIT_GAP_MIN = 2e-5
INDEX_GAP_MIN = 1e-5


def try_seed(spec, seed, args):
    gen = torch.Generator().manual_seed(seed)
    master = export.random_master_weights(export.official_config(spec, quantised=False), gen)
    # token 0 is BOS; the rest uniform over the vocab
    tokens = [0] + torch.randint(0, spec["vocab_size"], (args.T - 1,), generator=gen).tolist()
    ids = torch.tensor([tokens], device=args.device)
    models = {}
    for variant, quantised in (("bf16", False), ("quant", True)):
        cfg = export.official_config(spec, quantised)
        _, effective = export.checkpoint_tensors(master, quantised)
        model = build_hf(cfg, effective, args.device)
        logits, logit_gap, index_gap = margins(model, ids)
        print(f"  seed {seed} {variant}: min top1-top2 gap/max|logit| {logit_gap:.2e}, "
              f"min indexer boundary gap/max|score| {index_gap:.2e}", flush=True)
        if logit_gap < LOGIT_GAP_MIN or index_gap < INDEX_GAP_MIN:
            return None
        models[variant] = (model, logits)
    return master, tokens, models


def write_fixture(d, spec, seed, master, tokens, ids, quantised, model_and_logits, args):
    import transformers
    model, exact = model_and_logits
    cfg = export.official_config(spec, quantised)
    stored, _ = export.checkpoint_tensors(master, quantised)
    os.makedirs(os.path.join(d, "model"), exist_ok=True)
    with open(os.path.join(d, "model", "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    export.write_safetensors(os.path.join(d, "model", "model.safetensors"), stored)
    with open(os.path.join(d, "tokens.json"), "w") as f:
        json.dump(tokens, f)
    print(f"{os.path.basename(d)}: seed {seed}, {len(stored)} tensors, T={args.T}", flush=True)

    stats("exact", exact)
    T, P = args.T, args.prefill_len
    decode = logits_chunked(model, ids, [P] + [1] * (T - P))
    dd = (decode - exact).abs().max().item()
    print(f"  HF prefill({P})+decode vs whole prefill: max|Δ| {dd:.3e} (rel {dd / exact.abs().max().item():.2e}),"
          f" argmax agree {(decode.argmax(-1) == exact.argmax(-1)).float().mean().item() * 100:.2f}%", flush=True)
    if args.check_chunks:
        for size in (7, 128, 129, 300):
            c = logits_chunked(model, ids, chunk_plan(T, size))
            dc = (c - exact).abs().max().item()
            print(f"  HF chunked({size}) vs whole: max|Δ| {dc:.3e} (rel {dc / exact.abs().max().item():.2e}), argmax agree "
                  f"{(c.argmax(-1) == exact.argmax(-1)).float().mean().item() * 100:.2f}%", flush=True)
    official_numerics.patch_official(model)
    official = logits_whole(model, ids)
    stats("official", official, exact)

    np.save(os.path.join(d, "golden_exact.npy"), exact.numpy().astype(np.float32))
    np.save(os.path.join(d, "golden_exact_decode.npy"), decode.numpy().astype(np.float32))
    np.save(os.path.join(d, "golden_official.npy"), official.numpy().astype(np.float32))
    meta = {"seed": seed, "T": T, "decode_prefill_len": P,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "variant": "quantised" if quantised else "bf16", "device": args.device,
            "notes": "written by tools/hf_golden.py; logits FP32 [T, V]; golden_official = HF + the §12 fake-quant "
                     "points listed in testdata/parity/README.md"}
    with open(os.path.join(d, "meta.json"), "w") as f:
        json.dump(meta, f, indent=2)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
# Perplexity of a nano checkpoint with HF transformers (FP32 compute) — the oracle that
# `dsv4 perplexity` is checked against. Loads either the shipped official-layout folder
# (dequantised by export.load_official) or train.py's BF16 master files; the definition of the
# strided perplexity is common.strided_perplexity (llama.cpp's).
#
# Needs: torch, numpy, tokenizers, transformers >= 5.17. Example:
#   eval_ppl.py --model models/nano --text-file models/nano/validation.txt --ctx 1024
#   eval_ppl.py --master build-nano/gpu_out --text-file ... (BF16 master weights)

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import export as exporter  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", help="official-layout checkpoint folder (with tokenizer.json)")
    ap.add_argument("--master", help="folder with master-*.safetensors (BF16 weights)")
    ap.add_argument("--tokenizer", help="tokenizer.json (default: <model>/tokenizer.json)")
    ap.add_argument("--text-file", required=True)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--chunks", type=int, default=0, help="evaluate at most this many chunks")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", help="write {ppl, tokens, ctx, chunks, ...} here")
    a = ap.parse_args()
    if bool(a.model) == bool(a.master):
        ap.error("give exactly one of --model / --master")
    torch.set_num_threads(a.threads)
    from tokenizers import Tokenizer
    from transformers import DeepseekV4ForCausalLM
    import transformers

    tok = Tokenizer.from_file(a.tokenizer or os.path.join(a.model, "tokenizer.json"))
    tokens = tok.encode(open(a.text_file, encoding="utf-8").read(), add_special_tokens=False).ids
    weights = exporter.load_official(a.model) if a.model else exporter.load_master(a.master)
    cfg = common.hf_config(common.NANO_CONFIG)
    model = DeepseekV4ForCausalLM(cfg).float().eval()
    sd = {k: torch.from_numpy(v) for k, v in weights.items() if not k.startswith("mtp.")}
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "inv_freq" not in m]
    if missing or unexpected:
        sys.exit(f"error: weights do not match the model: missing {missing[:5]} unexpected {unexpected[:5]}")

    @torch.no_grad()
    def logits_fn(chunk):
        return model(input_ids=torch.tensor([chunk])).logits[0].float().numpy()

    t0 = time.time()
    ppl, n, nll = common.strided_perplexity(logits_fn, tokens, a.ctx, cfg.bos_token_id, a.chunks)
    secs = time.time() - t0
    n_chunks = min(len(tokens) // a.ctx, a.chunks or 10 ** 9)
    print(f"perplexity: {ppl:.4f}  scored tokens: {n}  chunks: {n_chunks} x {a.ctx}  "
          f"({n_chunks * a.ctx / secs:.1f} tokens/s, torch {torch.__version__}, transformers {transformers.__version__})")
    if a.json_out:
        with open(a.json_out, "w") as f:
            json.dump({"perplexity": ppl, "scored_tokens": n, "nll_sum": nll, "ctx": a.ctx,
                       "chunks": n_chunks, "text_file": os.path.basename(a.text_file),
                       "weights": "dequantised shipped checkpoint" if a.model else "bf16 master",
                       "compute": "HF transformers DeepseekV4ForCausalLM, fp32",
                       "transformers": transformers.__version__}, f, indent=2)


if __name__ == "__main__":
    main()

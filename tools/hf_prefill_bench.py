#!/usr/bin/env python3
# The peer in issue 13's prefill ratio: HF transformers' DeepseekV4ForCausalLM, eager attention, BF16,
# on the same Flash-shaped layer stack that `dsv4 bench` times (hidden 4096, 64 heads × 512, 256
# experts × 2048 top-6, Flash's first LAYERS layers: sliding, sliding, CSA, HCA, …; vocab 8192),
# random weights (speed does not depend on their values), one prompt of N random tokens. Prints the
# prefill tok/s, tok/s per layer, and the same for 1 layer less (so the embedding/head share cancels).
#
# Needs torch + transformers with DeepSeek-V4 (the GPU host has both). Usage, on the GPU host:
#   python3 tools/hf_prefill_bench.py --layers 6 --tokens 8192 [--chunk 2048]
import argparse
import time

import torch


def flash_config(layers: int):
    from transformers import DeepseekV4Config

    ratios = ([0, 0] + [4, 128] * 21)[:layers] + [0]  # §1.2 Flash schedule; the trailing MTP entry
    cfg = DeepseekV4Config(
        vocab_size=8192, hidden_size=4096, num_hidden_layers=layers, num_attention_heads=64,
        num_key_value_heads=1, head_dim=512, qk_rope_head_dim=64, q_lora_rank=1024, o_groups=8,
        o_lora_rank=1024, sliding_window=128, compress_ratios=ratios, rope_theta=10000,
        compress_rope_theta=160000,
        rope_scaling={"type": "yarn", "factor": 16, "original_max_position_embeddings": 65536,
                      "beta_fast": 32, "beta_slow": 1},
        max_position_embeddings=1048576, index_n_heads=64, index_head_dim=128, index_topk=512,
        n_routed_experts=256, n_shared_experts=1, num_experts_per_tok=6, moe_intermediate_size=2048,
        num_hash_layers=3, scoring_func="sqrtsoftplus", topk_method="noaux_tc", norm_topk_prob=True,
        routed_scaling_factor=1.5, swiglu_limit=10.0, hidden_act="silu", hc_mult=4,
        hc_sinkhorn_iters=20, hc_eps=1e-6, rms_norm_eps=1e-6, num_nextn_predict_layers=0,
        bos_token_id=0, eos_token_id=1, tie_word_embeddings=False)
    cfg._attn_implementation = "eager"
    return cfg


@torch.no_grad()
def prefill_seconds(model, ids, chunk: int) -> float:
    from transformers import DynamicCache

    def run():
        cache = DynamicCache(config=model.config)
        for p in range(0, ids.shape[1], chunk):
            model(input_ids=ids[:, p:p + chunk], cache=cache, use_cache=True, logits_to_keep=1)

    run()  # warm-up
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    run()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--chunk", type=int, default=2048, help="prefill chunk (HF cache), bounds eager memory")
    args = ap.parse_args()
    from transformers import DeepseekV4ForCausalLM

    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # build the weights in BF16 directly (FP32 would not fit)
    ids = torch.randint(2, 8192, (1, args.tokens), device="cuda")
    results = {}
    for layers in (args.layers, args.layers - 1):
        with torch.device("cuda"):
            model = DeepseekV4ForCausalLM(flash_config(layers)).eval()
        s = prefill_seconds(model, ids, args.chunk)
        results[layers] = s
        print(f"hf eager bf16: {layers} layers, {args.tokens} tokens (chunk {args.chunk}): {s:.3f} s = "
              f"{args.tokens / s:.0f} tok/s, {args.tokens / s * layers:.0f} tok/s per layer")
        del model
        torch.cuda.empty_cache()
    per_layer = results[args.layers] - results[args.layers - 1]
    print(f"hf eager bf16: one more layer costs {per_layer:.3f} s = {args.tokens / per_layer:.0f} tok/s per layer "
          f"(card: {torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
